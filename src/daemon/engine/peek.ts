// The check batcher's statement: many checks' numbers and counters read in one snapshot, each
// check then given its own number and buckets. Checks change nothing, so unlike consumes their
// requests need no order among themselves.

import type { Pool } from '../../db/pool.js';
import { peekSnapshot, type NumberPeek } from '../../db/check-snapshot.js';
import { EMPTY_BUCKETS } from '../../core/policy/aggregate.js';
import { counterMapKey } from '../../core/policy/counters.js';
import type { AggregateCounter, Buckets } from '../../core/policy/types.js';
import type { TimedQuery } from '../metrics.js';
import type { ActivePolicy } from '../policy-source.js';

export interface CheckRequest {
  hash: string;
  counters: readonly AggregateCounter[];
}

export interface CheckSnapshot {
  nowMs: number;
  number: NumberPeek;
  buckets: Buckets[];
  /** The policy the statement read the number rules of, for the decision made from it. */
  policy: ActivePolicy;
}

export function peekBatch(pool: Pool, policies: { readonly current: ActivePolicy }, timed: TimedQuery): (reqs: CheckRequest[]) => Promise<CheckSnapshot[]> {
  return async (reqs) => {
    const hashes = [...new Set(reqs.map((r) => r.hash))];
    const counters = new Map<string, AggregateCounter>();
    for (const r of reqs) for (const c of r.counters) counters.set(counterMapKey(c.rule.id, c.key), c);
    // One policy for the whole statement (its number rules' states are read), as for consumes.
    const policy = policies.current;
    const peek = await timed('check', hashes.length, () => peekSnapshot(pool, hashes, [...counters.values()], policy.decision.number.rules));
    return reqs.map((r) => ({
      nowMs: peek.nowMs,
      number: peek.numbers.get(r.hash)!,
      buckets: r.counters.map((c) => peek.counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS),
      policy,
    }));
  };
}
