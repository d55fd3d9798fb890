import { describe, expect, it } from 'vitest';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { countersFor, destinationDenial, ruleIds } from '../../src/core/policy/subject.js';
import { prefixKey } from '../../src/core/policy/counters.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { normalizePhone, normalizePhoneWithType } from '../../src/core/phone.js';
import { InvalidPhoneNumberError } from '../../src/core/errors.js';
import type { Policy } from '../../src/core/policy/types.js';

function parsed(text: string): Policy {
  const result = parsePolicyFile(text);
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result.policy;
}

const AGGREGATES = parsed(`
number: {limits: [{limit: 2, window: 1h}]}
prefix: {digits: 3, limits: [{limit: 10, window: 1h}, {limit: 50, window: 1d}]}
country:
  limits: [{limit: 200, window: 1h}, {limit: 900, window: 1d}]
  overrides: {GB: [{limit: 500, window: 1h}], ZZ: [{limit: 3, window: 1h}]}
global: {limits: [{limit: 10000, window: 1d}], shadow: true}
ip: {limits: [{limit: 20, window: 1h}]}
`);

const keys = (policy: Policy, e164: string, region: string | undefined) => countersFor(policy, e164, region).map((c) => `${c.rule.id}@${c.key}`);

describe('countersFor', () => {
  it('lists prefix, country (the default list) and global counters in that order, with their keys', () => {
    expect(keys(AGGREGATES, '+14155552671', 'US')).toEqual(['prefix:1h@+14155552', 'prefix:1d@+14155552', 'country:1h@US', 'country:1d@US', 'global:1d@*']);
  });

  it('uses only the override list for a region that has one', () => {
    expect(keys(AGGREGATES, '+442079460958', 'GB')).toEqual(['prefix:1h@+442079460', 'prefix:1d@+442079460', 'country:GB:1h@GB', 'global:1d@*']);
  });

  it('counts numbers of unknown region under ZZ, with its override', () => {
    expect(keys(AGGREGATES, '+15555550100', undefined)).toEqual(['prefix:1h@+15555550', 'prefix:1d@+15555550', 'country:ZZ:1h@ZZ', 'global:1d@*']);
    const noOverride = parsed('country: {limits: [{limit: 7, window: 1h}]}');
    expect(keys(noOverride, '+15555550100', undefined)).toEqual(['country:1h@ZZ']);
  });

  it('puts consecutive numbers in one range and the next range apart', () => {
    const policy = parsed('prefix: {digits: 3, limits: [{limit: 10, window: 1h}]}');
    const key = (e164: string) => countersFor(policy, e164, 'GB')[0]?.key;
    expect(key('+447700900100')).toBe(key('+447700900999'));
    expect(key('+447700900100')).not.toBe(key('+447700901000'));
    expect(key('+447700900100')).toBe('+447700900');
  });

  it('never forms a range narrower than 1,000 numbers, whatever digits it is given', () => {
    for (const digits of [0, 1, 2, 3]) expect(prefixKey('+14155552671', digits)).toBe('+14155552');
    expect(prefixKey('+14155552671', 4)).toBe('+1415555');
  });

  it('carries the rule objects of the policy (limit, window, shadow)', () => {
    const global = countersFor(AGGREGATES, '+14155552671', 'US').at(-1);
    expect(global?.rule).toBe(AGGREGATES.global[0]);
    expect(global?.rule.shadow).toBe(true);
  });

  it('has only the sweep counter for the default policy (number and ip rules are not aggregates; conversion is idle without outcomes)', () => {
    const counters = countersFor(defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 3_600_000 }), '+14155552671', 'US');
    expect(counters.map((c) => [c.rule.id, c.key])).toEqual([['sweep:prefix:1h', '+14155552']]);
  });
});

describe('destinationDenial', () => {
  const allow = parsed('destinations: {countries: {allow: [US, GB]}}');
  const deny = parsed('destinations: {countries: {deny: [CU, KP]}, block_types: [premium_rate, voip]}');

  it('allows listed countries and denies the rest under an allow list, unknown regions (ZZ) included', () => {
    expect(destinationDenial(allow, 'US', 'fixed_line_or_mobile')).toBeUndefined();
    expect(destinationDenial(allow, 'FR', 'mobile')).toEqual({ rule: 'destination:country' });
    expect(destinationDenial(allow, undefined, undefined)).toEqual({ rule: 'destination:country' });
  });

  it('denies listed countries only under a deny list, and lets unknown regions through', () => {
    expect(destinationDenial(deny, 'CU', 'mobile')).toEqual({ rule: 'destination:country' });
    expect(destinationDenial(deny, 'FR', 'mobile')).toBeUndefined();
    expect(destinationDenial(deny, undefined, undefined)).toBeUndefined();
  });

  it('denies blocked number types, by default premium_rate and shared_cost', () => {
    expect(destinationDenial(allow, 'GB', 'premium_rate')).toEqual({ rule: 'destination:premium_rate' });
    expect(destinationDenial(allow, 'GB', 'shared_cost')).toEqual({ rule: 'destination:shared_cost' });
    expect(destinationDenial(allow, 'GB', 'voip')).toBeUndefined();
    expect(destinationDenial(deny, 'GB', 'voip')).toEqual({ rule: 'destination:voip' });
    expect(destinationDenial(deny, 'GB', 'shared_cost')).toBeUndefined();
  });

  it('names the country rule first when both would deny', () => {
    expect(destinationDenial(allow, 'FR', 'premium_rate')).toEqual({ rule: 'destination:country' });
  });

  it('denies nothing with no countries control and an empty block_types', () => {
    const open = parsed('destinations: {block_types: []}');
    for (const type of ['premium_rate', 'shared_cost', 'mobile'] as const) expect(destinationDenial(open, 'KP', type)).toBeUndefined();
  });
});

describe('normalizePhoneWithType', () => {
  it.each([
    ['+449098790000', 'premium_rate'],
    ['+19005551234', 'premium_rate'],
    ['+33810123456', 'shared_cost'],
    ['+448001234567', 'toll_free'],
    ['+4915112345678', 'mobile'],
    ['+442079460958', 'fixed_line'],
    ['+14155552671', 'fixed_line_or_mobile'],
  ])('%s is %s', (e164, type) => {
    expect(normalizePhoneWithType(e164).type).toBe(type);
  });

  it('normalises exactly as normalizePhone, whatever the spelling', () => {
    for (const input of ['+44 909 879 0000', '+1 (415) 555-2671', '+15555550100', ' +33 8 10 12 34 56 ']) {
      const { type, ...normalized } = normalizePhoneWithType(input);
      expect(normalized).toEqual(normalizePhone(input));
    }
    expect(normalizePhoneWithType('+1 (900) 555-1234').type).toBe('premium_rate');
  });

  it('has no type when libphonenumber cannot tell (fictional numbers), and refuses garbage as normalizePhone does', () => {
    expect(normalizePhoneWithType('+15555550100').type).toBeUndefined();
    expect(() => normalizePhoneWithType('not a number')).toThrow(InvalidPhoneNumberError);
  });

  it('makes a premium-rate number, normalised as the daemon does, a destination denial under the default policy', () => {
    const { region, type } = normalizePhoneWithType('+44 909 879 0000');
    const policy = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 3_600_000 });
    expect(destinationDenial(policy, region, type)).toEqual({ rule: 'destination:premium_rate' });
  });
});

describe('ruleIds', () => {
  it('lists every rule id of the policy in decision order', () => {
    const policy = parsed(`
number: {limits: [{limit: 2, window: 1h}], block_after: {denials: 3, within: 1h, for: 1d}}
prefix: {digits: 3, limits: [{limit: 10, window: 1h}]}
country: {limits: [{limit: 200, window: 1h}], overrides: {GB: [{limit: 500, window: 1h}]}}
global: {limits: [{limit: 10000, window: 1d}]}
ip: {limits: [{limit: 20, window: 15m}]}
destinations: {countries: {deny: [CU]}, block_types: [premium_rate]}
`);
    expect(ruleIds(policy)).toEqual([
      'number:1h',
      'number:block_after',
      'prefix:1h',
      'country:1h',
      'country:GB:1h',
      'global:1d',
      'ip:15m',
      'destination:country',
      'destination:premium_rate',
    ]);
  });

  it('lists the default policy as number, conversion, sweep, automatic blocks, ip and the default destination types', () => {
    expect(ruleIds(defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 60_000 }))).toEqual([
      'number:1h',
      'conversion:prefix:1h',
      'conversion:country:baseline',
      'sweep:prefix:1h',
      'auto:block',
      'ip:1m',
      'destination:premium_rate',
      'destination:shared_cost',
      'destination:non_geographic',
    ]);
  });
});
