// ratelimit_decide_v3 and ratelimit_record_v2 held to the pure model (src/core/policy/decide.ts) by
// property tests, plus their locking and upgrades, and v0.1.0's ratelimit_decide_v2 held to v3:
// longer than 350 lines because the model-side harness and every rule group's cases belong together.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createPool, type Pool } from '../../src/db/pool.js';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { decideBatch, peekState, recordDecisions, type DecideRequest, type DecisionEvent } from '../../src/db/decisions.js';
import { peekSnapshot } from '../../src/db/check-snapshot.js';
import { evaluateStates } from '../../src/core/policy/log.js';
import { ruleStates, stateLookup, summarizeLog } from '../../src/core/policy/log-summary.js';
import { bucketCalls, EMPTY_BUCKETS } from '../../src/core/policy/aggregate.js';
import { applicableCounters, CONVERSION_IDLE, counterMapKey, isSafe, type ConversionState } from '../../src/core/policy/counters.js';
import {
  decideCheck,
  decideCheckFromSnapshot,
  decideConsume,
  decisionPolicy,
  EMPTY_NUMBER,
  type DecideResult,
  type DecideState,
  type NumberState,
} from '../../src/core/policy/decide.js';
import { AUTO_BLOCK_RULE, type Buckets, type LimitRule, type Policy } from '../../src/core/policy/types.js';
import { createTestDatabase } from '../helpers/fixture.js';
import { policy as makeFullPolicy, rule } from '../helpers/policy.js';
import { decideBatchV2 } from '../helpers/decide-v2.js';

let db: { url: string; drop(): Promise<void> };
let pool: Pool;
const extraPools: Pool[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 8 });
  await migrate(pool);
});
afterAll(async () => {
  await Promise.all([pool, ...extraPools].map((p) => p.end()));
  await db.drop();
});

let runs = 0;
/** Far-apart simulated clocks and unique rule ids: runs never see each other's rows. */
function freshRun() {
  runs++;
  return { tag: `#${runs}`, baseMs: 2_000_000_000_000 + runs * 10_000_000 };
}

// Two numbers in one +1415555 range (prefix digits 4), one elsewhere in the US, one in GB,
// one fictional (+1555…, region unknown -> ZZ).
const NUMBERS = [
  { e164: '+14155550101', region: 'US' },
  { e164: '+14155550102', region: 'US' },
  { e164: '+12125550199', region: 'US' },
  { e164: '+442079460958', region: 'GB' },
  { e164: '+15555550100', region: undefined },
] as const;

interface Req {
  n: number;
  allowlisted: boolean;
}

/** What the engine passes for one number: safe when the policy's safe prefixes or the allow list say so. */
function inputFor(p: Policy, e164: string, region: string | undefined, allowlisted: boolean, conversion: ConversionState) {
  const safe = allowlisted || isSafe(p, e164);
  return { counters: applicableCounters(p, e164, region, { conversion, safe }), allowlisted, safe };
}

/** The pure model's world: every number's state and every counter's buckets. */
class Model {
  numbers = new Map<string, NumberState>();
  counters = new Map<string, Buckets>();
  constructor(
    readonly policy: Policy,
    readonly conversion: ConversionState = CONVERSION_IDLE,
  ) {}
  readonly dp = () => decisionPolicy(this.policy);

  consume(hash: string, e164: string, region: string | undefined, allowlisted: boolean, nowMs: number): DecideResult {
    const input = inputFor(this.policy, e164, region, allowlisted, this.conversion);
    const state = {
      number: this.numbers.get(hash) ?? EMPTY_NUMBER,
      buckets: input.counters.map((c) => this.counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS),
    };
    const out = decideConsume(state, input, this.dp(), nowMs);
    this.numbers.set(hash, out.state.number);
    // A denial changes no count (it may start a range's automatic block).
    input.counters.forEach((c, i) => {
      if (out.result.allowed || out.state.buckets[i] !== state.buckets[i]) this.counters.set(counterMapKey(c.rule.id, c.key), out.state.buckets[i]!);
    });
    return out.result;
  }
}

function requestFor(p: Policy, tag: string, r: Req, conversion: ConversionState = CONVERSION_IDLE): DecideRequest & { e164: string } {
  const num = NUMBERS[r.n]!;
  const input = inputFor(p, num.e164, num.region, r.allowlisted, conversion);
  return {
    e164: num.e164,
    hash: `h${tag}:${num.e164}`,
    region: num.region,
    masked: num.e164.slice(0, 5) + '•••',
    allowlisted: r.allowlisted,
    safe: input.safe,
    counters: input.counters,
  };
}

/** Runs batches through the SQL and the model side by side; asserts equality decision by decision. */
async function compare(
  p: Policy,
  batches: { reqs: Req[]; advanceMs: number }[],
  via: Pool = pool,
  conversion: ConversionState = CONVERSION_IDLE,
): Promise<DecideResult[]> {
  const { tag, baseMs } = freshRun();
  const model = new Model(p, conversion);
  const dp = decisionPolicy(p);
  let now = baseMs;
  const results: DecideResult[] = [];
  for (const batch of batches) {
    now += batch.advanceMs;
    const reqs = batch.reqs.map((r) => requestFor(p, tag, r, conversion));
    const out = await decideBatch(via, reqs, dp, now);
    reqs.forEach((req, i) => {
      const got = out[i]!;
      const want = model.consume(req.hash, req.e164, req.region, req.allowlisted, now);
      const ctx = `batch at +${now - baseMs} ms, request ${i}`;
      expect({ allowed: got.allowed, at: got.atMs, rule: got.rule, shadow: got.shadow, blockedUntil: got.blockedUntil, blockedBy: got.blockedBy }, ctx).toEqual(
        {
          allowed: want.allowed,
          at: want.atMs,
          rule: want.rule,
          shadow: want.shadow,
          blockedUntil: want.blockedUntil,
          blockedBy: want.blockedBy,
        },
      );
      // What is returned instead of the log: each number rule's state, and the log's summary,
      // as the model computes them from its log; the number view read from them is the model's.
      const log = model.numbers.get(req.hash)!.log;
      expect(got.rules, ctx).toEqual(ruleStates(log, want.atMs, dp.number.rules.map(logRule)));
      expect(got.summary, ctx).toEqual(summarizeLog(log));
      const view = dp.number.view ? evaluateStates(stateLookup(dp.number.rules, got.rules), got.atMs, dp.number.view) : null;
      expect(view && got.allowed ? { ...view, allowed: true, retryAfterMs: 0 } : view, ctx).toEqual(want.number);
      expect({ used: got.aggregateUsed, reset: got.aggregateResetTime }, ctx).toEqual({
        used: want.aggregate?.used ?? null,
        reset: want.aggregate?.resetTime ?? null,
      });
      results.push(want);
    });
    // The stored logs are the model's, call for call.
    const hashes = [...new Set(reqs.map((r) => r.hash))];
    const stored = await via.query<{ phone_hash: string; calls: number[]; blocked_until: number | null; block_level: number }>(
      'SELECT phone_hash, calls, blocked_until, block_level FROM phone_rate_limits WHERE phone_hash = ANY($1)',
      [hashes],
    );
    expect(new Map(stored.rows.map((r) => [r.phone_hash, r.calls]))).toEqual(new Map(hashes.map((h) => [h, model.numbers.get(h)!.log])));
    // And their blocks (block_after, escalated with `blocks`).
    expect(new Map(stored.rows.map((r) => [r.phone_hash, [r.blocked_until, r.block_level]]))).toEqual(
      new Map(hashes.map((h) => [h, [model.numbers.get(h)!.blockedUntil, model.numbers.get(h)!.blockLevel ?? 0]])),
    );
    // A check read from the database's snapshot (no logs) is the model's check, and the summary its log's.
    const counters = [...new Map(reqs.flatMap((r) => r.counters).map((c) => [counterMapKey(c.rule.id, c.key), c])).values()];
    const snap = await peekSnapshot(via, hashes, counters, dp.number.rules);
    for (const req of reqs) {
      const state: DecideState = {
        number: model.numbers.get(req.hash)!,
        buckets: req.counters.map((c) => model.counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS),
      };
      const input = { counters: req.counters, allowlisted: req.allowlisted, safe: req.safe };
      const number = snap.numbers.get(req.hash)!;
      const buckets = req.counters.map((c) => snap.counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS);
      expect(decideCheckFromSnapshot(number, buckets, input, dp), `check of ${req.hash}`).toEqual(decideCheck(state, input, dp, snap.nowMs));
      expect(number.summary).toEqual(summarizeLog(state.number.log));
    }
  }
  // The stored counters are the model's, bucket for bucket.
  const all = [...new Set(batches.flatMap((b) => b.reqs.map((r) => r.n)))].flatMap((n) => requestFor(p, tag, { n, allowlisted: false }, conversion).counters);
  const peek = await peekState(via, [], all);
  for (const [key, buckets] of model.counters) expect(peek.counters.get(key), key).toEqual(buckets);
  return results;
}

const logRule = (r: LimitRule) => r;

const windowArb = fc.integer({ min: 5, max: 50 }).map((x) => x * 10);
const rulesArb = (group: 'number' | 'prefix' | 'country' | 'global', min: number, max: number, limit: fc.Arbitrary<number>, region?: string) =>
  fc
    .uniqueArray(fc.record({ windowMs: windowArb, limit, shadow: fc.integer({ min: 0, max: 9 }).map((x) => x < 3) }), {
      minLength: min,
      maxLength: max,
      selector: (r) => r.windowMs,
    })
    .map((rs) => rs.map((r) => ({ ...r, group, region })));

const policyArb = fc
  .record({
    number: rulesArb('number', 1, 3, fc.integer({ min: 1, max: 4 })),
    prefix: fc.option(rulesArb('prefix', 1, 2, fc.integer({ min: 2, max: 6 })), { nil: undefined }),
    country: fc.option(rulesArb('country', 1, 1, fc.integer({ min: 2, max: 8 })), { nil: undefined }),
    gb: rulesArb('country', 1, 1, fc.integer({ min: 1, max: 3 }), 'GB'),
    global: fc.option(rulesArb('global', 1, 1, fc.integer({ min: 3, max: 12 })), { nil: undefined }),
    blockAfter: fc.option(fc.record({ denials: fc.integer({ min: 1, max: 3 }), withinMs: windowArb, forMs: windowArb }), { nil: undefined }),
  })
  .map((spec) => (tag: string) => {
    const mk = (rs: { windowMs: number; limit: number; shadow: boolean; group: LimitRule['group']; region: string | undefined }[]) =>
      rs.map((r) => rule(r.group, r.limit, r.windowMs, r.shadow, tag, r.region));
    return makeFullPolicy({
      number: mk(spec.number),
      blockAfter: spec.blockAfter,
      prefix: spec.prefix ? { digits: 4, rules: mk(spec.prefix) } : undefined,
      country: spec.country ? { rules: mk(spec.country), overrides: new Map([['GB', mk(spec.gb)]]) } : undefined,
      global: spec.global ? mk(spec.global) : [],
    });
  });

const batchesArb = fc.array(
  fc.record({
    reqs: fc.array(fc.record({ n: fc.integer({ min: 0, max: NUMBERS.length - 1 }), allowlisted: fc.integer({ min: 0, max: 19 }).map((x) => x < 3) }), {
      minLength: 1,
      maxLength: 8,
    }),
    // Multiples of 10 ms, like the windows, so decisions land exactly on window and block edges.
    advanceMs: fc.integer({ min: 0, max: 30 }).map((x) => x * 10),
  }),
  { minLength: 1, maxLength: 8 },
);

describe('ratelimit_decide_v3 equals decideConsume', () => {
  it('over random multi-rule policies and request sequences, decision by decision (property)', async () => {
    await fc.assert(
      fc.asyncProperty(policyArb, batchesArb, async (mkPolicy, batches) => {
        const tag = `#p${runs + 1}`;
        await compare(mkPolicy(tag), batches);
      }),
      { numRuns: 60 },
    );
  });

  it('with buckets of several calls (limit 120: 3 per bucket), early denials included', async () => {
    const tag = '#buckets';
    const p = makeFullPolicy({ global: [rule('global', 120, 400, false, tag)], prefix: { digits: 4, rules: [rule('prefix', 61, 250, false, tag)] } });
    expect(bucketCalls(p.global[0]!)).toBe(3);
    const batches = Array.from({ length: 40 }, (_, i) => ({
      reqs: Array.from({ length: 10 }, (_, j) => ({ n: (i + j) % NUMBERS.length, allowlisted: false })),
      advanceMs: 7 + (i % 5) * 9,
    }));
    const results = await compare(p, batches);
    expect(results.some((r) => r.rule === p.global[0]!.id || r.rule === p.prefix!.rules[0]!.id)).toBe(true);
    expect(results.some((r) => r.allowed)).toBe(true);
  });

  it('with long logs (limits 40 and 100): the states are exact and the log comes back in at most 16 runs', async () => {
    const tag = '#long';
    const p = makeFullPolicy({
      number: [rule('number', 40, 3_000, false, tag), rule('number', 100, 20_000, false, tag), rule('number', 25, 500, true, tag)],
      blockAfter: { denials: 30, withinMs: 1_000, forMs: 2_000 },
      global: [rule('global', 150, 4_000, false, tag)],
    });
    const batches = Array.from({ length: 60 }, (_, i) => ({
      reqs: Array.from({ length: 12 }, (_, j) => ({ n: (i + j) % 3, allowlisted: j === 11 && i % 7 === 0 })),
      advanceMs: 20 + (i % 6) * 70,
    }));
    const results = await compare(p, batches);
    expect(results.some((r) => r.allowed)).toBe(true);
    expect(results.some((r) => r.reason === 'phone_rate_limit_exceeded')).toBe(true);
    // Some logs were long enough to be summarized.
    const { rows } = await pool.query(`SELECT max(cardinality(calls))::int AS n FROM phone_rate_limits WHERE phone_hash LIKE $1`, [`h#${runs}:%`]);
    expect(rows[0].n).toBeGreaterThan(16);
  });

  it('without number rules: allowed calls still land in the log (the latest one)', async () => {
    const tag = '#nonum';
    const p = makeFullPolicy({ global: [rule('global', 2, 1000, false, tag)] });
    const results = await compare(p, [
      {
        reqs: [
          { n: 0, allowlisted: false },
          { n: 0, allowlisted: false },
          { n: 1, allowlisted: false },
        ],
        advanceMs: 1,
      },
    ]);
    expect(results.map((r) => r.allowed)).toEqual([true, true, false]);
    expect(results.map((r) => r.number)).toEqual([null, null, null]);
  });

  it('refuses mismatched argument arrays rather than guessing', async () => {
    // ratelimit_decide_v3 by position: requests, number rules, block_after, blocks, entries,
    // counters (rule index, key), counter rules.
    const call = (
      entries: { req: number[]; counter: number[] },
      counters: { rule: number[]; key: string[] },
      maxes = [2],
      crules: string[] = ['global:1h#args'],
    ) =>
      pool.query(`SELECT * FROM ratelimit_decide_v3($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, 0, '{}', 0, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`, [
        ['a', 'b'],
        ['US', 'US'],
        ['x', 'y'],
        [false, false],
        [false, false],
        ['number:1h'],
        maxes,
        [1000],
        [false],
        entries.req,
        entries.counter,
        counters.rule,
        counters.key,
        crules,
        crules.map(() => 5),
        crules.map(() => 1000),
        crules.map(() => 1),
        crules.map(() => false),
        crules.map(() => 'calls'),
      ]);
    const one = { rule: [1], key: ['*'] };
    await expect(call({ req: [3], counter: [1] }, one)).rejects.toThrow(/not in the batch/);
    await expect(call({ req: [2, 1], counter: [1, 1] }, one)).rejects.toThrow(/out of request order/);
    await expect(call({ req: [1], counter: [2] }, one)).rejects.toThrow(/counter that is not in the batch/);
    await expect(call({ req: [1, 2], counter: [1, 2] }, { rule: [1, 1], key: ['*', '*'] })).rejects.toThrow(/listed twice/);
    await expect(call({ req: [1], counter: [1] }, { rule: [2], key: ['*'] })).rejects.toThrow(/rule that is not in the batch/);
    await expect(call({ req: [], counter: [] }, { rule: [], key: [] }, [2, 3])).rejects.toThrow(/mismatched/);
    // And a well-formed call goes through: one row, a decision per request.
    const ok = await call({ req: [1, 2], counter: [1, 1] }, { rule: [1], key: ['*'] });
    expect(ok.rows).toHaveLength(1);
    expect(ok.rows[0].r_allowed).toEqual([true, true]);
  });
});

// Issue #19's groups: conversion (prefix, country fixed and baseline), sweep, blocks and safe.
// Rule ids as the policy file names them (`conversion:prefix:…`, `sweep:prefix:…`).
const guardRulesArb = (group: 'conversion' | 'sweep', sub: 'prefix' | 'country', min: number, max: number) =>
  fc
    .uniqueArray(fc.record({ windowMs: windowArb, limit: fc.integer({ min: 1, max: 3 }), shadow: fc.integer({ min: 0, max: 9 }).map((x) => x < 2) }), {
      minLength: min,
      maxLength: max,
      selector: (r) => r.windowMs,
    })
    .map((rs) => (tag: string) => rs.map((r) => rule(group, r.limit, r.windowMs, r.shadow, tag, sub)));

const guardPolicyArb = fc
  .record({
    base: policyArb,
    sweep: fc.option(guardRulesArb('sweep', 'prefix', 1, 2), { nil: undefined }),
    conversionPrefix: fc.option(guardRulesArb('conversion', 'prefix', 1, 2), { nil: undefined }),
    conversionCountry: fc.option(guardRulesArb('conversion', 'country', 0, 1), { nil: undefined }),
    baseline: fc.option(fc.record({ floor: fc.integer({ min: 1, max: 3 }), windowMs: windowArb, us: fc.option(fc.integer({ min: 1, max: 5 })) }), {
      nil: undefined,
    }),
    blocks: fc.option(fc.record({ steps: fc.array(windowArb, { minLength: 1, maxLength: 3 }), decayMs: windowArb }), { nil: undefined }),
    // With `blocks`, block_after's `for` is an optional cap on each step: runs with and without it.
    blockAfterCapped: fc.boolean(),
    safe: fc.constantFrom([] as string[], ['+1212'], ['+442079', '+14155550102']),
    engaged: fc.integer({ min: 0, max: 3 }).map((x) => x > 0),
  })
  .map((spec) => (tag: string) => {
    const base = spec.base(tag);
    const baseline = spec.baseline
      ? {
          factor: 0.2,
          floor: spec.baseline.floor,
          historyMs: 10 * spec.baseline.windowMs,
          rule: { ...rule('conversion', spec.baseline.floor, spec.baseline.windowMs, false, tag, 'country'), id: `conversion:country:baseline${tag}` },
        }
      : undefined;
    const countryRules = spec.conversionCountry?.(tag) ?? [];
    const blockAfter = base.blockAfter && spec.blocks && !spec.blockAfterCapped ? { ...base.blockAfter, forMs: undefined } : base.blockAfter;
    const p: Policy = {
      ...base,
      blockAfter,
      conversion:
        spec.conversionPrefix || countryRules.length > 0 || baseline
          ? {
              answeredAtLeastMs: 10_000,
              pendingAfterMs: 60_000,
              prefix: spec.conversionPrefix ? { digits: 4, rules: spec.conversionPrefix(tag) } : undefined,
              country: countryRules.length > 0 || baseline ? { rules: countryRules, baseline } : undefined,
            }
          : undefined,
      sweep: spec.sweep ? { digits: 4, rules: spec.sweep(tag) } : undefined,
      blocks: spec.blocks ? { escalateMs: spec.blocks.steps, escalate: spec.blocks.steps.map((ms) => `${ms}ms`), decayMs: spec.blocks.decayMs } : undefined,
      safe: { prefixes: spec.safe },
    };
    const conversion: ConversionState = {
      engaged: spec.engaged,
      baselineLimits: new Map(spec.baseline?.us != null ? [['US', spec.baseline.us]] : []),
    };
    return { p, conversion };
  });

describe('ratelimit_decide_v3 equals decideConsume with conversion, sweep, blocks and safe (#19)', () => {
  it('over random policies with the new groups, decision by decision, blocks and levels stored alike (property)', async () => {
    let denials = 0;
    let autoBlocks = 0;
    await fc.assert(
      fc.asyncProperty(guardPolicyArb, batchesArb, async (mk, batches) => {
        const { p, conversion } = mk(`#g${runs + 1}`);
        const results = await compare(p, batches, pool, conversion);
        denials += results.filter((r) => !r.allowed).length;
        autoBlocks += results.filter((r) => r.rule === AUTO_BLOCK_RULE).length;
      }),
      { numRuns: 60 },
    );
    // The runs did reach the new paths.
    expect(denials).toBeGreaterThan(0);
    expect(autoBlocks).toBeGreaterThan(0);
  });

  it('escalates on a test clock: 500 ms, 1 s, 2 s blocks, the last repeating, back to the first after the decay (SQL and model)', async () => {
    const tag = '#escalate';
    const sweep = rule('sweep', 1, 10_000, false, tag, 'prefix');
    const p = makeFullPolicy({
      sweep: { digits: 4, rules: [sweep] },
      blocks: { escalateMs: [500, 1_000, 2_000], escalate: ['500ms', '1s', '2s'], decayMs: 5_000 },
    });
    // Numbers 0 and 1 share a range: a second distinct number in the window trips the sweep rule.
    const at = (advanceMs: number, n: number) => ({ reqs: [{ n, allowlisted: false }], advanceMs });
    const results = await compare(p, [
      at(0, 0), // +0: allowed, counts number 0
      at(10, 1), // +10: denied by the rule: level 1, blocked until +510
      at(10, 0), // +20: the range is blocked: auto:block, even for a number already counted
      at(600, 1), // +620: the block is over, the rule denies again: level 2 until +1620
      at(1_100, 1), // +1720: level 3 until +3720
      at(100, 0), // +1820: auto:block
      at(2_000, 1), // +3820: the last step repeats: level 3 until +5820
      at(10, 0), // +3830: auto:block
      at(2_000, 0), // +5830: the block is over; number 0 is already counted, so it moves: allowed
      at(5_170, 1), // +11000: quiet for longer than the decay since +5820: back to level 1
    ]);
    expect(results.map((r) => r.rule)).toEqual([
      null,
      sweep.id,
      AUTO_BLOCK_RULE,
      sweep.id,
      sweep.id,
      AUTO_BLOCK_RULE,
      sweep.id,
      AUTO_BLOCK_RULE,
      null,
      sweep.id,
    ]);
    expect(results[2]).toMatchObject({ reason: 'sweep_rate_limit_exceeded', blockedBy: sweep.id });
    expect(results[2]!.aggregate!.retryAfterMs).toBe(490);
    expect(results[5]!.aggregate!.retryAfterMs).toBe(3_720 - 1_820);
    expect(results[7]!.aggregate!.retryAfterMs).toBe(5_820 - 3_830);
    const { rows } = await pool.query<{ blocked_until: number; block_level: number }>(
      'SELECT blocked_until, block_level FROM rate_limit_counters WHERE rule_id = $1',
      [sweep.id],
    );
    expect(rows.map((r) => [r.block_level, r.blocked_until - results.at(-1)!.atMs])).toEqual([[1, 500]]);
  });

  it("auto:block's reset is never before the tripping counter frees a call: the later of the block's end and its own reset (SQL and model)", async () => {
    const at = (advanceMs: number, n: number) => ({ reqs: [{ n, allowlisted: false }], advanceMs });
    const engaged: ConversionState = { engaged: true, baselineLimits: new Map() };
    const blocks = { escalateMs: [500, 1_000], escalate: ['500ms', '1s'], decayMs: 100 };
    const conversionOf = (r: LimitRule): Policy['conversion'] => ({
      answeredAtLeastMs: 10_000,
      pendingAfterMs: 60_000,
      prefix: { digits: 4, rules: [r] },
      country: undefined,
    });

    // conversion.prefix 2 per 10 s, blocked for 500 ms: the block ends long before the counter frees.
    const slow = rule('conversion', 2, 10_000, false, '#reset-slow', 'prefix');
    const r1 = await compare(
      makeFullPolicy({ conversion: conversionOf(slow), blocks }),
      [at(0, 0), at(100, 1), at(100, 0), at(100, 1), at(400, 1)],
      pool,
      engaged,
    );
    expect(r1.map((r) => r.rule)).toEqual([null, null, slow.id, AUTO_BLOCK_RULE, slow.id]);
    const base1 = r1[0]!.atMs;
    // The block ends at +700, but the counter's first call leaves its window at +10000 only.
    expect(r1[3]!.aggregate!.resetTime - base1).toBe(10_000);
    expect(r1[3]!.aggregate!.retryAfterMs).toBe(10_000 - 300);
    // And a call at the block's end is indeed still denied, by the counter itself.
    expect(r1[4]!.atMs - base1).toBe(700);

    // The same counter over 400 ms, blocked for 500 ms: it frees first, so the block's end is the reset.
    const fast = rule('conversion', 2, 400, false, '#reset-fast', 'prefix');
    const r2 = await compare(makeFullPolicy({ conversion: conversionOf(fast), blocks }), [at(0, 0), at(100, 1), at(100, 0), at(100, 1)], pool, engaged);
    expect(r2.map((r) => r.rule)).toEqual([null, null, fast.id, AUTO_BLOCK_RULE]);
    expect(r2[3]!.aggregate!.resetTime - r2[0]!.atMs).toBe(700);

    // sweep (distinct) 1 per 10 s: a number it does not count waits for the counter; one it still
    // counts at the block's end moves then, so the block's end is its reset.
    const sweep = rule('sweep', 1, 10_000, false, '#reset-sweep', 'prefix');
    const r3 = await compare(makeFullPolicy({ sweep: { digits: 4, rules: [sweep] }, blocks }), [at(0, 0), at(10, 1), at(10, 1), at(10, 0)]);
    expect(r3.map((r) => r.rule)).toEqual([null, sweep.id, AUTO_BLOCK_RULE, AUTO_BLOCK_RULE]);
    const base3 = r3[0]!.atMs;
    expect(r3[2]!.aggregate!.resetTime - base3).toBe(10_000);
    expect(r3[3]!.aggregate!.resetTime - base3).toBe(510);
  });

  it('block_after escalates with `blocks` (a `for` longer than every step cuts none), and a safe number is never blocked', () => {
    const p = makeFullPolicy({
      number: [rule('number', 1, 100)],
      blockAfter: { denials: 1, withinMs: 1_000, forMs: 999_999 },
      blocks: { escalateMs: [1_000, 5_000], escalate: ['1s', '5s'], decayMs: 10_000 },
    });
    const dp = decisionPolicy(p);
    let state: DecideState = { number: EMPTY_NUMBER, buckets: [] };
    const step = (now: number, safe = false) => {
      const out = decideConsume(state, { counters: [], allowlisted: false, safe }, dp, now);
      state = out.state;
      return out.result;
    };
    expect(step(0).allowed).toBe(true);
    expect(step(10)).toMatchObject({ rule: 'number:100ms', blockedUntil: 1_010 });
    expect(state.number.blockLevel).toBe(1);
    expect(step(500)).toMatchObject({ rule: 'number:block_after', reason: 'number_blocked' });
    expect(step(1_010).allowed).toBe(true);
    expect(step(1_020)).toMatchObject({ blockedUntil: 6_020 });
    expect(state.number.blockLevel).toBe(2);
    // Safe: the block does not apply, and its own denials never block it.
    expect(step(2_000, true).allowed).toBe(true);
    expect(step(2_010, true)).toMatchObject({ rule: 'number:100ms', blockedUntil: 6_020 });
    expect(state.number.blockLevel).toBe(2);
    // 10 s after the last block ended: the next block starts again at the first step.
    expect(step(16_100).allowed).toBe(true);
    expect(step(16_110)).toMatchObject({ blockedUntil: 17_110 });
    expect(state.number.blockLevel).toBe(1);
  });
});

describe("block_after's `for` beside `blocks`: a cap on each step (SQL and model)", () => {
  it('on a test clock: 5m, then 1h, then the 12h step cut to `for: 2h`, the level still rising; without `for`, the full 12h', async () => {
    const HOUR_MS = 3_600_000;
    const blocks = { escalateMs: [300_000, HOUR_MS, 12 * HOUR_MS], escalate: ['5m', '1h', '12h'], decayMs: 24 * HOUR_MS };
    // One call per 100 ms; every denial by it trips block_after (denials: 1). Each block ends
    // exactly when the next call comes, which the number rule allows; the call 10 ms later is
    // denied and starts the next block.
    const run = async (tag: string, forMs: number | undefined) => {
      const p = makeFullPolicy({ number: [rule('number', 1, 100, false, tag)], blockAfter: { denials: 1, withinMs: HOUR_MS, forMs }, blocks });
      const one = (advanceMs: number) => ({ reqs: [{ n: 0, allowlisted: false }], advanceMs });
      const results = await compare(p, [
        one(0), // allowed
        one(10), // denied: level 1, 5m
        one(300_000), // the block ended: allowed
        one(10), // denied: level 2, 1h
        one(HOUR_MS), // allowed
        one(10), // denied: level 3, 12h (cut to `for`)
        one(HOUR_MS), // still blocked: number:block_after
      ]);
      const { rows } = await pool.query<{ block_level: number }>('SELECT block_level FROM phone_rate_limits WHERE phone_hash = $1', [
        `h#${runs}:${NUMBERS[0].e164}`,
      ]);
      return { results, level: rows[0]?.block_level, rules: results.map((r) => r.rule?.replace(tag, '') ?? null) };
    };
    const lengths = (results: DecideResult[]) => [1, 3, 5].map((i) => results[i]!.blockedUntil! - results[i]!.atMs);

    const capped = await run('#cap2h', 2 * HOUR_MS);
    expect(capped.rules).toEqual([null, 'number:100ms', null, 'number:100ms', null, 'number:100ms', 'number:block_after']);
    expect(lengths(capped.results)).toEqual([300_000, HOUR_MS, 2 * HOUR_MS]);
    expect(capped.level).toBe(3);
    expect(capped.results[6]).toMatchObject({ reason: 'number_blocked', blockedUntil: capped.results[5]!.atMs + 2 * HOUR_MS });

    const uncapped = await run('#nocap', undefined);
    expect(lengths(uncapped.results)).toEqual([300_000, HOUR_MS, 12 * HOUR_MS]);
    expect(uncapped.level).toBe(3);

    // A cap that cuts every step: each block lasts `for`, and the level still rises underneath.
    const tight = await run('#cap1m', 60_000);
    expect(tight.rules).toEqual([null, 'number:100ms', null, 'number:100ms', null, 'number:100ms', null]);
    expect(lengths(tight.results)).toEqual([60_000, 60_000, 60_000]);
    expect(tight.level).toBe(3);
  });
});

describe('distinct counters (sweep) against a brute-force oracle (pure)', () => {
  it('never let more than `limit` distinct numbers in a window (never late), and deny early by < one bucket', () => {
    const RANGE = Array.from({ length: 40 }, (_, i) => `+1415555${String(1000 + i).slice(1)}`);
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 160 }),
        fc.integer({ min: 20, max: 400 }),
        fc.array(fc.record({ n: fc.integer({ min: 0, max: RANGE.length - 1 }), advanceMs: fc.integer({ min: 0, max: 30 }) }), { maxLength: 300 }),
        (limit, windowMs, seq) => {
          const sweep = rule('sweep', limit, windowMs, false, '', 'prefix');
          const p = makeFullPolicy({ sweep: { digits: 3, rules: [sweep] } });
          const dp = decisionPolicy(p);
          const numbers = new Map<string, NumberState>();
          let buckets: Buckets = EMPTY_BUCKETS;
          /** Each number's latest allowed call: what "distinct numbers in the window" is counted from. */
          const last = new Map<string, number>();
          const distinctIn = (at: number) => [...last.values()].filter((t) => t > at - windowMs).length;
          let now = 1_000_000;
          for (const step of seq) {
            now += step.advanceMs;
            const e164 = RANGE[step.n]!;
            const counters = applicableCounters(p, e164, 'US');
            expect(counters.map((c) => c.rule.id)).toEqual([sweep.id]);
            const number = numbers.get(e164) ?? EMPTY_NUMBER;
            const out = decideConsume({ number, buckets: [buckets] }, { counters, allowlisted: false }, dp, now);
            const at = out.result.atMs;
            const counted = (last.get(e164) ?? -Infinity) > at - windowMs;
            if (out.result.allowed) {
              numbers.set(e164, out.state.number);
              buckets = out.state.buckets[0]!;
              last.set(e164, at);
              // Never late: the window ending at this call holds at most `limit` distinct numbers.
              expect(distinctIn(at)).toBeLessThanOrEqual(limit);
            } else {
              // A number already counted is never denied by the rule; a new one only when the
              // window already holds more than limit - one bucket numbers.
              expect(counted).toBe(false);
              expect(distinctIn(at)).toBeGreaterThanOrEqual(limit - bucketCalls(sweep) + 1);
              expect(out.state.buckets[0]).toBe(buckets);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('decideConsume against a brute-force oracle (pure)', () => {
  it('never admits more than a limit in any rolling window, denies early by less than a bucket, spends nothing on a denial', () => {
    const seqArb = fc.array(
      fc.record({
        n: fc.integer({ min: 0, max: NUMBERS.length - 1 }),
        allowlisted: fc.integer({ min: 0, max: 19 }).map((x) => x < 2),
        advanceMs: fc.integer({ min: 0, max: 120 }),
      }),
      {
        minLength: 1,
        maxLength: 200,
      },
    );
    const bigArb = fc.option(fc.integer({ min: 51, max: 160 }), { nil: undefined });
    fc.assert(
      fc.property(policyArb, seqArb, bigArb, (mkPolicy, seq, big) => {
        let p = mkPolicy('');
        // Sometimes a global limit with buckets of 2-4 calls, to exercise early denials.
        if (big !== undefined) p = { ...p, global: [rule('global', big, 2_000)] };
        const model = new Model(p);
        const history = new Map<string, number[]>(); // every allowed call's time, per number and per counter
        const countIn = (key: string, at: number, windowMs: number) => (history.get(key) ?? []).filter((t) => t > at - windowMs).length;
        let now = 1_000_000;
        for (const step of seq) {
          now += step.advanceMs;
          const num = NUMBERS[step.n]!;
          const hash = num.e164;
          const counters = applicableCounters(p, num.e164, num.region);
          const before = { number: model.numbers.get(hash) ?? EMPTY_NUMBER, counters: new Map(model.counters) };
          const r = model.consume(hash, num.e164, num.region, step.allowlisted, now);
          const enforcingNumber = p.number.filter((x) => !x.shadow);
          const numberWouldDeny = enforcingNumber.some((x) => countIn(`n:${hash}`, r.atMs, x.windowMs) >= x.limit);
          if (step.allowlisted) expect(r.allowed).toBe(true);
          if (r.rule !== null) expect([...p.number, ...counters.map((c) => c.rule)].find((x) => x.id === r.rule)?.shadow ?? false).toBe(false);
          if (!step.allowlisted && r.reason !== 'number_blocked') {
            // Number rules are exact.
            expect(r.reason === 'phone_rate_limit_exceeded').toBe(numberWouldDeny);
          }
          if (r.reason === 'number_blocked') expect(before.number.blockedUntil).toBeGreaterThan(r.atMs);
          if (r.aggregate) {
            const c = counters.find((x) => x.rule.id === r.rule)!;
            // Early by less than one bucket.
            expect(countIn(`c:${counterMapKey(c.rule.id, c.key)}`, r.atMs, c.rule.windowMs)).toBeGreaterThanOrEqual(c.rule.limit - bucketCalls(c.rule) + 1);
          }
          if (!r.allowed) {
            // All or nothing: a denial spends nothing anywhere.
            expect(model.numbers.get(hash)!.log).toEqual(before.number.log);
            expect(model.counters).toEqual(before.counters);
            continue;
          }
          history.set(`n:${hash}`, [...(history.get(`n:${hash}`) ?? []), r.atMs]);
          for (const c of counters) {
            const key = `c:${counterMapKey(c.rule.id, c.key)}`;
            history.set(key, [...(history.get(key) ?? []), r.atMs]);
          }
          if (step.allowlisted) continue;
          // The promise: the window ending at this admitted call holds at most `limit` calls.
          for (const x of enforcingNumber) expect(countIn(`n:${hash}`, r.atMs, x.windowMs), x.id).toBeLessThanOrEqual(x.limit);
          for (const c of counters.filter((x) => !x.rule.shadow)) {
            expect(countIn(`c:${counterMapKey(c.rule.id, c.key)}`, r.atMs, c.rule.windowMs), c.rule.id).toBeLessThanOrEqual(c.rule.limit);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('block_after blocks for `for` after `denials` denials, and a check says so without changing anything', () => {
    const p = makeFullPolicy({ number: [rule('number', 1, 1000)], blockAfter: { denials: 2, withinMs: 500, forMs: 5000 } });
    const dp = decisionPolicy(p);
    const input = { counters: [], allowlisted: false };
    let state: DecideState = { number: EMPTY_NUMBER, buckets: [] };
    const step = (now: number) => {
      const out = decideConsume(state, input, dp, now);
      state = out.state;
      return out.result;
    };
    expect(step(0).allowed).toBe(true);
    expect(step(10)).toMatchObject({ allowed: false, rule: 'number:1000ms', reason: 'phone_rate_limit_exceeded', blockedUntil: null });
    expect(step(20)).toMatchObject({ allowed: false, rule: 'number:1000ms', blockedUntil: 5020 });
    const check = decideCheck(state, input, dp, 2000);
    expect(check).toMatchObject({ allowed: false, rule: 'number:block_after', reason: 'number_blocked', blockedUntil: 5020 });
    expect(step(2000)).toMatchObject({ rule: 'number:block_after' });
    expect(state.number.blockedUntil).toBe(5020); // retrying while blocked does not extend the block
    expect(step(5020)).toMatchObject({ allowed: true, rule: null });
    expect(decideConsume(state, { counters: [], allowlisted: true }, dp, 5021).result.allowed).toBe(true);
  });
});

describe('block_after counts number-rule denials only', () => {
  const tag = '#blockafter-agg';
  const p = makeFullPolicy({
    number: [rule('number', 3, 5000, false, tag)],
    blockAfter: { denials: 2, withinMs: 5000, forMs: 9000 },
    global: [rule('global', 2, 1000, false, tag)],
  });

  it("pure: a global budget running out denies without blocking; the number's own denials still block", () => {
    const dp = decisionPolicy(p);
    const counters = applicableCounters(p, NUMBERS[0].e164, NUMBERS[0].region);
    let state: DecideState = { number: EMPTY_NUMBER, buckets: counters.map(() => EMPTY_BUCKETS) };
    const step = (now: number) => {
      const out = decideConsume(state, { counters, allowlisted: false }, dp, now);
      state = out.state;
      return out.result;
    };
    expect(step(0).allowed).toBe(true);
    expect(step(10).allowed).toBe(true);
    for (const t of [20, 30, 40]) {
      expect(step(t)).toMatchObject({ allowed: false, reason: 'global_rate_limit_exceeded', blockedUntil: null });
    }
    expect(state.number.denials).toEqual([]);
    expect(state.number.blockedUntil).toBeNull();
    // The global window frees up; the number's own limit (3 in 5 s) then denies twice: blocked.
    expect(step(1010).allowed).toBe(true);
    expect(step(1020)).toMatchObject({ allowed: false, reason: 'phone_rate_limit_exceeded', blockedUntil: null });
    expect(step(1030)).toMatchObject({ allowed: false, reason: 'phone_rate_limit_exceeded', blockedUntil: 10_030 });
  });

  it('SQL: the same, decision by decision, and the stored number is not blocked by global denials', async () => {
    const reqs = (n: number) => Array.from({ length: n }, () => ({ n: 0, allowlisted: false }));
    const results = await compare(p, [
      { reqs: reqs(5), advanceMs: 0 },
      { reqs: reqs(1), advanceMs: 1010 },
      { reqs: reqs(2), advanceMs: 10 },
    ]);
    expect(results.map((r) => r.reason)).toEqual([
      null,
      null,
      'global_rate_limit_exceeded',
      'global_rate_limit_exceeded',
      'global_rate_limit_exceeded',
      null,
      'phone_rate_limit_exceeded',
      'phone_rate_limit_exceeded',
    ]);
    expect(results.map((r) => r.blockedUntil !== null)).toEqual([false, false, false, false, false, false, false, true]);
  });
});

describe('new numbers', () => {
  it('are written once: a batch of new numbers inserts rows and updates none (no dead tuples)', async () => {
    const tag = '#write-once';
    const p = makeFullPolicy({ number: [rule('number', 2, 3_600_000, false, tag)], blockAfter: { denials: 1, withinMs: 3_600_000, forMs: 3_600_000 } });
    const dp = decisionPolicy(p);
    // One connection, so the statistics flushed are those of the batch's own backend.
    const one = createPool({ url: db.url, max: 1 });
    extraPools.push(one);
    const stats = async () => {
      await one.query('SELECT pg_stat_force_next_flush()');
      const { rows } = await one.query<{ ins: string; upd: string; dead: string }>(
        `SELECT n_tup_ins AS ins, n_tup_upd AS upd, n_dead_tup AS dead FROM pg_stat_user_tables WHERE relname = 'phone_rate_limits'`,
      );
      return { ins: Number(rows[0]!.ins), upd: Number(rows[0]!.upd), dead: Number(rows[0]!.dead) };
    };
    const before = await stats();
    // 40 new numbers, some asked for 3 times in the batch (allowed, allowed, denied -> blocked).
    const reqs = Array.from({ length: 60 }, (_, i) => {
      const e164 = `+1646555${String(i % 40).padStart(4, '0')}`;
      return { hash: `w${tag}:${e164}`, region: 'US', masked: e164.slice(0, 5), allowlisted: false, counters: [] };
    });
    const out = await decideBatch(one, [...reqs, ...reqs.slice(0, 5)], dp);
    expect(out.filter((o) => !o.allowed).length).toBe(5);
    const after = await stats();
    expect({ ins: after.ins - before.ins, upd: after.upd - before.upd, dead: after.dead - before.dead }).toEqual({ ins: 40, upd: 0, dead: 0 });
    // What was written in one go is the whole state: logs, denials and blocks.
    const { rows } = await one.query(
      `SELECT count(*)::int AS n, sum(cardinality(calls))::int AS calls, sum(denied_total)::int AS denied, count(blocked_until)::int AS blocked
         FROM phone_rate_limits WHERE phone_hash LIKE $1`,
      [`w${tag}:%`],
    );
    expect(rows[0]).toEqual({ n: 40, calls: 60, denied: 5, blocked: 5 });
    // The next batch on them updates rows in place.
    await decideBatch(one, reqs.slice(0, 40), dp);
    const later = await stats();
    expect({ ins: later.ins - after.ins, upd: later.upd - after.upd }).toEqual({ ins: 0, upd: 40 });
  });

  it("decided by two batches at once: the later batch runs again and sees the first one's calls", async () => {
    const tag = '#race';
    const p = makeFullPolicy({ number: [rule('number', 3, 3_600_000, false, tag)] });
    const dp = decisionPolicy(p);
    const pools = Array.from({ length: 4 }, () => createPool({ url: db.url, max: 2 }));
    extraPools.push(...pools);
    const e164 = '+16465559999';
    const req = { hash: `r${tag}:${e164}`, region: 'US', masked: '+1646•••', allowlisted: false, counters: [] };
    // 8 batches of 2 for one brand-new number, all at once: exactly 3 are allowed.
    const out = (await Promise.all(Array.from({ length: 8 }, (_, i) => decideBatch(pools[i % 4]!, [req, req], dp)))).flat();
    expect(out.filter((o) => o.allowed).length).toBe(3);
    const peek = await peekState(pool, [req.hash], []);
    expect(peek.numbers.get(req.hash)!.log).toHaveLength(3);
  });

  it('the same race in batches of several numbers (the set-based write): the later batch runs again', async () => {
    const tag = '#race-set';
    const p = makeFullPolicy({ number: [rule('number', 3, 3_600_000, false, tag)] });
    const dp = decisionPolicy(p);
    const pools = Array.from({ length: 4 }, () => createPool({ url: db.url, max: 2 }));
    extraPools.push(...pools);
    const one = (e164: string) => ({ hash: `r${tag}:${e164}`, region: 'US', masked: '+1646•••', allowlisted: false, counters: [] });
    const req = one('+16465559998');
    // 8 batches, each the shared brand-new number and one of its own, all at once: exactly 3 are allowed.
    const out = await Promise.all(Array.from({ length: 8 }, (_, i) => decideBatch(pools[i % 4]!, [req, one(`+1646555900${i}`)], dp)));
    expect(out.filter((o) => o[0]!.allowed).length).toBe(3);
    expect(out.every((o) => o[1]!.allowed)).toBe(true);
    const peek = await peekState(pool, [req.hash], []);
    expect(peek.numbers.get(req.hash)!.log).toHaveLength(3);
  });
});

describe('concurrency', () => {
  it('a global limit of 50 under 400 concurrent consumes over distinct numbers from 4 pools admits 49..50', async () => {
    const tag = '#conc-global';
    const p = makeFullPolicy({ number: [rule('number', 2, 3_600_000, false, tag)], global: [rule('global', 50, 3_600_000, false, tag)] });
    const dp = decisionPolicy(p);
    const pools = Array.from({ length: 4 }, () => createPool({ url: db.url, max: 5 }));
    extraPools.push(...pools);
    let next = 0;
    const batches: DecideRequest[][] = [];
    while (next < 400) {
      const size = Math.min(400 - next, 1 + (next % 7));
      batches.push(
        Array.from({ length: size }, () => {
          const e164 = `+1202555${String(next++).padStart(4, '0')}`;
          return { hash: `g${tag}:${e164}`, region: 'US', masked: e164.slice(0, 5), allowlisted: false, counters: applicableCounters(p, e164, 'US') };
        }),
      );
    }
    const out = (await Promise.all(batches.map((b, i) => decideBatch(pools[i % 4]!, b, dp)))).flat();
    const allowed = out.filter((o) => o.allowed).length;
    expect(allowed).toBeGreaterThanOrEqual(49);
    expect(allowed).toBeLessThanOrEqual(50);
    expect(out.filter((o) => !o.allowed).every((o) => o.rule === p.global[0]!.id)).toBe(true);
  });

  it('overlapping batches sharing numbers, prefixes and the global counter neither deadlock nor overshoot', async () => {
    const tag = '#conc-mix';
    const p = makeFullPolicy({
      number: [rule('number', 3, 3_600_000, false, tag)],
      prefix: { digits: 3, rules: [rule('prefix', 10, 3_600_000, false, tag)] },
      country: { rules: [rule('country', 1000, 3_600_000, false, tag)], overrides: new Map() },
      global: [rule('global', 40, 3_600_000, false, tag)],
    });
    const dp = decisionPolicy(p);
    const numbers = Array.from({ length: 16 }, (_, i) => `+1303555${String(i * 37).padStart(4, '0')}`);
    const pools = Array.from({ length: 4 }, () => createPool({ url: db.url, max: 4 }));
    extraPools.push(...pools);
    let seed = 11;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
    const batches = Array.from({ length: 120 }, () =>
      Array.from({ length: 1 + rand(12) }, () => {
        const e164 = numbers[rand(numbers.length)]!;
        return { e164, hash: `m${tag}:${e164}`, region: 'US', masked: e164.slice(0, 5), allowlisted: false, counters: applicableCounters(p, e164, 'US') };
      }),
    );
    const out = await Promise.all(batches.map((b, i) => decideBatch(pools[i % 4]!, b, dp).then((o) => o.map((x, j) => ({ ...x, req: b[j]! })))));
    const flat = out.flat().filter((o) => o.allowed);
    expect(flat.length).toBeLessThanOrEqual(40);
    expect(flat.length).toBeGreaterThan(0);
    const per = (key: (o: (typeof flat)[number]) => string) => {
      const m = new Map<string, number>();
      for (const o of flat) m.set(key(o), (m.get(key(o)) ?? 0) + 1);
      return Math.max(...m.values());
    };
    expect(per((o) => o.req.hash)).toBeLessThanOrEqual(3);
    expect(per((o) => o.req.counters[0]!.key)).toBeLessThanOrEqual(10);
    // And the stored global counter holds exactly the admitted calls.
    const peek = await peekState(pool, [], [{ rule: p.global[0]!, key: '*' }]);
    const g = peek.counters.get(counterMapKey(p.global[0]!.id, '*'))!;
    expect(g.n.reduce((a, b) => a + b, 0)).toBe(flat.length);
  });
});

describe('ratelimit_record_v2 (catching up after an outage)', () => {
  it('keeps every allowed call inside the window, even beyond N, and counts them in the counters', async () => {
    const tag = '#record';
    const p = makeFullPolicy({ number: [rule('number', 2, 3_600_000, false, tag)], global: [rule('global', 100, 3_600_000, false, tag)] });
    const dp = decisionPolicy(p);
    const e164 = '+14155550999';
    const counters = applicableCounters(p, e164, 'US');
    const base = { hash: `r${tag}`, region: 'US', masked: '+1415•••', counters };
    const [first] = await decideBatch(pool, [{ ...base, allowlisted: false }], dp);
    const t = first!.atMs;
    // Two daemons each allowed 2 while the database was away: 5 calls in the window.
    // ...and denied two: one by its number rule, one by the global budget (that one is the counter's).
    await recordDecisions(
      pool,
      [t + 10, t + 20, t + 30, t + 40]
        .map((at): DecisionEvent => ({ ...base, atMs: at, allowed: true }))
        .concat([
          { ...base, atMs: t + 50, allowed: false, rule: p.number[0]!.id },
          { ...base, atMs: t + 60, allowed: false, rule: p.global[0]!.id },
        ]),
      dp,
    );
    const peek = await peekState(pool, [base.hash], counters);
    expect(peek.numbers.get(base.hash)!.log).toEqual([t, t + 10, t + 20, t + 30, t + 40]);
    const g = peek.counters.get(counterMapKey(p.global[0]!.id, '*'))!;
    expect(g.n.reduce((a, b) => a + b, 0)).toBe(5);
    const row = await pool.query('SELECT call_count, denied_total FROM phone_rate_limits WHERE phone_hash = $1', [base.hash]);
    expect(row.rows[0]).toEqual({ call_count: 5, denied_total: 2 });
    const counter = await pool.query('SELECT denied_total FROM rate_limit_counters WHERE rule_id = $1', [p.global[0]!.id]);
    expect(counter.rows[0]).toEqual({ denied_total: 1 });
    // And the next consume is denied (over the limit), naming when the second-newest leaves.
    const [next] = await decideBatch(pool, [{ ...base, allowlisted: false }], dp);
    expect(next).toMatchObject({ allowed: false, rule: p.number[0]!.id });
  });
});

describe('ratelimit_record_v2 and new numbers', () => {
  it('writes a new number once and merges into an existing one in place', async () => {
    const tag = '#record-once';
    const p = makeFullPolicy({ number: [rule('number', 2, 3_600_000, false, tag)] });
    const dp = decisionPolicy(p);
    const one = createPool({ url: db.url, max: 1 });
    extraPools.push(one);
    const stats = async () => {
      await one.query('SELECT pg_stat_force_next_flush()');
      const { rows } = await one.query<{ ins: string; upd: string; dead: string }>(
        `SELECT n_tup_ins AS ins, n_tup_upd AS upd, n_dead_tup AS dead FROM pg_stat_user_tables WHERE relname = 'phone_rate_limits'`,
      );
      return { ins: Number(rows[0]!.ins), upd: Number(rows[0]!.upd), dead: Number(rows[0]!.dead) };
    };
    const ev = (i: number, atMs: number, allowed: boolean) => ({ hash: `o${tag}:${i}`, region: 'US', masked: '+1•••', atMs, allowed, counters: [] });
    const before = await stats();
    await recordDecisions(one, [ev(1, 1000, true), ev(1, 2000, true), ev(1, 3000, true), ev(2, 1500, false), ev(3, 1700, true)], dp);
    const after = await stats();
    expect({ ins: after.ins - before.ins, upd: after.upd - before.upd, dead: after.dead - before.dead }).toEqual({ ins: 3, upd: 0, dead: 0 });
    await recordDecisions(one, [ev(1, 4000, true), ev(2, 4100, false)], dp);
    const later = await stats();
    expect({ ins: later.ins - after.ins, upd: later.upd - after.upd }).toEqual({ ins: 0, upd: 2 });
    const { rows } = await one.query(
      `SELECT phone_hash, calls, call_count, denied_total, denied_in_window, last_call_at FROM phone_rate_limits WHERE phone_hash LIKE $1 ORDER BY phone_hash`,
      [`o${tag}:%`],
    );
    expect(rows).toEqual([
      // Every allowed call is kept, beyond the limit of 2.
      { phone_hash: `o${tag}:1`, calls: [1000, 2000, 3000, 4000], call_count: 4, denied_total: 0, denied_in_window: 0, last_call_at: 4000 },
      { phone_hash: `o${tag}:2`, calls: [], call_count: 0, denied_total: 2, denied_in_window: 2, last_call_at: null },
      { phone_hash: `o${tag}:3`, calls: [1700], call_count: 1, denied_total: 0, denied_in_window: 0, last_call_at: 1700 },
    ]);
  });
});

describe('migration 006', () => {
  it('applies on a database with rows from 001-005, keeps them counting, and re-runs idempotently', async () => {
    const old = await createTestDatabase();
    const p = createPool({ url: old.url, max: 2 });
    try {
      const all = await loadMigrations();
      const six = all.findIndex((m) => m.name === 'policy_engine');
      expect(six).toBe(5);
      await migrate(p, all.slice(0, six), []);
      // A row as 001-005's ratelimit_consume left it: two calls in the hour and one denial.
      const req = { hash: 'legacy-hash', region: 'US', masked: '+1415•••' };
      const t = Date.now();
      await p.query(
        `INSERT INTO phone_rate_limits (phone_hash, region, phone_masked, calls, call_count, window_start, last_call_at,
                                        denied_total, denied_in_window, denied_window_start, last_denied_at)
         VALUES ($1, $2, $3, $4, 2, $5, $6, 1, 1, $7, $7)`,
        [req.hash, req.region, req.masked, [t - 2_000, t - 1_000], t - 2_000, t - 1_000, t - 500],
      );
      await migrate(p);
      const { rows } = await p.query('SELECT cardinality(calls) AS n, blocked_until, denials, denied_total FROM phone_rate_limits WHERE phone_hash = $1', [
        req.hash,
      ]);
      expect(rows[0]).toEqual({ n: 2, blocked_until: null, denials: [], denied_total: 1 });
      // ratelimit_decide_v3 sees the old rows' calls.
      const dp = decisionPolicy(makeFullPolicy({ number: [rule('number', 2, 3_600_000)] }));
      const [d] = await decideBatch(p, [{ ...req, allowlisted: false, counters: [] }], dp);
      expect(d).toMatchObject({ allowed: false, rule: 'number:3600000ms' });
      // 006 re-runs idempotently (every statement IF NOT EXISTS / OR REPLACE); then the current
      // sources are applied again over its copies.
      await p.query(all[six]!.sql);
      await p.query(all[six]!.sql);
      await p.query('DELETE FROM ratelimit_functions');
      await migrate(p);
      const changes = await p.query('SELECT name, version FROM rate_limit_changes ORDER BY name');
      expect(changes.rows).toEqual([
        { name: 'lists', version: 0 },
        { name: 'policy', version: 0 },
      ]);
    } finally {
      await p.end();
      await old.drop();
    }
  });
});

// ratelimit_decide_v3 reads and writes the number of a single-number batch (a lone decision, or
// every request for one number) by key, any other batch set-based: both must leave the same
// rows and give the same decisions.
describe('ratelimit_decide_v3: single-number batches and mixed batches agree', () => {
  it('a number decided alone and its twin decided beside another number end with equal rows and decisions (property)', async () => {
    const stepsArb = fc.array(
      fc.record({
        count: fc.integer({ min: 1, max: 3 }),
        allowlisted: fc.integer({ min: 0, max: 9 }).map((x) => x === 0),
        advanceMs: fc.integer({ min: 0, max: 40 }).map((x) => x * 10),
      }),
      { minLength: 1, maxLength: 25 },
    );
    await fc.assert(
      fc.asyncProperty(stepsArb, fc.boolean(), async (steps, withBlocks) => {
        const { tag, baseMs } = freshRun();
        const p = makeFullPolicy({
          number: [rule('number', 3, 300, false, tag), rule('number', 5, 2_000, false, tag), rule('number', 2, 100, true, tag)],
          blockAfter: { denials: 2, withinMs: 500, forMs: withBlocks ? undefined : 400 },
          prefix: { digits: 4, rules: [rule('prefix', 4, 250, false, tag)] },
          sweep: { digits: 4, rules: [rule('sweep', 2, 300, false, tag, 'prefix')] },
          blocks: withBlocks ? { escalateMs: [200, 600], escalate: ['200ms', '600ms'], decayMs: 1_000 } : undefined,
        });
        const dp = decisionPolicy(p);
        // X alone; its twin Y (another range) beside Z (a third range), so Y's batches are never single-number.
        const req = (e164: string, allowlisted: boolean): DecideRequest => ({
          hash: `h${tag}:${e164}`,
          region: 'US',
          masked: e164.slice(0, 5) + '•••',
          allowlisted,
          safe: allowlisted,
          counters: applicableCounters(p, e164, 'US', { conversion: CONVERSION_IDLE, safe: allowlisted }),
        });
        const [X, Y, Z] = ['+14155550101', '+12125550101', '+13105550101'];
        let now = baseMs;
        for (const step of steps) {
          now += step.advanceMs;
          const xs = await decideBatch(
            pool,
            Array.from({ length: step.count }, () => req(X, step.allowlisted)),
            dp,
            now,
          );
          const ys = await decideBatch(pool, [req(Z, false), ...Array.from({ length: step.count }, () => req(Y, step.allowlisted))], dp, now);
          expect(ys.slice(1).map((o) => ({ ...o, rule: o.rule, blockedBy: o.blockedBy?.replace('+1212', '+1415') ?? null }))).toEqual(
            xs.map((o) => ({ ...o, blockedBy: o.blockedBy ?? null })),
          );
        }
        const { rows } = await pool.query(
          `SELECT phone_hash, calls, call_count, window_start, last_call_at, denied_total, denied_in_window, denied_window_start,
                  last_denied_at, blocked_until, block_level, denials, region
             FROM phone_rate_limits WHERE phone_hash = ANY ($1) ORDER BY phone_hash DESC`,
          [[`h${tag}:${X}`, `h${tag}:${Y}`]],
        );
        expect(rows).toHaveLength(2);
        expect({ ...rows[0], phone_hash: null }).toEqual({ ...rows[1], phone_hash: null });
        const counters = await pool.query(
          `SELECT rule_id, key, bucket_ts, bucket_n, denied_total, last_at, blocked_until, block_level FROM rate_limit_counters
            WHERE rule_id LIKE $1 AND key IN ('+1415', '+1212') ORDER BY rule_id, key DESC`,
          [`%${tag}`],
        );
        for (let i = 0; i < counters.rows.length; i += 2) {
          expect({ ...counters.rows[i], key: null }).toEqual({ ...counters.rows[i + 1], key: null });
        }
      }),
      { numRuns: 25 },
    );
  });
});

// v0.1.0's daemons keep calling ratelimit_decide_v2 during a rolling upgrade, on the same rows as
// this release's ratelimit_decide_v3: the two must decide alike and leave the same rows. The
// same batches run through each on its own database.
describe('ratelimit_decide_v2 (v0.1.0) and ratelimit_decide_v3 decide alike', () => {
  let other: { url: string; drop(): Promise<void> };
  let v2Pool: Pool;
  beforeAll(async () => {
    other = await createTestDatabase();
    v2Pool = createPool({ url: other.url, max: 2 });
    await migrate(v2Pool);
  });
  afterAll(async () => {
    await v2Pool.end();
    await other.drop();
  });
  const rows = (via: Pool, tag: string) =>
    via.query(
      `SELECT phone_hash, calls, call_count, window_start, last_call_at, denied_total, denied_in_window, denied_window_start,
              last_denied_at, blocked_until, block_level, denials, region, phone_masked
         FROM phone_rate_limits WHERE phone_hash LIKE $1 ORDER BY phone_hash`,
      [`h${tag}:%`],
    );
  const counters = (via: Pool, tag: string) =>
    via.query(
      `SELECT rule_id, key, bucket_ts, bucket_n, denied_total, last_at, blocked_until, block_level FROM rate_limit_counters
        WHERE rule_id LIKE $1 ORDER BY rule_id, key`,
      [`%${tag}`],
    );

  it('lone decisions under one counter (a global budget, or a sweep rule with blocks): counts, denials and range blocks alike (property)', async () => {
    const stepsArb = fc.array(fc.record({ n: fc.integer({ min: 0, max: 3 }), advanceMs: fc.integer({ min: 0, max: 30 }).map((x) => x * 10) }), {
      minLength: 1,
      maxLength: 30,
    });
    await fc.assert(
      fc.asyncProperty(fc.boolean(), stepsArb, async (sweep, steps) => {
        const { tag, baseMs } = freshRun();
        const p = sweep
          ? makeFullPolicy({
              number: [rule('number', 2, 200, false, tag)],
              sweep: { digits: 4, rules: [rule('sweep', 2, 300, false, tag, 'prefix')] },
              blocks: { escalateMs: [100, 400], escalate: ['100ms', '400ms'], decayMs: 1_000 },
            })
          : makeFullPolicy({ number: [rule('number', 2, 200, false, tag)], global: [rule('global', 3, 250, false, tag)] });
        const dp = decisionPolicy(p);
        let now = baseMs;
        for (const step of steps) {
          now += step.advanceMs;
          // Four numbers of one range: the sweep rule (2 distinct) denies and blocks the range.
          const e164 = `+1415555010${step.n}`;
          const reqs: DecideRequest[] = [
            {
              hash: `h${tag}:${e164}`,
              region: 'US',
              masked: '+1415•••',
              allowlisted: false,
              counters: applicableCounters(p, e164, 'US', { conversion: CONVERSION_IDLE }),
            },
          ];
          expect(await decideBatch(pool, reqs, dp, now)).toEqual(await decideBatchV2(v2Pool, reqs, dp, now));
        }
        expect((await rows(pool, tag)).rows).toEqual((await rows(v2Pool, tag)).rows);
        expect((await counters(pool, tag)).rows).toEqual((await counters(v2Pool, tag)).rows);
      }),
      { numRuns: 30 },
    );
  });

  it('over random policies with every group, decision by decision, rows and counters alike (property)', async () => {
    await fc.assert(
      fc.asyncProperty(guardPolicyArb, batchesArb, async (mk, batches) => {
        const { tag, baseMs } = freshRun();
        const { p, conversion } = mk(tag);
        const dp = decisionPolicy(p);
        let now = baseMs;
        for (const b of batches) {
          now += b.advanceMs;
          const reqs = b.reqs.map((r) => requestFor(p, tag, r, conversion));
          const v3 = await decideBatch(pool, reqs, dp, now);
          const v2 = await decideBatchV2(v2Pool, reqs, dp, now);
          expect(v3).toEqual(v2);
        }
        expect((await rows(pool, tag)).rows).toEqual((await rows(v2Pool, tag)).rows);
        expect((await counters(pool, tag)).rows).toEqual((await counters(v2Pool, tag)).rows);
      }),
      { numRuns: 40 },
    );
  });
});
