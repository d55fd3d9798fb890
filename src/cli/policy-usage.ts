// What `ratelimit stats` and `top` report against: the effective policy (the database's active
// one, else the RATE_LIMIT_* default; the same one the daemons enforce), its number rules as the
// call-log policy, its aggregate rules' busiest keys, and the fleet's denials by reason in the
// window. Shared so the two commands can never disagree about a limit.
import type { Pool } from '../db/pool.js';
import { readEffectivePolicy } from '../db/policies.js';
import { readAggregateUsage, type AggregateRuleRef } from '../db/stats.js';
import { readDecisionCounts, type DecisionCounts } from '../db/decision-counts.js';
import { makeLogPolicy, type LogPolicy } from '../core/policy/log.js';
import { aggregateRules } from '../core/policy/rules.js';
import type { GroupName, LimitRule, Policy } from '../core/policy/types.js';

// The window reported when the policy has no number rule and no aggregate rule either.
const FALLBACK_WINDOW_MS = 3_600_000;
const MASK = '•';

export interface AggregateUsage {
  ruleId: string;
  group: GroupName;
  /** What the operator sees for the key: `+1415555•••`, `US`, `*`. Never a whole number. */
  label: string;
  used: number;
  limit: number;
  shadow: boolean;
}

export interface PolicyUsage {
  policy: Policy;
  /** 0: the RATE_LIMIT_* default (no policy applied). */
  version: number;
  /** The number rules as the exact call-log policy; undefined when the policy has none. */
  numberPolicy: LogPolicy | undefined;
  /** The primary number rule's window (else the first aggregate rule's): "the last window". */
  windowMs: number;
  aggregates: AggregateUsage[];
  decisions: DecisionCounts;
}

export function numberPolicyOf(policy: Policy): LogPolicy | undefined {
  return policy.number.length > 0 ? makeLogPolicy(policy.number) : undefined;
}

export { aggregateRules };

/** A prefix key shows the digits it leaves out as dots, so it never reads as a number. */
export function aggregateLabel(policy: Policy, rule: LimitRule, key: string): string {
  return rule.group === 'prefix' ? key + MASK.repeat(policy.prefix?.digits ?? 0) : key;
}

export function windowOf(policy: Policy): number {
  return policy.number[0]?.windowMs ?? aggregateRules(policy)[0]?.windowMs ?? FALLBACK_WINDOW_MS;
}

/**
 * Reads the effective policy, then its aggregates' usage and the window's decision counts.
 * `perRule`: how many keys of each aggregate rule (the closest to their limit first).
 */
export async function readPolicyUsage(pool: Pool, fallback: Policy, perRule: number): Promise<PolicyUsage> {
  const effective = await readEffectivePolicy(pool, fallback);
  const policy = effective.policy;
  const windowMs = windowOf(policy);
  const rules = aggregateRules(policy);
  const refs: AggregateRuleRef[] = rules.map((r) => ({ id: r.id, limit: r.limit, windowMs: r.windowMs }));
  const [usage, decisions] = await Promise.all([
    rules.length > 0 ? readAggregateUsage(pool, refs, perRule) : Promise.resolve({ rows: [] }),
    readDecisionCounts(pool, windowMs),
  ]);
  const byId = new Map(rules.map((r) => [r.id, r]));
  const aggregates = usage.rows.flatMap((row): AggregateUsage[] => {
    const rule = byId.get(row.ruleId);
    if (!rule) return [];
    return [{ ruleId: rule.id, group: rule.group, label: aggregateLabel(policy, rule, row.key), used: row.used, limit: rule.limit, shadow: rule.shadow }];
  });
  // Closest to its limit first, whatever the group: that is what an operator looks for.
  aggregates.sort((a, b) => b.used / b.limit - a.used / a.limit || a.ruleId.localeCompare(b.ruleId) || a.label.localeCompare(b.label));
  return { policy, version: effective.version, numberPolicy: numberPolicyOf(policy), windowMs, aggregates, decisions };
}

/** `ip_rate_limit_exceeded` -> `ip`, `number_blocked` -> `blocked`: short enough for a terminal. */
export function shortReason(reason: string): string {
  if (reason.endsWith('_rate_limit_exceeded')) return reason.slice(0, -'_rate_limit_exceeded'.length);
  if (reason === 'number_blocked') return 'blocked';
  if (reason === 'destination_blocked') return 'destination';
  return reason;
}
