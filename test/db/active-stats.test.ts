// stats and top read through the active-number set (migrations 011, 013, 023): whatever path wrote the rows
// (inserted active, updated, moved backwards, pruned), what they report must equal a brute-force
// recount over every row, and no number active in a window may be missing from it.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { hottestNumbers, readStats } from '../../src/db/stats.js';
import { ACTIVE_EPOCH_MS, ACTIVE_MAX_WINDOW_MS, ACTIVE_RETENTION_MS, pruneActiveNumbers } from '../../src/db/active-numbers.js';
import { decideBatch, recordDecisions } from '../../src/db/decisions.js';
import { makeLogPolicy } from '../../src/core/policy/log.js';
import { decisionPolicy } from '../../src/core/policy/decide.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { migratedTestDatabase } from '../helpers/fixture.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

const db = migratedTestDatabase({ max: 4 });

interface RowSpec {
  region: 'US' | 'GB' | null;
  /** Minutes ago of each call (any order); every time sits half a minute off a whole minute. */
  callsAgoMin: number[];
  /** A last call older than the log (a reset number keeps its last_call_at). */
  staleLastCallAgoMin: number | null;
  deniedAgoMin: number | null;
  deniedInWindow: number;
  /** How the row got its activity: inserted with it, or updated (once, or via an older value first). */
  path: 'insert' | 'update' | 'update-backwards' | 'update-forwards';
}

// Up to 30 h ago: beyond the set's retention (25 h), so pruning and the whole-table fallback are exercised.
const agoMin = fc.integer({ min: 0, max: 30 * 60 });
const rowSpec: fc.Arbitrary<RowSpec> = fc.record({
  region: fc.constantFrom('US' as const, 'GB' as const, null),
  callsAgoMin: fc.array(agoMin, { maxLength: 6 }),
  staleLastCallAgoMin: fc.option(agoMin, { nil: null }),
  deniedAgoMin: fc.option(agoMin, { nil: null }),
  deniedInWindow: fc.integer({ min: 1, max: 5 }),
  path: fc.constantFrom('insert' as const, 'update' as const, 'update-backwards' as const, 'update-forwards' as const),
});

interface Row {
  hash: string;
  region: string | null;
  calls: number[];
  lastCallAt: number | null;
  lastDeniedAt: number | null;
  deniedInWindow: number;
  deniedWindowStart: number;
}

function materialize(specs: RowSpec[], baseMs: number): Row[] {
  const at = (ago: number) => baseMs - ago * MINUTE - MINUTE / 2;
  return specs.map((s, i) => {
    const calls = s.callsAgoMin.map(at).sort((a, b) => a - b);
    const lastDeniedAt = s.deniedAgoMin === null ? null : at(s.deniedAgoMin);
    return {
      hash: `h${String(i).padStart(4, '0')}`,
      region: s.region,
      calls,
      lastCallAt: calls.length > 0 ? calls[calls.length - 1]! : s.staleLastCallAgoMin === null ? null : at(s.staleLastCallAgoMin),
      lastDeniedAt,
      deniedInWindow: lastDeniedAt === null ? 0 : s.deniedInWindow,
      // The denial window starts at or before the last denial.
      deniedWindowStart: lastDeniedAt === null ? 0 : lastDeniedAt - MINUTE,
    };
  });
}

async function writeRows(rows: Row[], specs: RowSpec[]): Promise<void> {
  for (const [i, r] of rows.entries()) {
    const path = specs[i]!.path;
    const insertActive = path === 'insert';
    await db.pool.query(
      `INSERT INTO phone_rate_limits (phone_hash, window_start, region, calls, denied_in_window, denied_window_start, last_call_at, last_denied_at)
       VALUES ($1, 0, $2, $3, $4, $5, $6, $7)`,
      [r.hash, r.region, r.calls, r.deniedInWindow, r.deniedWindowStart, insertActive ? r.lastCallAt : null, insertActive ? r.lastDeniedAt : null],
    );
    if (insertActive) continue;
    const set = (lastCall: number | null, lastDenied: number | null) =>
      db.pool.query('UPDATE phone_rate_limits SET last_call_at = $2, last_denied_at = $3 WHERE phone_hash = $1', [r.hash, lastCall, lastDenied]);
    // Backwards: first somewhere recent, then the real (possibly much older) activity.
    if (path === 'update-backwards') await set(Date.now(), null);
    // Forwards: first a day older, then the real activity.
    if (path === 'update-forwards')
      await set(r.lastCallAt === null ? null : r.lastCallAt - 24 * HOUR, r.lastDeniedAt === null ? null : r.lastDeniedAt - 24 * HOUR);
    await set(r.lastCallAt, r.lastDeniedAt);
  }
}

const activity = (r: Row) => Math.max(r.lastCallAt ?? 0, r.lastDeniedAt ?? 0);

function bruteForceStats(rows: Row[], nowMs: number, rules: readonly { limit: number; windowMs: number }[], windowMs: number) {
  const regions = new Map<string, { region: string; active: number; atLimit: number; calls: number; denials: number }>();
  for (const r of rows) {
    const region = r.region ?? 'unknown';
    const g = regions.get(region) ?? { region, active: 0, atLimit: 0, calls: 0, denials: 0 };
    if (activity(r) > nowMs - windowMs) g.active++;
    if (rules.some((rule) => r.calls.length >= rule.limit && r.calls[r.calls.length - rule.limit]! > nowMs - rule.windowMs)) g.atLimit++;
    g.calls += r.calls.filter((t) => t > nowMs - windowMs).length;
    if (r.deniedWindowStart > nowMs - windowMs) g.denials += r.deniedInWindow;
    regions.set(region, g);
  }
  const list = [...regions.values()].filter((g) => g.active + g.atLimit > 0);
  list.sort((a, b) => b.calls - a.calls || a.region.localeCompare(b.region));
  return list;
}

describe('stats and top through the active-number set', () => {
  it('equal a brute-force recount of every row, after pruning, for any window', async () => {
    const policies = [
      makeLogPolicy([{ id: 'a', limit: 2, windowMs: HOUR }]),
      makeLogPolicy([
        { id: 'a', limit: 2, windowMs: 10 * MINUTE },
        { id: 'b', limit: 4, windowMs: 6 * HOUR },
      ]),
    ];
    await fc.assert(
      fc.asyncProperty(fc.array(rowSpec, { minLength: 1, maxLength: 40 }), fc.constantFrom(...policies), async (specs, policy) => {
        await db.pool.query('TRUNCATE phone_rate_limits, rate_limit_active, rate_limit_resets');
        const { rows: clock } = await db.pool.query<{ now_ms: number }>(`SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms`);
        const rows = materialize(specs, clock[0]!.now_ms);
        await writeRows(rows, specs);
        await pruneActiveNumbers(db.pool);

        const s = await readStats(db.pool, policy);
        expect(s).toMatchObject({ tracked: rows.length, trackedEstimated: false });
        const expected = bruteForceStats(rows, s.nowMs, policy.rules, policy.rules[0]!.windowMs);
        // Busiest first; ties are ordered by the database's collation, so compare as sets.
        const byRegion = <T extends { region: string }>(l: T[]) => [...l].sort((a, b) => (a.region < b.region ? -1 : a.region > b.region ? 1 : 0));
        expect(byRegion(s.regions)).toEqual(byRegion(expected));
        expect(s.regions.map((g) => g.calls)).toEqual(expected.map((g) => g.calls));
        expect(s.active).toBe(rows.filter((r) => activity(r) > s.nowMs - policy.rules[0]!.windowMs).length);

        // Every window top may use, through the set and (beyond its retention) the whole table.
        for (const windowMs of [MINUTE, 10 * MINUTE, HOUR, 6 * HOUR, ACTIVE_MAX_WINDOW_MS, 30 * HOUR]) {
          const hot = await hottestNumbers(db.pool, windowMs, 1_000, 'recent');
          const want = rows
            .filter((r) => activity(r) > hot.nowMs - windowMs)
            .map((r) => r.hash)
            .sort();
          expect(hot.rows.map((r) => r.hash).sort()).toEqual(want);
        }
      }),
      { numRuns: 12 },
    );
  });

  it('pruning removes only epochs older than the retention, in slices, whatever their number', async () => {
    await db.pool.query('TRUNCATE rate_limit_active');
    const nowEpoch = Math.floor(Date.now() / ACTIVE_EPOCH_MS);
    const keptFrom = Math.floor((Date.now() - ACTIVE_RETENTION_MS) / ACTIVE_EPOCH_MS);
    // 45k old entries (more than two slices) and one per recent epoch.
    await db.pool.query(`INSERT INTO rate_limit_active (epoch, phone_hash) SELECT $1::bigint - (g % 50), 'old' || g FROM generate_series(1, 45000) AS g`, [
      keptFrom - 1,
    ]);
    await db.pool.query(`INSERT INTO rate_limit_active (epoch, phone_hash) SELECT e, 'recent' FROM generate_series($1::bigint, $2::bigint) AS e`, [
      keptFrom,
      nowEpoch,
    ]);
    expect(await pruneActiveNumbers(db.pool)).toBe(45_000);
    const { rows } = await db.pool.query<{ n: number; min: number }>(`SELECT count(*)::int AS n, min(epoch)::float8 AS min FROM rate_limit_active`);
    expect(rows[0]).toEqual({ n: nowEpoch - keptFrom + 1, min: keptFrom });
  });

  it('the decision path itself marks numbers active, once per epoch', async () => {
    await db.pool.query('TRUNCATE phone_rate_limits, rate_limit_active, rate_limit_resets');
    const policy = decisionPolicy(defaultPolicy({ phoneMax: 3, phoneWindowMs: HOUR, ipMax: 100, ipWindowMs: HOUR }));
    const req = (hash: string) => ({ hash, region: 'US', masked: '+1415•••••00', allowlisted: false, counters: [] });
    const base = Math.floor(Date.now() / ACTIVE_EPOCH_MS) * ACTIVE_EPOCH_MS;
    // Three decisions in one epoch, a fourth in the next: two entries for the number.
    for (const at of [base + 1, base + 2, base + 3, base + ACTIVE_EPOCH_MS + 1]) {
      await decideBatch(db.pool, [req('busy')], policy, at);
    }
    const { rows } = await db.pool.query<{ epoch: number }>(`SELECT epoch FROM rate_limit_active WHERE phone_hash = 'busy' ORDER BY epoch`);
    expect(rows.map((r) => r.epoch)).toEqual([base / ACTIVE_EPOCH_MS, base / ACTIVE_EPOCH_MS + 1]);
  });

  it('every writer marks numbers per statement: batches of new and known numbers, replays, v0.1.0 decisions, plain updates', async () => {
    await db.pool.query('TRUNCATE phone_rate_limits, rate_limit_active, rate_limit_resets');
    const policy = decisionPolicy(defaultPolicy({ phoneMax: 3, phoneWindowMs: HOUR, ipMax: 100, ipWindowMs: HOUR }));
    const req = (hash: string) => ({ hash, region: 'US', masked: '+1415•••••00', allowlisted: false, counters: [] });
    const base = Math.floor(Date.now() / ACTIVE_EPOCH_MS) * ACTIVE_EPOCH_MS;
    const e0 = base / ACTIVE_EPOCH_MS;
    const entries = async () =>
      (await db.pool.query<{ h: string; e: number }>(`SELECT phone_hash AS h, epoch::float8 AS e FROM rate_limit_active ORDER BY 1, 2`)).rows.map(
        (r) => `${r.h}@${r.e - e0}`,
      );
    // One batch: two new numbers (inserted), then both again in the same epoch (no entry) and
    // one of them with a third, new one in the next epoch.
    await decideBatch(db.pool, [req('a'), req('b'), req('a')], policy, base + 1);
    await decideBatch(db.pool, [req('a'), req('b')], policy, base + 2);
    await decideBatch(db.pool, [req('b'), req('c')], policy, base + ACTIVE_EPOCH_MS + 1);
    expect(await entries()).toEqual(['a@0', 'b@0', 'b@1', 'c@1']);
    // A replay of decisions made in memory (ratelimit_record_v2): a known number in a later epoch, a new one.
    const ev = (hash: string, atMs: number) => ({ hash, region: 'US', masked: '+1415•••••00', atMs, allowed: true, counters: [] });
    await recordDecisions(db.pool, [ev('a', base + 2 * ACTIVE_EPOCH_MS + 5), ev('d', base + 2 * ACTIVE_EPOCH_MS + 6)], policy);
    expect(await entries()).toEqual(['a@0', 'a@2', 'b@0', 'b@1', 'c@1', 'd@2']);
    // A v0.1.0 daemon's ratelimit_decide_v2 during a rolling upgrade.
    await db.pool.query(
      `SELECT r_allowed FROM ratelimit_decide_v2(p_hashes => $1::text[], p_regions => $2::text[], p_masked => $3::text[],
         p_allowlisted => $4::boolean[], p_safe => $5::boolean[], p_rule_ids => $6::text[], p_rule_limits => $7::int[],
         p_rule_windows => $8::bigint[], p_rule_shadow => $9::boolean[], p_block_denials => 0, p_block_within => 0, p_block_for => 0,
         p_block_steps => '{}'::bigint[], p_block_decay => 0, p_entry_request => '{}'::int[], p_entry_counter => '{}'::int[],
         p_counter_rules => '{}'::text[], p_counter_keys => '{}'::text[], p_counter_limits => '{}'::int[], p_counter_windows => '{}'::bigint[],
         p_counter_bucket_calls => '{}'::int[], p_counter_shadow => '{}'::boolean[], p_counter_kinds => '{}'::text[],
         p_counter_blocks_range => '{}'::boolean[], p_now => $10::bigint)`,
      [['c', 'e'], ['US', 'US'], ['x', 'x'], [false, false], [false, false], ['number:1h'], [3], [HOUR], [false], base + 3 * ACTIVE_EPOCH_MS],
    );
    expect(await entries()).toEqual(['a@0', 'a@2', 'b@0', 'b@1', 'c@1', 'c@3', 'd@2', 'e@3']);
    // An UPDATE that does not move the epoch notes nothing; one that moves it does.
    await db.pool.query(`UPDATE phone_rate_limits SET denied_total = denied_total + 1`);
    await db.pool.query(`UPDATE phone_rate_limits SET last_denied_at = $1 WHERE phone_hash = 'd'`, [base + 4 * ACTIVE_EPOCH_MS]);
    expect(await entries()).toEqual(['a@0', 'a@2', 'b@0', 'b@1', 'c@1', 'c@3', 'd@2', 'd@4', 'e@3']);
  });
});
