// Typed access to the policy engine's SQL (src/db/functions/decide_v3.sql, record_v2.sql): the
// only code that knows the argument arrays of ratelimit_decide_v3 and ratelimit_record_v2. Their
// decisions equal decideConsume in src/core/policy/decide.ts request by request. It is longer
// than 350 lines because the statements' argument arrays and the cutting of v3's flat reply
// belong in one place, beside the peek that reads the same rows.

import type { Pool } from './pool.js';
import { NOW_MS } from './clock.js';
import { SQLSTATE } from './errors.js';
import { bucketCalls } from '../core/policy/aggregate.js';
import { counterMapKey } from '../core/policy/counters.js';
import { counterKind } from '../core/policy/types.js';
import type { DecisionPolicy, NumberState } from '../core/policy/decide.js';
import type { AggregateCounter, Buckets } from '../core/policy/types.js';
import { summaryRunLengths, type LogSummary } from '../core/policy/log-summary.js';
import type { RuleState } from '../core/policy/log.js';

export interface DecideRequest {
  hash: string;
  region: string | undefined;
  /** e.g. +14155552•••: what dashboards show; the clear number never reaches the database. */
  masked: string;
  allowlisted: boolean;
  /** Safe (DecideInput.safe): block_after never blocks it, automatic range blocks never deny it. */
  safe?: boolean | undefined;
  /** applicableCounters() for this number, in evaluation order. */
  counters: readonly AggregateCounter[];
}

export interface DecideOutcome {
  allowed: boolean;
  /** The decision instant (database clock). */
  atMs: number;
  /**
   * Each number rule's state right after this request (policy.number.rules order): what the
   * reply's number view and the deny cache are computed from (evaluateStates).
   */
  rules: RuleState[];
  /** The number's log right after this request, summarized for the in-memory fallback (log-summary.ts). */
  summary: LogSummary;
  /** The denying rule's id, null when allowed. */
  rule: string | null;
  /** Shadow rules that would have denied. */
  shadow: string[];
  /** When an aggregate denied: its count and when one more call fits. */
  aggregateUsed: number | null;
  aggregateResetTime: number | null;
  /** The number is blocked (block_after) until then, or null. */
  blockedUntil: number | null;
  /** For rule `auto:block`: the rule id of the counter whose range block denied (DecideResult.blockedBy). */
  blockedBy: string | null;
}

/** ratelimit_decide_v3's one row: flat arrays, per request or cut per request (decide_v3.sql, REPLY). */
interface DecideRow {
  r_allowed: boolean[];
  r_at: number[];
  r_rule: (string | null)[] | null;
  r_shadow: string[];
  r_shadow_ends: number[] | null;
  r_used: number[];
  r_reset: number[];
  r_log_len: number[];
  r_calls: number[];
  r_agg_used: (number | null)[] | null;
  r_agg_reset: (number | null)[] | null;
  r_blocked_until: (number | null)[] | null;
  r_blocked_by: (string | null)[] | null;
}

function numberArrays(policy: DecisionPolicy) {
  const rules = policy.number.rules;
  return [rules.map((r) => r.id), rules.map((r) => r.limit), rules.map((r) => r.windowMs), rules.map((r) => r.shadow)] as const;
}

/** block_after's denials, within and `for` (with a `blocks` group a cap on each step; 0: no cap). */
function blockAfterArgs(policy: DecisionPolicy): [number, number, number] {
  const b = policy.blockAfter;
  return b ? [b.denials, b.withinMs, b.forMs ?? 0] : [0, 0, 0];
}

/** blocks.escalate and decay; no steps without a `blocks` group. */
function blocksArgs(policy: DecisionPolicy): [readonly number[], number] {
  return policy.blocks ? [policy.blocks.escalateMs, policy.blocks.decayMs] : [[], 0];
}

/**
 * Decides a batch of consumes in one statement (one round trip, one commit), in array order:
 * each request sees every one before it, for its number and for the counters it shares.
 * `nowMs` replaces the database clock; tests only (production leaves it undefined).
 */
export async function decideBatch(pool: Pool, requests: readonly DecideRequest[], policy: DecisionPolicy, nowMs?: number): Promise<DecideOutcome[]> {
  if (requests.length === 0) return [];
  const query = decideQuery(requests, policy, nowMs);
  const row = (await withRetryOnRace(() => pool.query<DecideRow>(query)))[0];
  if (!row || row.r_allowed?.length !== requests.length) {
    throw new Error(`ratelimit_decide_v3 returned ${row?.r_allowed?.length ?? 0} decisions for ${requests.length} requests`);
  }
  return decideOutcomes(row, policy.number.rules.length);
}

/** Cuts ratelimit_decide_v3's flat arrays into one outcome per request. */
function decideOutcomes(row: DecideRow, ruleCount: number): DecideOutcome[] {
  const out = new Array<DecideOutcome>(row.r_allowed.length);
  let callsAt = 0;
  for (let i = 0; i < out.length; i++) {
    const rules = new Array<RuleState>(ruleCount);
    for (let r = 0; r < ruleCount; r++) rules[r] = { used: row.r_used[i * ruleCount + r]!, resetTime: row.r_reset[i * ruleCount + r]! };
    // summarizeLog()'s runs (src/core/policy/log-summary.ts), from the log's length.
    const len = row.r_log_len[i]!;
    const counts = summaryRunLengths(len);
    const runs = counts?.length ?? len;
    const calls = row.r_calls.slice(callsAt, callsAt + runs);
    callsAt += runs;
    const shadowEnds = row.r_shadow_ends;
    out[i] = {
      allowed: row.r_allowed[i]!,
      atMs: row.r_at[i]!,
      rules,
      summary: { calls, counts },
      rule: row.r_rule?.[i] ?? null,
      shadow: shadowEnds ? row.r_shadow.slice(i === 0 ? 0 : shadowEnds[i - 1], shadowEnds[i]) : [],
      aggregateUsed: row.r_agg_used?.[i] ?? null,
      aggregateResetTime: row.r_agg_reset?.[i] ?? null,
      blockedUntil: row.r_blocked_until?.[i] ?? null,
      blockedBy: row.r_blocked_by?.[i] ?? null,
    };
  }
  return out;
}

/** ratelimit_decide_v3's statement for a batch (exported for bench/sql-decide.ts, which measures its reply). */
export function decideQuery(requests: readonly DecideRequest[], policy: DecisionPolicy, nowMs?: number) {
  // Each counter once (the SQL reads and writes each row once) as its rule's index and its key,
  // each counter rule's settings once, and per request the indexes of the counters that apply,
  // in evaluation order.
  const entries = { req: [] as number[], counter: [] as number[] };
  const k = { index: new Map<string, number>(), rule: [] as number[], key: [] as string[] };
  const cr = {
    index: new Map<string, number>(),
    id: [] as string[],
    limit: [] as number[],
    window: [] as number[],
    bucket: [] as number[],
    shadow: [] as boolean[],
    kind: [] as string[],
  };
  requests.forEach((r, i) => {
    for (const counter of r.counters) {
      const id = counterMapKey(counter.rule.id, counter.key);
      let at = k.index.get(id);
      if (at === undefined) {
        // By id and limit: a baseline rule has one id and a limit per country (applicableCounters).
        const ruleKey = `${counter.rule.limit}/${counter.rule.windowMs}/${counter.rule.id}`;
        let ruleAt = cr.index.get(ruleKey);
        if (ruleAt === undefined) {
          ruleAt = cr.id.push(counter.rule.id);
          cr.index.set(ruleKey, ruleAt);
          cr.limit.push(counter.rule.limit);
          cr.window.push(counter.rule.windowMs);
          cr.bucket.push(bucketCalls(counter.rule));
          cr.shadow.push(counter.rule.shadow);
          cr.kind.push(counterKind(counter.rule.group));
        }
        at = k.rule.push(ruleAt);
        k.index.set(id, at);
        k.key.push(counter.key);
      }
      entries.req.push(i + 1);
      entries.counter.push(at);
    }
  });
  const [ids, limits, windows, shadows] = numberArrays(policy);
  const [blockDenials, blockWithinMs, blockForMs] = blockAfterArgs(policy);
  const [blockStepsMs, blockDecayMs] = blocksArgs(policy);
  // In DECIDE_ARGUMENTS' order.
  const values = [
    requests.map((r) => r.hash),
    requests.map((r) => r.region ?? null),
    requests.map((r) => r.masked),
    requests.map((r) => r.allowlisted),
    requests.map((r) => r.safe === true),
    ids,
    limits,
    windows,
    shadows,
    blockDenials,
    blockWithinMs,
    blockForMs,
    blockStepsMs,
    blockDecayMs,
    entries.req,
    entries.counter,
    k.rule,
    k.key,
    cr.id,
    cr.limit,
    cr.window,
    cr.bucket,
    cr.shadow,
    cr.kind,
    nowMs ?? null,
  ];
  return { name: 'ratelimit_decide_v3', text: DECIDE_STATEMENT, values };
}

/** ratelimit_decide_v3's arguments by name (src/db/functions/decide_v3.sql explains each). */
const DECIDE_ARGUMENTS = [
  ['p_hashes', 'text[]'],
  ['p_regions', 'text[]'],
  ['p_masked', 'text[]'],
  ['p_allowlisted', 'boolean[]'],
  ['p_safe', 'boolean[]'],
  ['p_rule_ids', 'text[]'],
  ['p_rule_limits', 'int[]'],
  ['p_rule_windows', 'bigint[]'],
  ['p_rule_shadow', 'boolean[]'],
  ['p_block_denials', 'int'],
  ['p_block_within', 'bigint'],
  ['p_block_for', 'bigint'],
  ['p_block_steps', 'bigint[]'],
  ['p_block_decay', 'bigint'],
  ['p_entry_request', 'int[]'],
  ['p_entry_counter', 'int[]'],
  ['p_counter_rule', 'int[]'],
  ['p_counter_keys', 'text[]'],
  ['p_crule_ids', 'text[]'],
  ['p_crule_limits', 'int[]'],
  ['p_crule_windows', 'bigint[]'],
  ['p_crule_bucket_calls', 'int[]'],
  ['p_crule_shadow', 'boolean[]'],
  ['p_crule_kinds', 'text[]'],
  ['p_now', 'bigint'],
] as const;

// Named arguments cost nothing per call: the statement is prepared once per connection.
const DECIDE_STATEMENT = `SELECT * FROM ratelimit_decide_v3(${DECIDE_ARGUMENTS.map(([name, type], i) => `${name} => $${i + 1}::${type}`).join(', ')})`;

/**
 * A number new to the database is only written at the end of its batch (once, with its final
 * state), after the counters are locked. Two ways that can fail, both having written nothing,
 * both fixed by running the batch again (which finds the row and locks it with the others):
 * - two batches decide the same new number at once: the later one fails with 40001;
 * - a replay (ratelimit_record_v2, which creates numbers before it locks counters) created the
 *   number and waits on a counter this batch holds: PostgreSQL aborts one of the two with
 *   40P01 after deadlock_timeout (test/db/lock-order.test.ts builds that cycle).
 */
const RACE_ATTEMPTS = 5;
const RETRIED = new Set<unknown>([SQLSTATE.SERIALIZATION_FAILURE, SQLSTATE.DEADLOCK_DETECTED]);

async function withRetryOnRace<R>(run: () => Promise<{ rows: R[] }>): Promise<R[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await run()).rows;
    } catch (err) {
      if (!RETRIED.has((err as { code?: unknown }).code) || attempt >= RACE_ATTEMPTS) throw err;
    }
  }
}

export interface DecisionEvent {
  hash: string;
  region: string | undefined;
  masked: string;
  atMs: number;
  allowed: boolean;
  /** The counters that apply to the number: an allowed call counts against each of them. */
  counters: readonly AggregateCounter[];
  /** A denial's rule id (DecideResult.rule); when it is one of `counters`, that counter's denied_total grows. */
  rule?: string | null;
}

/** Merges decisions made elsewhere (the in-memory fallback) into numbers and counters. */
export async function recordDecisions(pool: Pool, events: readonly DecisionEvent[], policy: DecisionPolicy): Promise<number> {
  if (events.length === 0) return 0;
  const c = { ev: [] as number[], rule: [] as string[], key: [] as string[], window: [] as number[], bucket: [] as number[], denial: [] as boolean[] };
  events.forEach((e, i) => {
    for (const counter of e.counters) {
      if (!e.allowed && counter.rule.id !== e.rule) continue;
      c.ev.push(i + 1);
      c.rule.push(counter.rule.id);
      c.key.push(counter.key);
      c.window.push(counter.rule.windowMs);
      c.bucket.push(bucketCalls(counter.rule));
      c.denial.push(!e.allowed);
    }
  });
  const [, maxes, windows] = numberArrays(policy);
  const { rows } = await pool.query<{ n: number }>({
    name: 'ratelimit_record_v2',
    text: `SELECT ratelimit_record_v2($1::text[], $2::text[], $3::text[], $4::bigint[], $5::boolean[], $6::int[], $7::bigint[],
             $8::int[], $9::text[], $10::text[], $11::bigint[], $12::int[], $13::boolean[]) AS n`,
    values: [
      events.map((e) => e.hash),
      events.map((e) => e.region ?? null),
      events.map((e) => e.masked),
      events.map((e) => e.atMs),
      events.map((e) => e.allowed),
      maxes,
      windows,
      c.ev,
      c.rule,
      c.key,
      c.window,
      c.bucket,
      c.denial,
    ],
  });
  return rows[0]?.n ?? 0;
}

export interface PolicyPeek {
  /** The database clock. */
  nowMs: number;
  /** Numbers that have a row; the others are EMPTY_NUMBER. */
  numbers: Map<string, NumberState>;
  /** By counterMapKey(); counters without a row have no calls. */
  counters: Map<string, Buckets>;
}

/** Reads the state a `check` is decided on, changing nothing and locking nothing. */
export async function peekState(pool: Pool, hashes: readonly string[], counters: readonly AggregateCounter[]): Promise<PolicyPeek> {
  // One round trip: number rows and counter rows in one result, told apart by `kind`.
  const { rows } = await pool.query<{
    now_ms: number;
    kind: 'n' | 'c' | null;
    a: string;
    b: string | null;
    ts: number[];
    denials: number[] | null;
    n: number[] | null;
    blocked_until: number | null;
    level: number;
  }>({
    name: 'ratelimit_peek_state_v2',
    text: `SELECT ${NOW_MS} AS now_ms, s.* FROM (SELECT 1) AS one LEFT JOIN (
             SELECT 'n' AS kind, phone_hash AS a, NULL AS b, calls AS ts, denials, NULL::int[] AS n, blocked_until, block_level AS level
               FROM phone_rate_limits WHERE phone_hash = ANY($1::text[])
             UNION ALL
             SELECT 'c', c.rule_id, c.key, c.bucket_ts, NULL, c.bucket_n, c.blocked_until, c.block_level
               FROM rate_limit_counters AS c JOIN unnest($2::text[], $3::text[]) AS w(r, k) ON c.rule_id = w.r AND c.key = w.k
           ) AS s ON true`,
    values: [hashes, counters.map((c) => c.rule.id), counters.map((c) => c.key)],
  });
  const numbers = new Map<string, NumberState>();
  const buckets = new Map<string, Buckets>();
  for (const r of rows) {
    if (r.kind === 'n') numbers.set(r.a, { log: r.ts, blockedUntil: r.blocked_until, denials: r.denials ?? [], blockLevel: r.level });
    else if (r.kind === 'c') buckets.set(counterMapKey(r.a, r.b!), counterBuckets(r.ts, r.n ?? [], r.blocked_until, r.level));
  }
  return { nowMs: rows[0]!.now_ms, numbers, counters: buckets };
}

/** A counter row as the model's Buckets: its automatic block when it ever had one. */
export function counterBuckets(ts: number[], n: number[], blockedUntil: number | null, level: number): Buckets {
  return blockedUntil === null ? { ts, n } : { ts, n, block: { untilMs: blockedUntil, level } };
}
