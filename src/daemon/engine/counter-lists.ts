// applicableCounters() (src/core/policy/counters.ts) for each decision, shared by the numbers of
// one range. A number's counters depend on it only through its region and its range keys
// (prefixKey: its first digits, cut by its length), so every number of a 1,000-number range in
// one region gets the same list: built once and reused, instead of an array, a counter object
// per rule and a sliced key per rule at every request. Separate from the engine because the
// cache's key must cover everything applicableCounters reads, and that is worth checking alone
// (test/daemon/engine/counter-lists.test.ts).

import { applicableCounters, type ConversionState } from '../../core/policy/counters.js';
import { MIN_PREFIX_DIGITS, type AggregateCounter, type Policy } from '../../core/policy/types.js';

// Ranges remembered at most: past this the lists start over (a sweep over more ranges than this
// rebuilds lists as if there were no cache; no entry ever outlives its policy).
const MAX_RANGES = 50_000;

export class CounterLists {
  private policy: Policy | undefined;
  private conversion: ConversionState | undefined;
  private readonly lists = new Map<string, readonly AggregateCounter[]>();

  /** applicableCounters(policy, e164, region, { conversion, safe }), shared within the range. */
  of(policy: Policy, e164: string, region: string | undefined, conversion: ConversionState, safe: boolean): readonly AggregateCounter[] {
    // The conversion state is replaced, never changed in place, when it changes (conversion-state.ts).
    if (policy !== this.policy || conversion !== this.conversion) {
      this.lists.clear();
      this.policy = policy;
      this.conversion = conversion;
    }
    // prefixKey(e164, d) is e164's first max(2, length - d) characters, d >= MIN_PREFIX_DIGITS:
    // so the length and the first max(2, length - MIN_PREFIX_DIGITS) characters decide every
    // range key. A region (two letters, or undefined: \u0001) never holds a NUL, nor does a length.
    const key = `${safe ? 's' : 'n'}${region ?? '\u0001'}\u0000${e164.length}\u0000${e164.slice(0, Math.max(2, e164.length - MIN_PREFIX_DIGITS))}`;
    let list = this.lists.get(key);
    if (list === undefined) {
      if (this.lists.size >= MAX_RANGES) this.lists.clear();
      list = applicableCounters(policy, e164, region, { conversion, safe });
      this.lists.set(key, list);
    }
    return list;
  }
}
