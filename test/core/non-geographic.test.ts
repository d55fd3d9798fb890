// Non-geographic IRSF destinations (issue 20): satellite and international-network numbers are
// typed non_geographic and denied by the default policy, like premium-rate numbers.
import { describe, expect, it } from 'vitest';
import { normalizePhoneWithType } from '../../src/core/phone.js';
import { destinationDenial } from '../../src/core/policy/subject.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';

describe('non-geographic destinations', () => {
  it('types +870, +881, +882 numbers non_geographic; a country number keeps its type', () => {
    for (const n of ['+870773100000', '+881631000000', '+88213100000']) expect(normalizePhoneWithType(n).type).toBe('non_geographic');
    expect(normalizePhoneWithType('+447911123456').type).toBe('mobile');
  });

  it('the default policy denies them as destination:non_geographic', () => {
    const policy = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 100, ipWindowMs: 3_600_000 });
    const { region, type } = normalizePhoneWithType('+88213100000');
    expect(destinationDenial(policy, region, type)).toEqual({ rule: 'destination:non_geographic' });
    expect(destinationDenial(policy, 'GB', 'mobile')).toBeUndefined();
  });

  it('is in the default block_types of a file that does not list them, and may be listed', () => {
    const absent = parsePolicyFile('number: {limits: [{limit: 2, window: 1h}]}\n');
    expect(absent.ok && absent.policy.destinations.blockTypes).toContain('non_geographic');
    const listed = parsePolicyFile('destinations: {block_types: [premium_rate, shared_cost, non_geographic]}\n');
    expect(listed.ok && listed.policy.destinations.blockTypes).toEqual(['premium_rate', 'shared_cost', 'non_geographic']);
  });
});
