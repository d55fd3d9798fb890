// Which rules of a policy a given number is subject to: the aggregate counters its consume is
// checked against, and whether its destination (country, number type) is denied outright.

import { parsePhoneNumber } from 'libphonenumber-js/max';
import { NUMBER_TYPES, UNKNOWN_REGION, type AggregateCounter, type NumberType, type Policy } from './types.js';

const GLOBAL_KEY = '*';
const KNOWN_TYPES: ReadonlySet<string> = new Set(NUMBER_TYPES);

/**
 * The aggregate counters a consume of `e164` is checked against and counted in, in decision
 * order: prefix, country, global (each group in the policy's order). `region` as
 * normalizePhone gives it (undefined when libphonenumber cannot tell).
 */
export function countersFor(policy: Policy, e164: string, region: string | undefined): AggregateCounter[] {
  const counters: AggregateCounter[] = [];
  if (policy.prefix) {
    // Keep at least "+" and one digit, so a (hypothetical) number shorter than the range width
    // still lands in a range rather than in one key shared with every other short number.
    const keyLength = Math.max(2, e164.length - policy.prefix.digits);
    const key = e164.slice(0, keyLength);
    for (const rule of policy.prefix.rules) counters.push({ rule, key });
  }
  if (policy.country) {
    const key = region ?? UNKNOWN_REGION;
    // A region with an override is held to its override list only, not to the default list too.
    const list = policy.country.overrides.get(key) ?? policy.country.rules;
    for (const rule of list) counters.push({ rule, key });
  }
  for (const rule of policy.global) counters.push({ rule, key: GLOBAL_KEY });
  return counters;
}

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
