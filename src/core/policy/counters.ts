// Which aggregate counters a number is checked against, in the order the design evaluates them
// (prefix, country, global; within a group, the policy's order). That order decides which rule
// is reported when several would deny, so the daemon, the fallback and the SQL must share it.

import { MIN_PREFIX_DIGITS, UNKNOWN_REGION, type AggregateCounter, type Policy } from './types.js';

/** The global group's one key. */
export const GLOBAL_KEY = '*';

/**
 * `+14155552671` with 3 digits -> `+14155552`: the range of 1,000 numbers it belongs to. Never
 * fewer than MIN_PREFIX_DIGITS left out, whatever a policy stored by an older release says: the
 * key is stored in the clear and must not narrow a number below 1,000 candidates. Keeps at least
 * "+" and one digit, so a (hypothetical) number shorter than the range width still lands in a
 * range rather than in one key shared with every other short number.
 */
export function prefixKey(e164: string, digits: number): string {
  return e164.slice(0, Math.max(2, e164.length - Math.max(digits, MIN_PREFIX_DIGITS)));
}

export function applicableCounters(policy: Pick<Policy, 'prefix' | 'country' | 'global'>, e164: string, region: string | undefined): AggregateCounter[] {
  const out: AggregateCounter[] = [];
  if (policy.prefix) {
    const key = prefixKey(e164, policy.prefix.digits);
    for (const rule of policy.prefix.rules) out.push({ rule, key });
  }
  if (policy.country) {
    const key = region ?? UNKNOWN_REGION;
    // A region with an override uses only its override list, never the default one as well.
    const rules = policy.country.overrides.get(key) ?? policy.country.rules;
    for (const rule of rules) out.push({ rule, key });
  }
  for (const rule of policy.global) out.push({ rule, key: GLOBAL_KEY });
  return out;
}

/** One string per (rule id, key), for maps of counters (rule ids never contain a NUL). */
export function counterMapKey(ruleId: string, key: string): string {
  return `${ruleId}\u0000${key}`;
}
