// ratelimit_decide_v2 as v0.1.0's daemons call it (src/db/decisions.ts at v0.1.0, its query and
// reply mapping unchanged), for tests that hold v2 and ratelimit_decide_v3 to the same decisions
// and rows: v2 stays in the database for v0.1.0's daemons during a rolling upgrade.
import type { Pool } from '../../src/db/pool.js';
import { bucketCalls } from '../../src/core/policy/aggregate.js';
import { blocksRange, counterMapKey } from '../../src/core/policy/counters.js';
import { counterKind } from '../../src/core/policy/types.js';
import type { DecisionPolicy } from '../../src/core/policy/decide.js';
import type { DecideOutcome, DecideRequest } from '../../src/db/decisions.js';

interface DecideRow {
  r_idx: number;
  r_allowed: boolean;
  r_at: number;
  r_calls: number[];
  r_counts: number[] | null;
  r_rule: string | null;
  r_shadow: string[];
  r_used: number[];
  r_reset: number[];
  r_agg_used: number | null;
  r_agg_reset: number | null;
  r_blocked_until: number | null;
  r_blocked_by: string | null;
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

export async function decideBatchV2(pool: Pool, requests: readonly DecideRequest[], policy: DecisionPolicy, nowMs?: number): Promise<DecideOutcome[]> {
  if (requests.length === 0) return [];
  const query = decideQuery(requests, policy, nowMs);
  const rows = (await pool.query<DecideRow>(query)).rows;
  const out = new Array<DecideOutcome>(requests.length);
  for (const row of rows) {
    out[row.r_idx - 1] = {
      allowed: row.r_allowed,
      atMs: row.r_at,
      rules: row.r_used.map((used, r) => ({ used, resetTime: row.r_reset[r]! })),
      summary: { calls: row.r_calls, counts: row.r_counts },
      rule: row.r_rule,
      shadow: row.r_shadow,
      aggregateUsed: row.r_agg_used,
      aggregateResetTime: row.r_agg_reset,
      blockedUntil: row.r_blocked_until,
      blockedBy: row.r_blocked_by,
    };
  }
  for (let i = 0; i < out.length; i++) {
    if (!out[i]) throw new Error(`ratelimit_decide_v2 returned no decision for request ${i + 1}`);
  }
  return out;
}

function decideQuery(requests: readonly DecideRequest[], policy: DecisionPolicy, nowMs?: number) {
  // Each counter once (the SQL reads and writes each row once), and per request the indexes
  // of the counters that apply, in evaluation order.
  const entries = { req: [] as number[], counter: [] as number[] };
  const k = {
    index: new Map<string, number>(),
    rule: [] as string[],
    key: [] as string[],
    limit: [] as number[],
    window: [] as number[],
    bucket: [] as number[],
    shadow: [] as boolean[],
    kind: [] as string[],
    blocksRange: [] as boolean[],
  };
  requests.forEach((r, i) => {
    for (const counter of r.counters) {
      const id = counterMapKey(counter.rule.id, counter.key);
      let at = k.index.get(id);
      if (at === undefined) {
        at = k.rule.push(counter.rule.id);
        k.index.set(id, at);
        k.key.push(counter.key);
        k.limit.push(counter.rule.limit);
        k.window.push(counter.rule.windowMs);
        k.bucket.push(bucketCalls(counter.rule));
        k.shadow.push(counter.rule.shadow);
        k.kind.push(counterKind(counter.rule.group));
        k.blocksRange.push(blocksRange(counter));
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
    k.limit,
    k.window,
    k.bucket,
    k.shadow,
    k.kind,
    k.blocksRange,
    nowMs ?? null,
  ];
  return { name: 'ratelimit_decide_v2', text: DECIDE_STATEMENT, values };
}

/** ratelimit_decide_v2's arguments by name (src/db/functions/decide_v2.sql explains each). */
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
  ['p_counter_rules', 'text[]'],
  ['p_counter_keys', 'text[]'],
  ['p_counter_limits', 'int[]'],
  ['p_counter_windows', 'bigint[]'],
  ['p_counter_bucket_calls', 'int[]'],
  ['p_counter_shadow', 'boolean[]'],
  ['p_counter_kinds', 'text[]'],
  ['p_counter_blocks_range', 'boolean[]'],
  ['p_now', 'bigint'],
] as const;

// Named arguments cost nothing per call: the statement is prepared once per connection.
const DECIDE_STATEMENT = `SELECT * FROM ratelimit_decide_v2(${DECIDE_ARGUMENTS.map(([name, type], i) => `${name} => $${i + 1}::${type}`).join(', ')})`;
