// The engine's per-range cache of applicableCounters (src/daemon/engine/counter-lists.ts) must
// give every number exactly the list applicableCounters gives it: its key has to cover
// everything that function reads (range keys of any width, length, region, safe, the policy and
// the conversion state). Held to it over generated numbers, policies and states, one cache
// across all of them, as the engine uses it.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applicableCounters, type ConversionState } from '../../../src/core/policy/counters.js';
import type { Policy } from '../../../src/core/policy/types.js';
import { CounterLists } from '../../../src/daemon/engine/counter-lists.js';
import { policy as makePolicy, rule } from '../../helpers/policy.js';

function policyWith(prefixDigits: number, sweepDigits: number, conversionDigits: number): Policy {
  return makePolicy({
    prefix: { digits: prefixDigits, rules: [rule('prefix', 50, 3_600_000)] },
    country: { rules: [rule('country', 500, 3_600_000)], overrides: new Map([['GB', [rule('country', 7, 3_600_000, false, '', 'GB')]]]) },
    global: [rule('global', 5_000, 86_400_000)],
    conversion: {
      answeredAtLeastMs: 10_000,
      pendingAfterMs: 900_000,
      prefix: { digits: conversionDigits, rules: [rule('conversion', 5, 3_600_000, false, '', 'prefix')] },
      country: {
        rules: [rule('conversion', 100, 3_600_000, false, '', 'country')],
        baseline: { factor: 0.2, floor: 20, historyMs: 14 * 86_400_000, rule: { ...rule('conversion', 20, 86_400_000), id: 'conversion:country:baseline' } },
      },
    },
    sweep: { digits: sweepDigits, rules: [rule('sweep', 10, 3_600_000, false, '', 'prefix')] },
  });
}

// A few policies and states, fixed objects: the cache is keyed by their identity, as the engine's are.
const POLICIES = [policyWith(3, 3, 3), policyWith(4, 3, 5), policyWith(6, 4, 3), makePolicy({ global: [rule('global', 9, 1_000)] })];
const STATES: ConversionState[] = [
  { engaged: false, baselineLimits: new Map() },
  { engaged: true, baselineLimits: new Map([['US', 37]]) },
  { engaged: true, baselineLimits: new Map([['GB', 3]]) },
];

describe('CounterLists', () => {
  it('gives every number the list applicableCounters gives it', () => {
    const lists = new CounterLists();
    // Short digit strings over few values, so numbers often share (and nearly share) ranges.
    const e164 = fc.tuple(fc.constantFrom('+1', '+44', '+4', '+'), fc.string({ unit: fc.constantFrom('0', '1', '5'), maxLength: 14 })).map(([a, b]) => a + b);
    const call = fc.record({
      p: fc.nat(POLICIES.length - 1),
      c: fc.nat(STATES.length - 1),
      e164,
      region: fc.constantFrom(undefined, 'US', 'GB', 'ZZ'),
      safe: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(call, { minLength: 1, maxLength: 40 }), (calls) => {
        for (const { p, c, e164, region, safe } of calls) {
          const policy = POLICIES[p]!;
          const conversion = STATES[c]!;
          expect(lists.of(policy, e164, region, conversion, safe)).toEqual(applicableCounters(policy, e164, region, { conversion, safe }));
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it('shares one list among the numbers of a range', () => {
    const lists = new CounterLists();
    const [p, c] = [POLICIES[0]!, STATES[0]!];
    expect(lists.of(p, '+14155552671', 'US', c, false)).toBe(lists.of(p, '+14155552999', 'US', c, false));
    expect(lists.of(p, '+14155552671', 'US', c, false)).not.toBe(lists.of(p, '+14155553671', 'US', c, false));
  });
});
