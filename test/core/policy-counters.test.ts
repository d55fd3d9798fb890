// applicableCounters' order and contents with #19's groups (conversion, sweep, safe), and
// isSafe() over a safe list of thousands of prefixes.
import { describe, expect, it } from 'vitest';
import { applicableCounters, blocksRange, isSafe, type ConversionState } from '../../src/core/policy/counters.js';
import type { Policy } from '../../src/core/policy/types.js';
import { policy as makePolicy, rule } from '../helpers/policy.js';

const baselineRule = { ...rule('conversion', 20, 86_400_000, false, '', 'country'), id: 'conversion:country:baseline' };
const P: Policy = makePolicy({
  prefix: { digits: 3, rules: [rule('prefix', 50, 3_600_000)] },
  country: { rules: [rule('country', 500, 3_600_000)], overrides: new Map() },
  global: [rule('global', 5_000, 86_400_000)],
  conversion: {
    answeredAtLeastMs: 10_000,
    pendingAfterMs: 900_000,
    prefix: { digits: 3, rules: [rule('conversion', 5, 3_600_000, false, '', 'prefix')] },
    country: {
      rules: [rule('conversion', 100, 3_600_000, false, '', 'country')],
      baseline: { factor: 0.2, floor: 20, historyMs: 14 * 86_400_000, rule: baselineRule },
    },
  },
  sweep: { digits: 3, rules: [rule('sweep', 10, 3_600_000, false, '', 'prefix')] },
  safe: { prefixes: ['+4420'] },
});
const ENGAGED: ConversionState = { engaged: true, baselineLimits: new Map([['US', 37]]) };

describe('applicableCounters with conversion and sweep', () => {
  it('orders prefix, country, global, conversion.prefix, conversion.country (fixed, then baseline), sweep', () => {
    const cs = applicableCounters(P, '+14155552671', 'US', { conversion: ENGAGED });
    expect(cs.map((c) => [c.rule.id, c.key])).toEqual([
      ['prefix:3600000ms', '+14155552'],
      ['country:3600000ms', 'US'],
      ['global:86400000ms', '*'],
      ['conversion:prefix:3600000ms', '+14155552'],
      ['conversion:country:3600000ms', 'US'],
      ['conversion:country:baseline', 'US'],
      ['sweep:prefix:3600000ms', '+14155552'],
    ]);
    // The baseline's limit is the region's computed one; a region without one gets the floor.
    expect(cs[5]!.rule.limit).toBe(37);
    expect(applicableCounters(P, '+33612345678', 'FR', { conversion: ENGAGED })[5]!.rule).toBe(baselineRule);
    expect(cs.map(blocksRange)).toEqual([false, false, false, true, false, false, true]);
  });

  it('leaves conversion counters out while idle, and conversion and sweep out for safe numbers', () => {
    expect(applicableCounters(P, '+14155552671', 'US').map((c) => c.rule.id)).toEqual([
      'prefix:3600000ms',
      'country:3600000ms',
      'global:86400000ms',
      'sweep:prefix:3600000ms',
    ]);
    expect(applicableCounters(P, '+14155552671', 'US', { conversion: { engaged: false, baselineLimits: new Map() } }).length).toBe(4);
    expect(applicableCounters(P, '+442079460958', 'GB', { conversion: ENGAGED, safe: true }).map((c) => c.rule.group)).toEqual(['prefix', 'country', 'global']);
  });
});

describe('isSafe', () => {
  it('matches by prefix, over 5,000 prefixes', () => {
    const prefixes = Array.from({ length: 5_000 }, (_, i) => `+1${String(2_000_000 + i * 7)}`);
    const p = { safe: { prefixes: [...prefixes, '+4420'] } };
    expect(isSafe(p, '+442079460958')).toBe(true);
    expect(isSafe(p, '+442179460958')).toBe(false);
    expect(isSafe(p, `${prefixes[4_321]!}555`)).toBe(true);
    expect(isSafe(p, `+1${String(2_000_001)}555`)).toBe(false);
    expect(isSafe({ safe: { prefixes: [] } }, '+442079460958')).toBe(false);
    // A prefix as long as the number matches it.
    expect(isSafe({ safe: { prefixes: ['+14155552671'] } }, '+14155552671')).toBe(true);
  });
});
