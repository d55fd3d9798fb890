// What the operator sees of the guard that learns from outcomes (issue #19): conversion by
// country, the worst conversion and sweep ranges, automatic blocks in `top`, `stats`, `list` and
// `status`, and `unlist` lifting them (audited, level kept). Rows are written directly
// (test/helpers/guard.ts) or by a real daemon under the default policy (sweep, conversion, blocks).
// Over 350 lines because every view reads the one seeded attack (seedAttack) and its expected
// rows, which split across files would be repeated in each.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { migratedTestDatabase } from '../helpers/fixture.js';
import { dbNowMs, guardPolicy, seedCounter, seedNumberBlock, seedOutcomes } from '../helpers/guard.js';
import { hashPhone, maskPhone } from '../../src/core/phone.js';
import { GuardReader, CONVERSION_IDLE_TEXT } from '../../src/cli/guard-view.js';
import { listCommand, printList, type AutoBlockView } from '../../src/cli/commands/list.js';
import { printUnlist, unlistCommand } from '../../src/cli/commands/unlist.js';
import { printStats, statsCommand } from '../../src/cli/commands/stats.js';
import { statusCommand } from '../../src/cli/status-report.js';
import { printStatus } from '../../src/cli/status-print.js';
import { loadTopFrame } from '../../src/cli/top/model.js';
import { renderFrameText } from '../../src/cli/top/frame.js';
import { readChangeVersions } from '../../src/db/changes.js';
import { assertBuilt, postJson, startDaemon, stopAll, TEST_KEY, type DaemonProcess } from '../helpers/fixture.js';

const BIN = join(import.meta.dirname, '../..', 'bin', 'ratelimit.js');
// The daemon helpers' key: the daemon records its fingerprint, and the commands must match it.
const KEY = TEST_KEY;
const HOUR_MS = 3_600_000;
const VICTIM = '+447700900123';
const db = migratedTestDatabase({ max: 4 });

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args, '--database-url', db.url],
      { env: { PATH: process.env.PATH, HOME: process.env.HOME, PHONE_ENCRYPTION_KEY: KEY, RATELIMIT_OPERATOR: 'oncall', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

async function clear(): Promise<void> {
  await db.pool.query('TRUNCATE rate_limit_counters, phone_rate_limits, rate_limit_outcomes, rate_limit_lists, rate_limit_audit');
}

let cwd: string;
beforeAll(async () => {
  cwd = await mkdtemp(join(tmpdir(), 'ratelimit-guard-views-'));
});
afterAll(async () => {
  await rm(cwd, { recursive: true, force: true });
});
beforeEach(clear);

/** An attack on +447700900 (GB): a sweep blocked at level 2, unconverted calls, and a real US range. */
async function seedAttack(): Promise<number> {
  const now = await dbNowMs(db.pool);
  await seedCounter(db.pool, { ruleId: 'sweep:prefix:1h', key: '+447700900', calls: 10, atMs: now - 60_000, blockedUntil: now + 50 * 60_000, blockLevel: 2 });
  await seedCounter(db.pool, { ruleId: 'conversion:prefix:1h', key: '+447700900', calls: 5, atMs: now - 60_000 });
  await seedCounter(db.pool, { ruleId: 'conversion:prefix:1h', key: '+14155552', calls: 1, atMs: now - 60_000 });
  await seedCounter(db.pool, { ruleId: 'sweep:prefix:1h', key: '+14155552', calls: 3, atMs: now - 60_000 });
  await seedCounter(db.pool, { ruleId: 'conversion:country:1h', key: 'GB', calls: 40, atMs: now - 60_000 });
  // A range block that ended: kept for decay, not shown.
  await seedCounter(db.pool, { ruleId: 'sweep:prefix:1h', key: '+447700901', calls: 2, atMs: now - 60_000, blockedUntil: now - 60_000, blockLevel: 1 });
  await seedNumberBlock(db.pool, {
    hash: hashPhone(VICTIM, KEY),
    masked: maskPhone(VICTIM),
    region: 'GB',
    blockedUntil: now + 4 * 60_000,
    level: 1,
    denials: [now - 1000],
  });
  // GB: 2 of 10 converted in the last hour; US: 7 of 10 (one answered too briefly), and older ones in the day.
  await seedOutcomes(db.pool, { region: 'GB', range: '+447700900', outcome: 'verified', count: 2, agoMs: 10 * 60_000 });
  await seedOutcomes(db.pool, { region: 'GB', range: '+447700900', outcome: 'unanswered', count: 8, agoMs: 10 * 60_000 });
  await seedOutcomes(db.pool, { region: 'US', range: '+14155552', outcome: 'answered', durationMs: 42_000, count: 7, agoMs: 20 * 60_000 });
  await seedOutcomes(db.pool, { region: 'US', range: '+14155552', outcome: 'answered', durationMs: 3_000, count: 3, agoMs: 20 * 60_000 });
  await seedOutcomes(db.pool, { region: 'US', range: '+14155552', outcome: 'verified', count: 10, agoMs: 5 * HOUR_MS });
  return now;
}

describe('the guard view', () => {
  it('reads conversion by country over 1h and 24h, the worst ranges and the blocks in force', async () => {
    const now = await seedAttack();
    const g = await new GuardReader().read(db.pool, guardPolicy());
    expect(g.conversionRules).toBe(true);
    expect(g.conversionIdle).toBe(false);
    const gb = g.countries.find((c) => c.region === 'GB')!;
    expect(gb).toMatchObject({ outcomes1h: 10, converted1h: 2, rate1h: 0.2, outcomes24h: 10, converted24h: 2 });
    expect(gb.unconverted).toEqual({ ruleId: 'conversion:country:1h', used: 40, limit: 50 });
    const us = g.countries.find((c) => c.region === 'US')!;
    // Answered for 3 s is not converted (answered_at_least 10s).
    expect(us).toMatchObject({ outcomes1h: 10, converted1h: 7, outcomes24h: 20, converted24h: 17 });
    // GB is closest to its unconverted limit: first.
    expect(g.countries[0]!.region).toBe('GB');
    expect(g.ranges.slice(0, 2)).toEqual([
      { ruleId: 'conversion:prefix:1h', kind: 'unconverted', range: '+447700900•••', used: 5, limit: 5, shadow: false, blocked: null },
      {
        ruleId: 'sweep:prefix:1h',
        kind: 'distinct',
        range: '+447700900•••',
        used: 10,
        limit: 10,
        shadow: false,
        blocked: { level: 2, until: now + 50 * 60_000 },
      },
    ]);
    expect(g.blocks).toEqual([
      {
        targetType: 'prefix',
        target: '+447700900•••',
        hash: null,
        rule: 'sweep:prefix:1h',
        reason: 'sweep_rate_limit_exceeded',
        level: 2,
        until: now + 50 * 60_000,
      },
      {
        targetType: 'number',
        target: '+447700900•••',
        hash: hashPhone(VICTIM, KEY),
        rule: 'number:block_after',
        reason: 'number_blocked',
        level: 1,
        until: now + 4 * 60_000,
      },
    ]);
    expect(g.blocksTotal).toEqual({ ranges: 1, numbers: 1 });
    // Nothing printed anywhere narrows a number below its 1,000-number range.
    expect(JSON.stringify(g)).not.toContain(VICTIM);
  });

  it('says conversion rules are idle without an outcome in 7 days, and not without conversion rules', async () => {
    await seedOutcomes(db.pool, { region: 'GB', range: '+447700900', outcome: 'verified', count: 1, agoMs: 9 * 24 * HOUR_MS, recordedAgoMs: 8 * 24 * HOUR_MS });
    const idle = await new GuardReader().read(db.pool, guardPolicy());
    expect(idle).toMatchObject({ conversionRules: true, conversionIdle: true, lastOutcomeAt: null });
    const none = await new GuardReader().read(db.pool, guardPolicy({ conversion: undefined }));
    expect(none).toMatchObject({ conversionRules: false, conversionIdle: false });
    // Decided 8 days ago but reported yesterday (a spool replayed late): engaged.
    await seedOutcomes(db.pool, { region: 'GB', range: '+447700900', outcome: 'failed', count: 1, agoMs: 6 * 24 * HOUR_MS, recordedAgoMs: 24 * HOUR_MS });
    expect(await new GuardReader().read(db.pool, guardPolicy())).toMatchObject({ conversionIdle: false });
  });
});

describe('top', () => {
  it('puts the blocks and the worst ranges on the first screen at 80x24, and the guard view fits too', async () => {
    await seedAttack();
    const frame = await loadTopFrame(db.pool, guardPolicy(), 'denials');
    for (const view of ['traffic', 'guard'] as const) {
      const text = renderFrameText(frame, { columns: 80, rows: 24, intervalMs: 2_000, view });
      const lines = text.split('\n');
      expect(lines.length).toBeLessThanOrEqual(24);
      for (const l of lines) expect([...l].length).toBeLessThanOrEqual(80);
      expect(text).not.toContain(VICTIM);
      if (view === 'traffic') {
        const auto = lines.findIndex((l) => l.startsWith('blocked'));
        expect(lines[auto]).toMatch(/2 in force · sweep \+447700900••• L2 (49|50)m · number \+447700900••• L1 [34]m/);
        expect(text).toMatch(/worst +conv:1h \+447700900••• 5\/5 · sweep:1h \+447700900••• 10\/10/);
        // Above the movers: a block is the first thing to see.
        expect(auto).toBeLessThan(lines.findIndex((l) => l.startsWith('movers')));
      } else {
        expect(text).toContain('guard view');
        expect(text).toMatch(/AUTO BLOCK +RULE +LEVEL +ENDS IN/);
        expect(text).toMatch(/\+447700900••• +block_after +L1 +[34]m/);
        expect(text).toMatch(/\+447700900••• +sweep:1h +numbers +10\/10 +L2/);
        expect(text).toMatch(/GB +10 +20% +10 +20% +40\/50/);
        expect(text).toMatch(/US +10 +70% +20 +85%/);
      }
    }
  });

  it('fits every size from 40x10 to 132x43 in both views, cutting no range', async () => {
    await seedAttack();
    const frame = await loadTopFrame(db.pool, guardPolicy(), 'denials');
    for (const [columns, rows] of [
      [40, 10],
      [60, 20],
      [100, 30],
      [132, 43],
    ] as const) {
      for (const view of ['traffic', 'guard'] as const) {
        const lines = renderFrameText(frame, { columns, rows, intervalMs: 2_000, view }).split('\n');
        expect(lines.length, `${columns}x${rows} ${view}`).toBeLessThanOrEqual(rows);
        for (const l of lines) {
          expect([...l].length).toBeLessThanOrEqual(columns);
          // A range is whole or absent: never cut into something narrower than 1,000 numbers.
          expect(l).not.toMatch(/\+\d+•{0,2}…/);
          for (const m of l.matchAll(/\+\d+•+/g)) expect(m[0]).toMatch(/\d•••$/);
        }
      }
    }
  });

  it('shows the idle line in both views', async () => {
    const frame = await loadTopFrame(db.pool, guardPolicy(), 'denials');
    for (const view of ['traffic', 'guard'] as const) {
      expect(renderFrameText(frame, { columns: 80, rows: 24, intervalMs: 2_000, view })).toContain(CONVERSION_IDLE_TEXT);
    }
  });
});

describe('stats', () => {
  it('carries the guard view in its JSON, and prints it', async () => {
    await seedAttack();
    const report = await statsCommand(db.pool, guardPolicy());
    const json = JSON.parse(JSON.stringify(report)) as typeof report;
    expect(Object.keys(json.guard!).sort()).toEqual(['blocks', 'blocksTotal', 'conversionIdle', 'conversionRules', 'countries', 'lastOutcomeAt', 'ranges']);
    expect(json.guard!.blocks.map((b) => b.target)).toEqual(['+447700900•••', '+447700900•••']);
    const text = printStats(report);
    expect(text).toContain('Conversion by country');
    expect(text).toContain('Worst ranges');
    expect(text).not.toContain(VICTIM);
  });
});

describe('list and unlist', () => {
  it('list shows automatic blocks beside the entries; unlist --prefix lifts them, keeps the level, audits and announces', async () => {
    const now = await seedAttack();
    const policy = guardPolicy();
    const list = await listCommand(db.pool, policy);
    const auto = list.entries.filter((e): e is AutoBlockView => e.kind === 'auto');
    expect(auto.map((e) => [e.targetType, e.target, e.rule, e.level])).toEqual([
      ['prefix', '+447700900•••', 'sweep:prefix:1h', 2],
      ['number', '+447700900•••', 'number:block_after', 1],
    ]);
    expect(Date.parse(auto[0]!.expiresAt)).toBe(now + 50 * 60_000);
    expect(printList(list)).toMatch(/\+447700900••• .*auto L2/);

    const before = await readChangeVersions(db.pool);
    const lifted = await unlistCommand(db.pool, { targetType: 'prefix', target: '+4477', masked: '+4477' }, 'oncall', 'false positive', { policy });
    expect(lifted.removed).toBeNull();
    expect(lifted.lifted).toEqual([
      {
        targetType: 'prefix',
        target: '+447700900•••',
        rule: 'sweep:prefix:1h',
        reason: 'sweep_rate_limit_exceeded',
        level: 2,
        wasUntil: new Date(now + 50 * 60_000).toISOString(),
      },
    ]);
    expect(printUnlist(lifted)).toMatch(/lifted the automatic block on \+447700900••• \(sweep:prefix:1h, level 2/);
    const { rows } = await db.pool.query<{ blocked_until: string; block_level: number }>(
      "SELECT blocked_until::text, block_level FROM rate_limit_counters WHERE rule_id = 'sweep:prefix:1h' AND key = '+447700900'",
    );
    expect(Number(rows[0]!.blocked_until)).toBeLessThanOrEqual(await dbNowMs(db.pool));
    expect(Number(rows[0]!.blocked_until)).toBeGreaterThan(now);
    expect(rows[0]!.block_level).toBe(2);
    // The ended block of +4477010 was not touched.
    const ended = await db.pool.query<{ blocked_until: string }>("SELECT blocked_until::text FROM rate_limit_counters WHERE key = '+447700901'");
    expect(Number(ended.rows[0]!.blocked_until)).toBe(now - 60_000);
    const audit = await db.pool.query<{ actor: string; action: string; target: string; detail: { reason: string; lifted: unknown[] } }>(
      "SELECT actor, action, target, detail FROM rate_limit_audit WHERE action = 'auto_block_lift'",
    );
    expect(audit.rows).toEqual([
      {
        actor: 'oncall',
        action: 'auto_block_lift',
        target: 'prefix:+4477',
        detail: { masked: '+4477', reason: 'false positive', lifted: [{ rule: 'sweep:prefix:1h', key: '+447700900', level: 2, until: now + 50 * 60_000 }] },
      },
    ]);
    expect((await readChangeVersions(db.pool)).lists).toBe(before.lists + 1);
    // Lifting again finds nothing: nothing audited, nothing announced.
    const again = await unlistCommand(db.pool, { targetType: 'prefix', target: '+4477', masked: '+4477' }, 'oncall', undefined, { policy });
    expect(again.lifted).toEqual([]);
    expect(printUnlist(again)).toMatch(/was not listed; nothing to remove/);
    expect((await readChangeVersions(db.pool)).lists).toBe(before.lists + 1);
  });
});

describe('status', () => {
  it("shows the number's automatic block and its range's, with level and end", async () => {
    const now = await seedAttack();
    const r = await statusCommand(db.pool, KEY, guardPolicy(), VICTIM);
    expect(r.autoBlocks).toEqual([
      { targetType: 'number', target: '+447700900•••', rule: 'number:block_after', reason: 'number_blocked', level: 1, until: now + 4 * 60_000 },
      { targetType: 'prefix', target: '+447700900•••', rule: 'sweep:prefix:1h', reason: 'sweep_rate_limit_exceeded', level: 2, until: now + 50 * 60_000 },
    ]);
    expect(r.conversionIdle).toBe(false);
    expect(printStatus(r)).toMatch(/automatic block .*range \+447700900••• by sweep:prefix:1h, level 2/);
  });
});

describe('through the binary (the default policy: sweep, conversion and blocks)', () => {
  it('list, status, top --once at 80x24 and unlist show and lift seeded automatic blocks', async () => {
    const now = await seedAttack();
    const hash = hashPhone(VICTIM, KEY);
    const list = await run(['list', '--json']);
    expect(list.code).toBe(0);
    const entries = (JSON.parse(list.stdout) as { entries: AutoBlockView[] }).entries.filter((e) => e.kind === 'auto');
    expect(entries).toEqual([
      {
        targetType: 'prefix',
        target: '+447700900•••',
        hash: null,
        kind: 'auto',
        rule: 'sweep:prefix:1h',
        level: 2,
        expiresAt: new Date(now + 50 * 60_000).toISOString(),
        createdBy: 'auto',
        createdAt: null,
        reason: 'sweep_rate_limit_exceeded',
        deniedCalls: null,
      },
      {
        targetType: 'number',
        target: '+447700900•••',
        hash,
        kind: 'auto',
        rule: 'number:block_after',
        level: 1,
        expiresAt: new Date(now + 4 * 60_000).toISOString(),
        createdBy: 'auto',
        createdAt: null,
        reason: 'number_blocked',
        deniedCalls: null,
      },
    ]);
    expect(list.stdout).not.toContain(VICTIM);
    expect((await run(['list'])).stdout).toMatch(/2 automatic blocks/);

    for (const view of ['traffic', 'guard']) {
      const top = await run(['top', '--once', '--view', view], { LINES: '24', COLUMNS: '80' });
      expect(top.code).toBe(0);
      const lines = top.stdout.trimEnd().split('\n');
      expect(lines.length).toBeLessThanOrEqual(24);
      for (const l of lines) expect([...l].length).toBeLessThanOrEqual(80);
      expect(top.stdout).toMatch(view === 'guard' ? /\+447700900••• +block_after +L1/ : /blocked +2 in force · sweep \+447700900••• L2/);
    }
    expect((await run(['top', '--once', '--view', 'nope'])).code).toBe(2);

    const status = await run(['status', VICTIM, '--json']);
    expect(status.code).toBe(0);
    expect((JSON.parse(status.stdout) as { autoBlocks: Array<{ rule: string }> }).autoBlocks.map((b) => b.rule)).toEqual([
      'number:block_after',
      'sweep:prefix:1h',
    ]);

    const unlist = await run(['unlist', VICTIM, '--reason', 'customer called']);
    expect(unlist.code).toBe(0);
    expect(unlist.stdout).toMatch(/lifted the automatic block on \+447700900••• \(number:block_after, level 1/);
    const { rows } = await db.pool.query<{ blocked_until: string; block_level: number; denials: string[] }>(
      'SELECT blocked_until::text, block_level, denials::text[] FROM phone_rate_limits WHERE phone_hash = $1',
      [hash],
    );
    expect(Number(rows[0]!.blocked_until)).toBeLessThan(now + 4 * 60_000);
    expect(rows[0]!.block_level).toBe(1);
    expect(rows[0]!.denials).toEqual([]);
    const audit = await db.pool.query<{ actor: string; target: string }>("SELECT actor, target FROM rate_limit_audit WHERE action = 'auto_block_lift'");
    expect(audit.rows).toEqual([{ actor: 'oncall', target: `number:${hash}` }]);

    const prefix = await run(['unlist', '--prefix', '+447700900', '--json']);
    expect(prefix.code).toBe(0);
    expect((JSON.parse(prefix.stdout) as { lifted: Array<{ target: string; level: number }> }).lifted).toMatchObject([{ target: '+447700900•••', level: 2 }]);
    const after = await run(['list', '--json']);
    expect((JSON.parse(after.stdout) as { entries: AutoBlockView[] }).entries.filter((e) => e.kind === 'auto')).toEqual([]);
  });

  describe('a sweep through one range, against a real daemon', () => {
    let daemon: DaemonProcess | undefined;
    afterAll(async () => {
      if (daemon) await stopAll([daemon]);
    });

    it('is blocked automatically; list, stats and top show it; unlist lifts it; the next sweep escalates', async () => {
      assertBuilt();
      daemon = await startDaemon({ databaseUrl: db.url, env: { RATE_LIMIT_IP_MAX: '1000' } });
      const consume = (n: number) => postJson(daemon!.url, '/v1/consume', { phoneNumber: `+4477009001${String(n).padStart(2, '0')}` });
      // The default sweep rule: 10 distinct numbers of a 1,000-number range per hour.
      for (let n = 0; n < 10; n++) expect((await consume(n)).status).toBe(200);
      // A number of the range already counted: the sweep rule allows its next call (status says so).
      const counted = JSON.parse((await run(['status', '+447700900100', '--json'])).stdout) as { rules: Array<{ id: string; used: number; allows: boolean }> };
      expect(counted.rules.find((r) => r.id === 'sweep:prefix:1h')).toMatchObject({ used: 10, allows: true });
      const denied = await consume(10);
      expect(denied.status).toBe(429);
      expect(denied.json).toMatchObject({ reason: 'sweep_rate_limit_exceeded', rule: 'sweep:prefix:1h' });
      expect(await consume(11)).toMatchObject({ status: 429, json: { rule: 'auto:block' } });
      // status's next call: a new number of the range waits for the sweep's hour (10 of 10), not
      // just the 5-minute block; a number it still counts then, for the block's end only.
      const next = async (n: string) => JSON.parse((await run(['status', n, '--json'])).stdout) as { rule: string; retryAfterMs: number };
      const fresh = await next('+447700900113');
      expect(fresh.rule).toBe('auto:block');
      expect(fresh.retryAfterMs).toBeGreaterThan(50 * 60_000);
      const known = await next('+447700900100');
      expect(known.rule).toBe('auto:block');
      expect(known.retryAfterMs).toBeLessThanOrEqual(5 * 60_000);

      const list = JSON.parse((await run(['list', '--json'])).stdout) as { entries: AutoBlockView[] };
      expect(list.entries.filter((e) => e.kind === 'auto').map((e) => [e.target, e.rule, e.level])).toEqual([['+447700900•••', 'sweep:prefix:1h', 1]]);
      const stats = JSON.parse((await run(['stats', '--json'])).stdout) as {
        guard: { blocks: unknown[]; ranges: Array<{ range: string; used: number }>; conversionIdle: boolean };
      };
      expect(stats.guard.blocks).toHaveLength(1);
      expect(stats.guard.ranges[0]).toMatchObject({ range: '+447700900•••', used: 10 });
      // No outcome reported: the default conversion rules are idle, and every view says so.
      expect(stats.guard.conversionIdle).toBe(true);
      const top = await run(['top', '--once'], { LINES: '24', COLUMNS: '80' });
      expect(top.stdout).toContain(CONVERSION_IDLE_TEXT);
      expect(top.stdout).toMatch(/blocked +1 in force · sweep \+447700900••• L1 [45]m/);
      expect(top.stdout.trimEnd().split('\n').length).toBeLessThanOrEqual(24);

      expect((await run(['unlist', '--prefix', '+447700900'])).stdout).toMatch(/level 1/);
      // Lifted: a number already counted in the range passes (it moves, the count stays 10)...
      await vi.waitFor(async () => expect((await consume(3)).status).toBe(200), { timeout: 10_000 });
      // ...and the next new one trips the rule again, one step up.
      expect(await consume(12)).toMatchObject({ status: 429, json: { rule: 'sweep:prefix:1h' } });
      const again = JSON.parse((await run(['list', '--json'])).stdout) as { entries: AutoBlockView[] };
      expect(again.entries.filter((e) => e.kind === 'auto').map((e) => [e.target, e.level])).toEqual([['+447700900•••', 2]]);
    });
  });
});
