// Which rules of a policy a given number is subject to: the aggregate counters its consume is
// checked against, and whether its destination (country, number type) is denied outright.

import { parsePhoneNumber } from 'libphonenumber-js/max';
import { NUMBER_TYPES, UNKNOWN_REGION, type NumberType, type Policy } from './types.js';

const KNOWN_TYPES: ReadonlySet<string> = new Set(NUMBER_TYPES);

export { applicableCounters as countersFor } from './counters.js';

/**
 * The destination rule that denies a number outright, if any: its country (allow or deny list)
 * first, then its number type. `type` as numberType() gives it.
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
 * libphonenumber's type for the number (`PREMIUM_RATE` -> `premium_rate`), or undefined when it
 * cannot tell (not a valid number of its country, e.g. fictional +1555… numbers).
 */
export function numberType(e164: string): NumberType | undefined {
  let type: string | undefined;
  try {
    type = parsePhoneNumber(e164).getType();
  } catch {
    return undefined;
  }
  const name = type?.toLowerCase();
  return name !== undefined && KNOWN_TYPES.has(name) ? (name as NumberType) : undefined;
}

/**
 * Every rule id the policy can report (number, block_after, prefix, country and its overrides,
 * global, ip, destinations), in decision order. `list:block` is not a policy rule and is not
 * listed: it can be reported whatever the policy.
 */
export function ruleIds(policy: Policy): string[] {
  const ids = policy.number.map((r) => r.id);
  if (policy.blockAfter) ids.push('number:block_after');
  ids.push(...(policy.prefix?.rules ?? []).map((r) => r.id));
  ids.push(...(policy.country?.rules ?? []).map((r) => r.id));
  for (const list of policy.country?.overrides.values() ?? []) ids.push(...list.map((r) => r.id));
  ids.push(...policy.global.map((r) => r.id), ...policy.ip.map((r) => r.id));
  if (policy.destinations.countries) ids.push('destination:country');
  ids.push(...policy.destinations.blockTypes.map((t) => `destination:${t}`));
  return ids;
}
