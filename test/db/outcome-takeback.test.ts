// Converted outcomes take their call back from the `unconverted` counters (src/db/outcomes.ts):
// the SQL held to removeCall (src/core/policy/aggregate.ts), once per decision however often it is
// reported or replayed, only while the rules were engaged at the decision; and what the
// conversion rules read from outcomes (engaged, the baseline's per-region history).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addCall, removeCall } from '../../src/core/policy/aggregate.js';
import { takeBackCounters } from '../../src/core/policy/conversion.js';
import type { AggregateCounter, Buckets, ConversionPolicy } from '../../src/core/policy/types.js';
import {
  CONVERSION_IDLE_MESSAGE,
  conversionEngaged,
  ENGAGED_MARGIN_MS,
  mostConvertedPerRegion,
  recordOutcome,
  recordOutcomes,
  removeCallInDatabase,
  type OutcomeEvent,
} from '../../src/db/outcomes.js';
import type { Pool } from '../../src/db/pool.js';
import { migratedTestDatabase } from '../helpers/fixture.js';
import { policy, rule } from '../helpers/policy.js';

const db = migratedTestDatabase({ max: 8 });
const H = 3_600_000;
const DAY = 24 * H;
let seq = 0;

async function setCounter(pool: Pool, c: AggregateCounter, b: Buckets): Promise<void> {
  await pool.query(
    `INSERT INTO rate_limit_counters (rule_id, key, bucket_ts, bucket_n) VALUES ($1, $2, $3, $4)
     ON CONFLICT (rule_id, key) DO UPDATE SET bucket_ts = EXCLUDED.bucket_ts, bucket_n = EXCLUDED.bucket_n`,
    [c.rule.id, c.key, b.ts, b.n],
  );
}

async function getCounter(pool: Pool, c: AggregateCounter): Promise<Buckets | undefined> {
  const { rows } = await pool.query<{ ts: string[]; n: number[] }>(
    'SELECT bucket_ts AS ts, bucket_n AS n FROM rate_limit_counters WHERE rule_id = $1 AND key = $2',
    [c.rule.id, c.key],
  );
  return rows[0] && { ts: rows[0].ts.map(Number), n: rows[0].n };
}

/** Ascending bucket times with counts (0 included: a bucket emptied by earlier take-backs). */
const bucketsArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 0, max: 4 })), { maxLength: 12 }).map((xs) => {
  const ts: number[] = [];
  let t = 1_000_000;
  for (const [gap] of xs) ts.push((t += gap));
  return { ts, n: xs.map(([, n]) => n) };
});

describe('taking a call back in SQL', () => {
  it('is removeCall, at any call time and clock, with buckets of every shape', async () => {
    const pool = db.pool;
    await fc.assert(
      fc.asyncProperty(
        bucketsArb,
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer({ min: 990_000, max: 1_080_000 }),
        fc.integer({ min: 990_000, max: 1_080_000 }),
        async (b, windowMs, callAtMs, nowMs) => {
          const c: AggregateCounter = { rule: rule('conversion', 100, windowMs, false, `:p${seq++}`), key: '+1415555' };
          await setCounter(pool, c, b);
          await removeCallInDatabase(pool, [c], callAtMs, nowMs);
          const want = removeCall(b, callAtMs, nowMs, c.rule);
          expect(await getCounter(pool, c)).toEqual({ ts: want.ts, n: want.n });
        },
      ),
      { numRuns: 400 },
    );
  });

  it('takes back from several counters in one statement, each by its own window', async () => {
    const a: AggregateCounter = { rule: rule('conversion', 5, H, false, `:s${seq++}`), key: '+1415555' };
    const b: AggregateCounter = { rule: rule('conversion', 5, 60_000, false, `:s${seq++}`), key: 'US' };
    const t = 2_000_000_000_000;
    let bucketsA: Buckets = { ts: [], n: [] };
    let bucketsB: Buckets = { ts: [], n: [] };
    for (const at of [t, t + 1_000, t + 120_000]) {
      bucketsA = addCall(bucketsA, at, a.rule);
      bucketsB = addCall(bucketsB, at, b.rule);
    }
    await setCounter(db.pool, a, bucketsA);
    await setCounter(db.pool, b, bucketsB);
    // The call at t is out of b's one-minute window at t + 130 s: only a loses it.
    expect(await removeCallInDatabase(db.pool, [a, b], t, t + 130_000)).toBe(1);
    expect(await getCounter(db.pool, a)).toEqual(removeCall(bucketsA, t, t + 130_000, a.rule));
    expect(await getCounter(db.pool, b)).toEqual(bucketsB);
  });
});

// Each test lives in its own stretch of time: whether the rules were engaged at a decision is
// read from every outcome recorded before it.
let era = Date.UTC(2025, 0, 1);
const nextEra = () => (era += 60 * DAY);

function conversionPolicy(tag: string): ConversionPolicy {
  return {
    answeredAtLeastMs: 10_000,
    pendingAfterMs: 15 * 60_000,
    prefix: { digits: 3, rules: [rule('conversion', 5, H, false, `:prefix${tag}`)] },
    country: {
      rules: [rule('conversion', 50, H, false, `:country${tag}`)],
      baseline: { factor: 0.2, floor: 20, historyMs: 14 * DAY, rule: { ...rule('conversion', 20, DAY), id: `conversion:country:baseline${tag}` } },
    },
  };
}

function outcome(conv: ConversionPolicy, over: Partial<OutcomeEvent> & { decidedAtMs: number }): OutcomeEvent {
  const e = {
    decisionId: `t${seq++}`,
    hash: 'c'.repeat(64),
    region: 'US',
    range: '+14155552',
    outcome: 'verified' as const,
    durationMs: undefined,
    source: 'http' as const,
    atMs: over.decidedAtMs + 60_000,
    ...over,
  };
  return { ...e, takeBack: takeBackCounters(policy({ conversion: conv }), { ...e, reportedAtMs: e.atMs }) };
}

// The take-back reads the counters at this clock (the database's in production).
let clockMs = 0;
const record = (e: OutcomeEvent) => recordOutcome(db.pool, e, { nowMs: clockMs });
const replay = (es: OutcomeEvent[]) => recordOutcomes(db.pool, es, { nowMs: clockMs });

/** Counters of the policy for one call of +14155552xxx (US), each counting `calls` at those times. */
async function counted(conv: ConversionPolicy, calls: readonly number[]): Promise<AggregateCounter[]> {
  const counters: AggregateCounter[] = [
    { rule: conv.prefix!.rules[0]!, key: '+14155552' },
    { rule: conv.country!.rules[0]!, key: 'US' },
    { rule: conv.country!.baseline!.rule, key: 'US' },
  ];
  for (const c of counters) {
    let b: Buckets = { ts: [], n: [] };
    for (const at of calls) b = addCall(b, at, c.rule);
    await setCounter(db.pool, c, b);
  }
  return counters;
}

const used = async (counters: readonly AggregateCounter[]) =>
  Promise.all(counters.map(async (c) => (await getCounter(db.pool, c))!.n.reduce((a: number, b: number) => a + b, 0)));

describe('a converted outcome', () => {
  it('takes its call back once, in the transaction that stores it; repeats and conflicts take nothing', async () => {
    const t = nextEra();
    clockMs = t + 5 * 60_000;
    const conv = conversionPolicy(`:once${seq++}`);
    // The rules engaged an hour before these calls.
    expect(await record(outcome(conv, { decidedAtMs: t - H - 60_000, outcome: 'failed' }))).toEqual({ stored: 'new' });
    const calls = [t, t + 1_000, t + 2_000];
    const counters = await counted(conv, calls);
    expect(await used(counters)).toEqual([3, 3, 3]);

    const e = outcome(conv, { decidedAtMs: t + 1_000 });
    expect(await record(e)).toEqual({ stored: 'new' });
    expect(await used(counters)).toEqual([2, 2, 2]);
    expect(await record(e)).toEqual({ stored: 'duplicate' });
    expect(await replay([e, e])).toBe(2);
    expect(await record({ ...e, outcome: 'failed' })).toEqual({ stored: 'conflict', existing: 'verified' });
    expect(await used(counters)).toEqual([2, 2, 2]);

    // Not converted, or reported after pending_after: counted as unconverted, nothing taken back.
    await record(outcome(conv, { decidedAtMs: t, outcome: 'answered', durationMs: 9_000 }));
    await record(outcome(conv, { decidedAtMs: t, atMs: t + conv.pendingAfterMs + 1 }));
    expect(await used(counters)).toEqual([2, 2, 2]);
    // Answered long enough: converted.
    await record(outcome(conv, { decidedAtMs: t + 2_000, outcome: 'answered', durationMs: 10_000 }));
    expect(await used(counters)).toEqual([1, 1, 1]);
  });

  it('reported many times at once takes its call back exactly once', async () => {
    const t = nextEra();
    clockMs = t + 5 * 60_000;
    const conv = conversionPolicy(`:race${seq++}`);
    await record(outcome(conv, { decidedAtMs: t - H, outcome: 'failed' }));
    const counters = await counted(conv, [t, t + 1, t + 2, t + 3]);
    const e = outcome(conv, { decidedAtMs: t + 1 });
    const other = outcome(conv, { decidedAtMs: t + 2 });
    const results = await Promise.all([...Array.from({ length: 6 }, () => record(e)), record(other), replay([e])]);
    expect(results.filter((r) => typeof r === 'object' && r.stored === 'new')).toHaveLength(2 - (results.at(-1) === 0 ? 1 : 0));
    expect(await used(counters)).toEqual([2, 2, 2]);
  });

  it('takes nothing back when the rules were idle at its decision (its call was never counted)', async () => {
    const t = nextEra();
    clockMs = t + 5 * 60_000;
    const conv = conversionPolicy(`:idle${seq++}`);
    const counters = await counted(conv, [t, t + 1_000]);
    // The first outcome ever: its decision came before any outcome, so it was not counted.
    await record(outcome(conv, { decidedAtMs: t }));
    expect(await used(counters)).toEqual([2, 2, 2]);
    // Decided within the margin after the first outcome was recorded: still nothing.
    await record(outcome(conv, { decidedAtMs: t + 60_000 + ENGAGED_MARGIN_MS - 1 }));
    expect(await used(counters)).toEqual([2, 2, 2]);
    // Decided well after: taken back.
    const later = t + 60_000 + ENGAGED_MARGIN_MS + 1;
    const counters2 = await counted(conv, [t, later]);
    await record(outcome(conv, { decidedAtMs: later }));
    expect(await used(counters2)).toEqual([1, 1, 1]);
  });

  it('replayed from a spool: each stored outcome takes back once, two in one counter both, a second replay nothing', async () => {
    const t = nextEra();
    clockMs = t + 5 * 60_000;
    const conv = conversionPolicy(`:replay${seq++}`);
    await record(outcome(conv, { decidedAtMs: t - H, outcome: 'failed' }));
    const counters = await counted(conv, [t, t + 1_000, t + 2_000, t + 3_000]);
    const batch = [
      outcome(conv, { decidedAtMs: t }),
      outcome(conv, { decidedAtMs: t + 1_000, outcome: 'unanswered' }),
      outcome(conv, { decidedAtMs: t + 2_000, outcome: 'answered', durationMs: 60_000 }),
      // Kept in the spool past pending_after: its own report time says it came late.
      outcome(conv, { decidedAtMs: t + 3_000, atMs: t + 3_000 + conv.pendingAfterMs + 1 }),
    ];
    expect(await replay(batch)).toBe(0);
    expect(await used(counters)).toEqual([2, 2, 2]);
    expect(await replay(batch)).toBe(4);
    expect(await used(counters)).toEqual([2, 2, 2]);
    // Two outcomes for one decision (two spools): the first in the queue stands, whichever kind.
    const x = outcome(conv, { decidedAtMs: t + 1_500 });
    const y = outcome(conv, { decidedAtMs: t + 2_500 });
    const failedX = { ...x, outcome: 'failed' as const, takeBack: [] };
    const failedY = { ...y, outcome: 'failed' as const, takeBack: [] };
    expect(await replay([x, failedX, failedY, y])).toBe(2);
    const { rows } = await db.pool.query<{ decision_id: string; outcome: string }>(
      'SELECT decision_id, outcome FROM rate_limit_outcomes WHERE decision_id = ANY($1) ORDER BY decision_id',
      [[x.decisionId, y.decisionId]],
    );
    expect(Object.fromEntries(rows.map((r) => [r.decision_id, r.outcome]))).toEqual({ [x.decisionId]: 'verified', [y.decisionId]: 'failed' });
  });
});

describe('what the conversion rules read from outcomes', () => {
  it('engaged: an outcome recorded within 7 days', async () => {
    const t = nextEra();
    const conv = conversionPolicy(`:engaged${seq++}`);
    expect(await conversionEngaged(db.pool, t)).toBe(false);
    await recordOutcome(db.pool, outcome(conv, { decidedAtMs: t - DAY, atMs: t - DAY + 1 }));
    expect(await conversionEngaged(db.pool, t)).toBe(true);
    expect(await conversionEngaged(db.pool, t - DAY + 7 * DAY)).toBe(true);
    expect(await conversionEngaged(db.pool, t - DAY + 1 + 7 * DAY)).toBe(false);
    expect(CONVERSION_IDLE_MESSAGE).toBe('conversion rules idle: no outcomes reported in the last 7 days');
  });

  it('baseline history: most converted per region in one window-long bin, within history only', async () => {
    const t = nextEra();
    const conv = conversionPolicy(`:base${seq++}`);
    const day0 = Math.floor(t / DAY) * DAY;
    const rows: OutcomeEvent[] = [];
    // GB: 3 converted on day 1, 5 on day 2 (plus non-converted ones), 9 long before history.
    for (let i = 0; i < 3; i++) rows.push(outcome(conv, { region: 'GB', decidedAtMs: day0 + DAY + i }));
    for (let i = 0; i < 5; i++) rows.push(outcome(conv, { region: 'GB', decidedAtMs: day0 + 2 * DAY + i, outcome: 'answered', durationMs: 10_000 }));
    for (let i = 0; i < 4; i++) rows.push(outcome(conv, { region: 'GB', decidedAtMs: day0 + 2 * DAY + 10 + i, outcome: 'answered', durationMs: 9_999 }));
    for (let i = 0; i < 4; i++) rows.push(outcome(conv, { region: 'GB', decidedAtMs: day0 + 2 * DAY + 20 + i, outcome: 'failed' }));
    for (let i = 0; i < 9; i++) rows.push(outcome(conv, { region: 'GB', decidedAtMs: day0 - 20 * DAY + i }));
    // No region: under ZZ. FR: none converted.
    for (let i = 0; i < 2; i++) rows.push(outcome(conv, { region: undefined, decidedAtMs: day0 + 3 * DAY + i }));
    rows.push(outcome(conv, { region: 'FR', decidedAtMs: day0 + 3 * DAY, outcome: 'unanswered' }));
    expect(await recordOutcomes(db.pool, rows)).toBe(0);
    const most = await mostConvertedPerRegion(db.pool, { windowMs: DAY, historyMs: 14 * DAY, answeredAtLeastMs: 10_000, nowMs: day0 + 4 * DAY });
    expect(Object.fromEntries(most)).toEqual({ GB: 5, ZZ: 2 });
  });

  it('reads engagement through migration 020’s index, one step, not the whole table', async () => {
    await db.pool.query('ANALYZE rate_limit_outcomes');
    const { rows } = await db.pool.query<{ 'QUERY PLAN': string }>(
      `EXPLAIN SELECT max(recorded_at) FROM rate_limit_outcomes WHERE recorded_at <= now() - interval '2 minutes'`,
    );
    const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
    expect(plan).toMatch(/Index Only Scan Backward using rate_limit_outcomes_recorded/);
    expect(plan).not.toMatch(/Seq Scan/);
  });
});
