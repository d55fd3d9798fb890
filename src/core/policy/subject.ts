// Which rules of a policy a given number is subject to: the aggregate counters its consume is
// checked against, and whether its destination (country, number type) is denied outright.

import { AUTO_BLOCK_RULE, UNKNOWN_REGION, type NumberType, type Policy } from './types.js';
import { aggregateRules } from './rules.js';

export { applicableCounters as countersFor } from './counters.js';

/**
 * The destination rule that denies a number outright, if any: its country (allow or deny list)
 * first, then its number type. `type` as normalizePhoneWithType() gives it.
 */
export function destinationDenial(policy: Policy, region: string | undefined, type: NumberType | undefined): { rule: string } | undefined {
  const countries = policy.destinations.countries;
  if (countries) {
    const key = region ?? UNKNOWN_REGION;
    const listed = countries.regions.includes(key);
    // An allow list names the countries calls may go to; a number whose country libphonenumber
    // cannot tell (ZZ) is not among them, so it is denied: fail closed, or fictional and
    // unassigned ranges would be a way around the list.
    if (countries.mode === 'allow' ? !listed : listed) return { rule: 'destination:country' };
  }
  if (type !== undefined && policy.destinations.blockTypes.includes(type)) return { rule: `destination:${type}` };
  return undefined;
}

/**
 * Every rule id the policy can report (number, block_after, prefix, country and its overrides,
 * global, conversion, sweep, auto:block, ip, destinations), in decision order. `list:block` is not a policy rule and is not
 * listed: it can be reported whatever the policy.
 */
export function ruleIds(policy: Policy): string[] {
  const ids = policy.number.map((r) => r.id);
  if (policy.blockAfter) ids.push('number:block_after');
  ids.push(...aggregateRules(policy).map((r) => r.id));
  const conversion = policy.conversion;
  ids.push(...(conversion?.prefix?.rules ?? []).map((r) => r.id), ...(conversion?.country?.rules ?? []).map((r) => r.id));
  if (conversion?.country?.baseline) ids.push(conversion.country.baseline.rule.id);
  ids.push(...(policy.sweep?.rules ?? []).map((r) => r.id));
  // Automatic blocks are made on ranges by enforcing sweep and conversion.prefix rules.
  const rangeRules = [...(policy.sweep?.rules ?? []), ...(conversion?.prefix?.rules ?? [])];
  if (policy.blocks && rangeRules.some((r) => !r.shadow)) ids.push(AUTO_BLOCK_RULE);
  ids.push(...policy.ip.map((r) => r.id));
  if (policy.destinations.countries) ids.push('destination:country');
  ids.push(...policy.destinations.blockTypes.map((t) => `destination:${t}`));
  return ids;
}
