// Every rule of a policy, in one place: the order is the decision order (number, prefix,
// country's default rules then its overrides, global, conversion's prefix then country rules
// (fixed, then the baseline), sweep, ip), which is also the order rule ids are listed and
// reported in.
import type { LimitRule, Policy } from './types.js';

/** Each group's rule list, in decision order; country's overrides are one list per country. */
export function ruleLists(policy: Policy): (readonly LimitRule[])[] {
  const conversion = policy.conversion;
  const baseline = conversion?.country?.baseline;
  return [
    policy.number,
    policy.prefix?.rules ?? [],
    policy.country?.rules ?? [],
    ...(policy.country?.overrides.values() ?? []),
    policy.global,
    conversion?.prefix?.rules ?? [],
    conversion?.country?.rules ?? [],
    baseline ? [baseline.rule] : [],
    policy.sweep?.rules ?? [],
    policy.ip,
  ];
}

/** Every limit rule of the policy, in decision order. */
export function allRules(policy: Policy): LimitRule[] {
  return ruleLists(policy).flat();
}

/** The aggregate rules (prefix, country and its overrides, global): those kept in counters. */
export function aggregateRules(policy: Policy): LimitRule[] {
  return allRules(policy).filter((r) => r.group === 'prefix' || r.group === 'country' || r.group === 'global');
}
