// src/core/policy/conversion.ts: which counters a reported outcome takes its call back from, the
// range key taken from a decision id's 3-digit range, and the baseline's limit.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DECISION_ID_HORIZON_MS, rangeLabel } from '../../src/core/decision-id.js';
import { baselineLimit, isConverted, outcomeRetentionMs, prefixKeyOfRange, takeBackCounters } from '../../src/core/policy/conversion.js';
import { prefixKey } from '../../src/core/policy/counters.js';
import type { ConversionPolicy } from '../../src/core/policy/types.js';
import { policy, rule } from '../helpers/policy.js';

const H = 3_600_000;
const conversion: ConversionPolicy = {
  answeredAtLeastMs: 10_000,
  pendingAfterMs: 15 * 60_000,
  prefix: { digits: 4, rules: [rule('conversion', 5, H, false, ':prefix')] },
  country: {
    rules: [rule('conversion', 50, H, false, ':country')],
    baseline: { factor: 0.2, floor: 20, historyMs: 14 * 24 * H, rule: { ...rule('conversion', 20, 24 * H), id: 'conversion:country:baseline' } },
  },
};
const p = policy({ conversion });
const at = Date.UTC(2026, 11, 7, 12);
const outcome = (over: Partial<Parameters<typeof takeBackCounters>[1]> = {}) => ({
  region: 'GB',
  range: '+4477009001',
  decidedAtMs: at,
  outcome: 'verified',
  durationMs: undefined,
  reportedAtMs: at + 60_000,
  ...over,
});

describe('conversion take-backs', () => {
  it('converted: verified, or answered for at least answered_at_least', () => {
    expect(isConverted('verified', undefined, conversion)).toBe(true);
    expect(isConverted('answered', 10_000, conversion)).toBe(true);
    expect(isConverted('answered', 9_999, conversion)).toBe(false);
    expect(isConverted('answered', undefined, conversion)).toBe(false);
    expect(isConverted('unanswered', 60_000, conversion)).toBe(false);
    expect(isConverted('failed', undefined, conversion)).toBe(false);
  });

  it('a converted outcome within pending_after takes back from prefix, country and baseline counters', () => {
    expect(takeBackCounters(p, outcome()).map((c) => [c.rule.id, c.key])).toEqual([
      [conversion.prefix!.rules[0]!.id, '+447700900'],
      [conversion.country!.rules[0]!.id, 'GB'],
      ['conversion:country:baseline', 'GB'],
    ]);
    expect(takeBackCounters(p, outcome({ region: undefined })).map((c) => c.key)).toEqual(['+447700900', 'ZZ', 'ZZ']);
  });

  it('takes nothing back when late, not converted, or without conversion rules', () => {
    expect(takeBackCounters(p, outcome({ reportedAtMs: at + conversion.pendingAfterMs }))).toHaveLength(3);
    expect(takeBackCounters(p, outcome({ reportedAtMs: at + conversion.pendingAfterMs + 1 }))).toEqual([]);
    expect(takeBackCounters(p, outcome({ outcome: 'answered', durationMs: 3_000 }))).toEqual([]);
    expect(takeBackCounters(p, outcome({ outcome: 'failed' }))).toEqual([]);
    expect(takeBackCounters(policy({}), outcome())).toEqual([]);
    // A safe number's calls were never counted by conversion rules.
    expect(takeBackCounters(p, outcome({ safe: true }))).toEqual([]);
    // An id that could not carry its range: the country counters only.
    expect(takeBackCounters(p, outcome({ range: '' })).map((c) => c.key)).toEqual(['GB', 'GB']);
  });

  it('keys a range from the id’s 3-digit range exactly as prefixKey keys the number', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^\+[1-9][0-9]{0,14}$/), fc.integer({ min: 0, max: 8 }), (e164, digits) => {
        expect(prefixKeyOfRange(rangeLabel(e164), digits)).toBe(prefixKey(e164, digits));
      }),
      { numRuns: 2_000 },
    );
  });

  it('baseline: max(floor, ceil(factor × most converted in one window))', () => {
    const b = conversion.country!.baseline!;
    expect(baselineLimit(b, 0)).toBe(20);
    expect(baselineLimit(b, 100)).toBe(20);
    expect(baselineLimit(b, 101)).toBe(21);
    expect(baselineLimit(b, 1_000)).toBe(200);
    expect(baselineLimit({ factor: 0.3, floor: 1 }, 10)).toBe(3);
  });

  it('outcomes are kept for the baseline’s history and one window, never less than the id horizon', () => {
    expect(outcomeRetentionMs(p)).toBe(15 * 24 * H);
    expect(outcomeRetentionMs(policy({}))).toBe(DECISION_ID_HORIZON_MS);
  });
});
