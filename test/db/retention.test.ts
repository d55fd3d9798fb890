// Retention on real PostgreSQL: it deletes exactly the rows that can no longer change a decision,
// never one that still counts, one process at a time, and `db prune` reports what it did.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';
import { createPool } from '../../src/db/pool.js';
import { pruneOnce } from '../../src/db/retention.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { retentionHorizonMs } from '../../src/core/policy/horizon.js';
import { EMPTY_NUMBER, decideConsume, decisionPolicy, type DecideState, type NumberState } from '../../src/core/policy/decide.js';
import { EMPTY_BUCKETS, evaluateAggregate } from '../../src/core/policy/aggregate.js';
import type { Buckets, LimitRule, Policy } from '../../src/core/policy/types.js';
import { migratedTestDatabase } from '../helpers/fixture.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const NOW = 1_900_000_000_000;
const AUDIT_RETENTION = 30 * DAY;

const parsed = parsePolicyFile(`
number:
  limits: [{limit: 2, window: 1h}, {limit: 5, window: 1d}]
  block_after: {denials: 3, within: 1h, for: 2d}
global:
  limits: [{limit: 3, window: 12h}]
`);
if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
const POLICY: Policy = parsed.policy;
const H = retentionHorizonMs(POLICY);
const GLOBAL = POLICY.global[0]!;

const db = migratedTestDatabase({ max: 4 });
beforeEach(async () => {
  await db.pool.query('TRUNCATE phone_rate_limits, rate_limit_counters, rate_limit_lists, rate_limit_resets, rate_limit_audit');
});

interface NumberRow {
  hash: string;
  calls: number[];
  denials: number[];
  lastDeniedAt: number | null;
  blockedUntil: number | null;
  listed: boolean;
}
interface CounterRow {
  rule: string;
  key: string;
  ts: number[];
}

async function insertNumber(r: NumberRow): Promise<void> {
  await db.pool.query(
    `INSERT INTO phone_rate_limits (phone_hash, window_start, calls, last_call_at, denials, last_denied_at, blocked_until)
     VALUES ($1, 0, $2::BIGINT[], $3, $4::BIGINT[], $5, $6)`,
    [r.hash, `{${r.calls.join(',')}}`, r.calls.at(-1) ?? null, `{${r.denials.join(',')}}`, r.lastDeniedAt, r.blockedUntil],
  );
  if (r.listed) {
    await db.pool.query(`INSERT INTO rate_limit_lists (target_type, target, kind, created_by) VALUES ('number', $1, 'allow', 'test')`, [r.hash]);
  }
}

async function insertCounter(c: CounterRow): Promise<void> {
  await db.pool.query('INSERT INTO rate_limit_counters (rule_id, key, bucket_ts, bucket_n, last_at) VALUES ($1, $2, $3::BIGINT[], $4::INTEGER[], $5)', [
    c.rule,
    c.key,
    `{${c.ts.join(',')}}`,
    `{${c.ts.map(() => 1).join(',')}}`,
    c.ts.at(-1) ?? null,
  ]);
}

const column = async (sql: string): Promise<string[]> => (await db.pool.query<{ v: string }>(sql)).rows.map((r) => r.v).sort();

/** Decisions a number would get over the next two windows: what its row can influence. */
function futureDecisions(number: NumberState, steps: number[]): unknown[] {
  const policy = decisionPolicy(POLICY);
  let state: DecideState = { number, buckets: [] };
  return steps.map((dt) => {
    const { result, state: next } = decideConsume(state, { counters: [], allowlisted: false }, policy, NOW + dt);
    state = next;
    return { allowed: result.allowed, rule: result.rule, used: result.number?.used, blockedUntil: result.blockedUntil };
  });
}

/** Whether a counter's buckets can change what any rule with a window up to the horizon says. */
function counterMatters(ts: number[]): boolean {
  const buckets: Buckets = { ts, n: ts.map(() => 1) };
  const rules: LimitRule[] = [GLOBAL, { ...GLOBAL, id: 'any', windowMs: H, limit: 1 }];
  return [0, 1, HOUR, H].some((dt) =>
    rules.some((rule) => {
      const a = evaluateAggregate(buckets, NOW + dt, rule);
      const b = evaluateAggregate(EMPTY_BUCKETS, NOW + dt, rule);
      return a.allowed !== b.allowed || a.used !== b.used;
    }),
  );
}

// Ages around every boundary that matters (the horizon, block_after's `within`, now), and anywhere.
const age = fc.oneof(fc.constantFrom(H + 1, H, H - 1, HOUR + 1, HOUR, HOUR - 1, 1, 0, -1), fc.integer({ min: -HOUR, max: 3 * H }));
const times = (max: number) => fc.array(age, { maxLength: max }).map((ages) => ages.map((a) => NOW - a).sort((x, y) => x - y));
const numberArb = fc.record({
  calls: times(5),
  denials: times(2),
  deniedAge: fc.option(age),
  blockAge: fc.option(fc.integer({ min: -2 * DAY, max: 2 * DAY })),
  listed: fc.boolean(),
});
const counterArb = fc.record({ rule: fc.constantFrom(GLOBAL.id, 'global:7d', 'prefix:1h'), ts: times(4) });
const auditAge = fc.oneof(fc.constantFrom(AUDIT_RETENTION + 1000, AUDIT_RETENTION - 1000), fc.integer({ min: 0, max: 2 * AUDIT_RETENTION }));

describe('retention', () => {
  it('the horizon is the longest window of any rule, block_after included', () => {
    expect(H).toBe(DAY);
  });

  it('deletes exactly the rows that can no longer change a decision, and audit rows past retention', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(numberArb, { maxLength: 25 }),
        fc.array(counterArb, { maxLength: 12 }),
        fc.array(auditAge, { maxLength: 8 }),
        fc.integer({ min: 1, max: 7 }),
        async (numbers, counters, audits, batchSize) => {
          await db.pool.query('TRUNCATE phone_rate_limits, rate_limit_counters, rate_limit_lists, rate_limit_resets, rate_limit_audit');
          const rows: NumberRow[] = numbers.map((n, i) => {
            const lastDenied = [...n.denials, ...(n.deniedAge === null ? [] : [NOW - n.deniedAge])];
            return {
              hash: `h${String(i).padStart(3, '0')}`,
              calls: n.calls,
              denials: n.denials,
              lastDeniedAt: lastDenied.length > 0 ? Math.max(...lastDenied) : null,
              blockedUntil: n.blockAge === null ? null : NOW - n.blockAge,
              listed: n.listed,
            };
          });
          for (const r of rows) await insertNumber(r);
          const cs: CounterRow[] = counters.map((c, i) => ({ ...c, key: `k${i}` }));
          for (const c of cs) await insertCounter(c);
          for (const [i, a] of audits.entries()) {
            const at = new Date(NOW - a).toISOString();
            await db.pool.query("INSERT INTO rate_limit_audit (at, actor, action) VALUES ($1, 'test', 'x')", [at]);
            await db.pool.query("INSERT INTO rate_limit_resets (phone_hash, reset_by, previous_count, reset_at) VALUES ($1, 'test', 0, $2)", [`r${i}`, at]);
          }

          const result = await pruneOnce(db.pool, { horizonMs: H, auditRetentionMs: AUDIT_RETENTION, batchSize, pauseMs: 0, nowMs: NOW });
          expect(result.ran).toBe(true);

          const keptNumbers = new Set(await column('SELECT phone_hash AS v FROM phone_rate_limits'));
          const steps = [0, 1, HOUR / 2, HOUR, HOUR + 1, DAY - 1, DAY, 2 * DAY + 1];
          for (const r of rows) {
            const recent = (t: number | null) => t !== null && t > NOW - H;
            const stillCounts = r.calls.some(recent) || r.denials.some(recent) || recent(r.lastDeniedAt) || (r.blockedUntil ?? 0) > NOW || r.listed;
            if (keptNumbers.has(r.hash)) {
              expect(stillCounts, `kept ${JSON.stringify(r)}`).toBe(true);
            } else {
              // Deleted: from now on it decides exactly as a number never seen.
              const state: NumberState = { log: r.calls, blockedUntil: r.blockedUntil, denials: r.denials };
              expect(futureDecisions(state, steps), `deleted ${JSON.stringify(r)}`).toEqual(futureDecisions(EMPTY_NUMBER, steps));
              expect(r.listed).toBe(false);
              expect(stillCounts, `deleted ${JSON.stringify(r)}`).toBe(false);
            }
          }
          expect(result.counts.phone_rate_limits).toBe(rows.length - keptNumbers.size);

          const keptCounters = new Set(await column('SELECT key AS v FROM rate_limit_counters'));
          for (const c of cs) {
            const recent = c.ts.some((t) => t > NOW - H);
            if (keptCounters.has(c.key)) expect(recent, `kept ${JSON.stringify(c)}`).toBe(true);
            else {
              expect(counterMatters(c.ts), `deleted ${JSON.stringify(c)}`).toBe(false);
              expect(recent).toBe(false);
            }
          }
          expect(result.counts.rate_limit_counters).toBe(cs.length - keptCounters.size);

          const young = audits.filter((a) => a < AUDIT_RETENTION).length;
          expect((await db.pool.query('SELECT 1 FROM rate_limit_audit')).rowCount).toBe(young);
          expect((await db.pool.query('SELECT 1 FROM rate_limit_resets')).rowCount).toBe(young);
          expect(result.counts.rate_limit_audit).toBe(audits.length - young);
          expect(result.counts.rate_limit_resets).toBe(audits.length - young);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('keeps a range or number whose automatic block ended less than blocks.decay ago, so the next block escalates', async () => {
    await db.pool.query('TRUNCATE phone_rate_limits, rate_limit_counters, rate_limit_lists, rate_limit_resets, rate_limit_audit');
    const DECAY = DAY;
    const old = NOW - 10 * H;
    // Each row: nothing inside the horizon, a block that ended an hour ago (level 2), or one that ended 2 decays ago.
    for (const [key, until] of [
      ['recent', NOW - HOUR],
      ['stale', NOW - 2 * DECAY],
    ] as const) {
      await db.pool.query(
        `INSERT INTO rate_limit_counters (rule_id, key, bucket_ts, bucket_n, last_at, blocked_until, block_level) VALUES ('sweep:prefix:1h', $1, $2::BIGINT[], '{1}', $3, $4, 2)`,
        [key, `{${old}}`, old, until],
      );
      await db.pool.query(
        `INSERT INTO phone_rate_limits (phone_hash, window_start, calls, last_call_at, denials, blocked_until, block_level) VALUES ($1, 0, $2::BIGINT[], $3, '{}', $4, 2)`,
        [key, `{${old}}`, old, until],
      );
    }
    // A number blocked by block_after without `blocks` (level 0) goes once its block is over, as before.
    await db.pool.query(
      `INSERT INTO phone_rate_limits (phone_hash, window_start, calls, last_call_at, denials, blocked_until) VALUES ('plain', 0, $1::BIGINT[], $2, '{}', $3)`,
      [`{${old}}`, old, NOW - HOUR],
    );
    await pruneOnce(db.pool, { horizonMs: H, auditRetentionMs: AUDIT_RETENTION, blockDecayMs: DECAY, pauseMs: 0, nowMs: NOW });
    expect(await column('SELECT key AS v FROM rate_limit_counters')).toEqual(['recent']);
    expect(await column('SELECT phone_hash AS v FROM phone_rate_limits')).toEqual(['recent']);
    // Without a blocks group nothing holds them.
    await pruneOnce(db.pool, { horizonMs: H, auditRetentionMs: AUDIT_RETENTION, pauseMs: 0, nowMs: NOW });
    expect(await column('SELECT key AS v FROM rate_limit_counters')).toEqual([]);
    expect(await column('SELECT phone_hash AS v FROM phone_rate_limits')).toEqual([]);
  });

  it('skips a row a decision holds locked, and takes it on the next pass', async () => {
    const stale = NOW - 2 * H;
    await insertNumber({ hash: 'held', calls: [stale], denials: [], lastDeniedAt: null, blockedUntil: null, listed: false });
    await insertNumber({ hash: 'free', calls: [stale], denials: [], lastDeniedAt: null, blockedUntil: null, listed: false });
    const holder = await db.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query("SELECT 1 FROM phone_rate_limits WHERE phone_hash = 'held' FOR UPDATE");
      const first = await pruneOnce(db.pool, { horizonMs: H, auditRetentionMs: AUDIT_RETENTION, pauseMs: 0, nowMs: NOW });
      expect(first.counts.phone_rate_limits).toBe(1);
      expect(await column('SELECT phone_hash AS v FROM phone_rate_limits')).toEqual(['held']);
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    const second = await pruneOnce(db.pool, { horizonMs: H, auditRetentionMs: AUDIT_RETENTION, pauseMs: 0, nowMs: NOW });
    expect(second.counts.phone_rate_limits).toBe(1);
    expect(await column('SELECT phone_hash AS v FROM phone_rate_limits')).toEqual([]);
  });

  it('runs in one process at a time: another skips while the lock is held, and two at once never both prune a row', async () => {
    const poolA = createPool({ url: db.url, max: 2 });
    const poolB = createPool({ url: db.url, max: 2 });
    const stale = (i: number): NumberRow => ({ hash: `s${i}`, calls: [NOW - 2 * H], denials: [], lastDeniedAt: null, blockedUntil: null, listed: false });
    try {
      for (let i = 0; i < 40; i++) await insertNumber(stale(i));
      const opts = { horizonMs: H, auditRetentionMs: AUDIT_RETENTION, batchSize: 1, pauseMs: 25, nowMs: NOW };

      // A slow pass in A (one row per batch); once it has deleted something it holds the lock.
      const a = pruneOnce(poolA, opts);
      await vi.waitFor(
        async () => {
          expect((await db.pool.query('SELECT 1 FROM phone_rate_limits')).rowCount).toBeLessThan(40);
        },
        { timeout: 10_000, interval: 5 },
      );
      const b = await pruneOnce(poolB, opts);
      expect(b).toEqual({
        ran: false,
        counts: { phone_rate_limits: 0, rate_limit_counters: 0, rate_limit_resets: 0, rate_limit_audit: 0, rate_limit_outcomes: 0 },
      });
      expect((await a).counts.phone_rate_limits).toBe(40);

      // Started together: whichever order they run in, every row is counted once.
      for (let i = 0; i < 10; i++) await insertNumber(stale(i));
      const both = await Promise.all([pruneOnce(poolA, { ...opts, pauseMs: 0 }), pruneOnce(poolB, { ...opts, pauseMs: 0 })]);
      expect(both.some((r) => r.ran)).toBe(true);
      expect(both.reduce((n, r) => n + r.counts.phone_rate_limits, 0)).toBe(10);

      // With `wait` (the CLI), a second pass waits for the first instead of skipping.
      for (let i = 0; i < 5; i++) await insertNumber(stale(i));
      const waited = await Promise.all([pruneOnce(poolA, { ...opts, wait: true }), pruneOnce(poolB, { ...opts, wait: true })]);
      expect(waited.every((r) => r.ran)).toBe(true);
      expect(waited.reduce((n, r) => n + r.counts.phone_rate_limits, 0)).toBe(5);
    } finally {
      await poolA.end();
      await poolB.end();
    }
  });

  it('`ratelimit db prune` deletes through the binary, prints counts per table and exits 0', async () => {
    const now = Date.now();
    // Default policy: RATE_LIMIT_*'s 1h windows, and the conversion baseline's and sweep's 1h windows, so the horizon is 1h.
    for (let i = 0; i < 3; i++) {
      await insertNumber({ hash: `old${i}`, calls: [now - 2 * HOUR], denials: [], lastDeniedAt: null, blockedUntil: null, listed: false });
    }
    await insertNumber({ hash: 'fresh', calls: [now - 60_000], denials: [], lastDeniedAt: null, blockedUntil: null, listed: false });
    await db.pool.query("INSERT INTO rate_limit_audit (at, actor, action) VALUES (now() - interval '100 days', 't', 'x'), (now(), 't', 'y')");

    const bin = join(import.meta.dirname, '..', '..', 'bin', 'ratelimit.js');
    const run = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(
          process.execPath,
          [bin, ...args],
          { env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: db.url }, timeout: 60_000 },
          (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
        ),
      );
    const json = await run(['db', 'prune', '--json']);
    expect(json).toMatchObject({ code: 0, stderr: '' });
    const report = JSON.parse(json.stdout);
    expect(report).toMatchObject({
      policyVersion: 0,
      horizonMs: HOUR,
      auditRetentionMs: 90 * DAY,
      deleted: { phone_rate_limits: 3, rate_limit_counters: 0, rate_limit_resets: 0, rate_limit_audit: 1, rate_limit_outcomes: 0 },
    });
    expect(await column('SELECT phone_hash AS v FROM phone_rate_limits')).toEqual(['fresh']);

    const human = await run(['db', 'prune']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/phone_rate_limits\s+0\n/);
    expect(human.stdout).toMatch(/rate_limit_audit\s+0/);
  });
});
