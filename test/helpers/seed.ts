// The one way tests put decisions in the database: through the daemon's own function
// (ratelimit_decide_v3 via decideBatch), with a number-only policy. Also the pure model of the same
// decision (decideConsume) for a single log, for tests that compare the two.

import type { Pool } from '../../src/db/pool.js';
import { decideBatch } from '../../src/db/decisions.js';
import { decideConsume, decisionPolicy, EMPTY_NUMBER, type DecisionPolicy } from '../../src/core/policy/decide.js';
import type { Decision, LogPolicy } from '../../src/core/policy/log.js';
import type { LimitRule } from '../../src/core/policy/types.js';

export interface SeedRequest {
  hash: string;
  region: string | undefined;
  masked: string;
}

export interface SeedOutcome {
  allowed: boolean;
  /** The decision instant (database clock). */
  atMs: number;
  /** The number's call log right after this request, ascending. */
  log: number[];
}

/** A number-only decision policy from a log policy's rules (ids kept). */
export function numberOnly(policy: Pick<LogPolicy, 'rules'>): DecisionPolicy {
  const rules: LimitRule[] = policy.rules.map((r) => ({
    id: r.id,
    group: 'number',
    limit: r.limit,
    windowMs: r.windowMs,
    window: `${r.windowMs}ms`,
    shadow: false,
  }));
  return decisionPolicy({ number: rules, blockAfter: undefined });
}

/**
 * Consumes for these numbers in one batch, in order, as the daemon decides them. `nowMs`
 * replaces the database clock. Logs are returned whole: keep limits at 16 or less.
 */
export async function seedConsumes(pool: Pool, requests: readonly SeedRequest[], policy: Pick<LogPolicy, 'rules'>, nowMs?: number): Promise<SeedOutcome[]> {
  const out = await decideBatch(
    pool,
    requests.map((r) => ({ ...r, allowlisted: false, counters: [] })),
    numberOnly(policy),
    nowMs,
  );
  return out.map((o) => {
    if (o.summary.counts !== null) throw new Error('seedConsumes returns whole logs: use limits of 16 or less');
    return { allowed: o.allowed, atMs: o.atMs, log: [...o.summary.calls] };
  });
}

/** The pure model's consume of one number-only log: its decision, its log after, its instant. */
export function consumeLog(log: readonly number[], nowMs: number, policy: LogPolicy): { decision: Decision; log: number[]; atMs: number } {
  const dp = numberOnly(policy);
  const { result, state } = decideConsume({ number: { ...EMPTY_NUMBER, log }, buckets: [] }, { counters: [], allowlisted: false }, dp, nowMs);
  return { decision: result.number!, log: [...state.number.log], atMs: result.atMs };
}
