// Which aggregate counters a number is checked against, in the order the design evaluates them
// (prefix, country, global, then conversion.prefix, conversion.country (fixed rules, then the
// baseline) and sweep; within a group, the policy's order). That order decides which rule is
// reported when several would deny, so the daemon, the fallback and the SQL must share it.

import { counterKind, MIN_PREFIX_DIGITS, UNKNOWN_REGION, type AggregateCounter, type Policy } from './types.js';

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

/** What the daemon knows of the conversion rules at a decision (src/db/outcomes.ts computes it). */
export interface ConversionState {
  /** An outcome was recorded within CONVERSION_ENGAGED_WITHIN_MS: else conversion rules have no counters at all. */
  readonly engaged: boolean;
  /** conversion.country.baseline's limit per region (a region missing here gets the baseline's floor). */
  readonly baselineLimits: ReadonlyMap<string, number>;
}

export const CONVERSION_IDLE: ConversionState = { engaged: false, baselineLimits: new Map() };

export interface CounterOptions {
  /** Conversion rules' state; absent: idle. */
  readonly conversion?: ConversionState | undefined;
  /** A safe number (isSafe(), or allow-listed): no conversion or sweep counters. */
  readonly safe?: boolean | undefined;
}

export function applicableCounters(
  policy: Pick<Policy, 'prefix' | 'country' | 'global'> & Partial<Pick<Policy, 'conversion' | 'sweep'>>,
  e164: string,
  region: string | undefined,
  opts: CounterOptions = {},
): AggregateCounter[] {
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
  if (opts.safe === true) return out;
  const conversion = policy.conversion;
  if (conversion && opts.conversion?.engaged === true) {
    if (conversion.prefix) {
      const key = prefixKey(e164, conversion.prefix.digits);
      for (const rule of conversion.prefix.rules) out.push({ rule, key });
    }
    if (conversion.country) {
      const key = region ?? UNKNOWN_REGION;
      for (const rule of conversion.country.rules) out.push({ rule, key });
      const baseline = conversion.country.baseline;
      if (baseline) {
        const limit = opts.conversion.baselineLimits.get(key);
        out.push({ rule: limit === undefined || limit === baseline.rule.limit ? baseline.rule : { ...baseline.rule, limit }, key });
      }
    }
  }
  if (policy.sweep) {
    const key = prefixKey(e164, policy.sweep.digits);
    for (const rule of policy.sweep.rules) out.push({ rule, key });
  }
  return out;
}

/**
 * Whether a counter's denials block its range automatically (with `blocks`): sweep and
 * conversion.prefix counters, whose keys are ranges (`+1415555`). Country counters never do: a
 * country is not a range.
 */
export function blocksRange(c: AggregateCounter): boolean {
  return counterKind(c.rule.group) !== 'calls' && c.key.startsWith('+');
}

const safeSets = new WeakMap<readonly string[], ReadonlySet<string>>();

/**
 * Whether `e164` starts with one of policy.safe's prefixes. Safe lists hold 1,000+ prefixes, so
 * each of the number's own prefixes is looked up in a set (built once per policy): the cost is
 * the number's length, not the list's.
 */
export function isSafe(policy: Pick<Policy, 'safe'>, e164: string): boolean {
  const prefixes = policy.safe.prefixes;
  if (prefixes.length === 0) return false;
  let set = safeSets.get(prefixes);
  if (!set) {
    set = new Set(prefixes);
    safeSets.set(prefixes, set);
  }
  for (let len = 1; len <= e164.length; len++) if (set.has(e164.slice(0, len))) return true;
  return false;
}

/** One string per (rule id, key), for maps of counters (rule ids never contain a NUL). */
export function counterMapKey(ruleId: string, key: string): string {
  return `${ruleId}\u0000${key}`;
}
