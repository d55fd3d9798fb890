// The policy's ip group: every enforcing rule must allow, shadow rules only report, a denial
// gives back what it took, allowlisted numbers are counted but never denied, and a new policy
// version keeps the counts of unchanged rules.
import { describe, expect, it } from 'vitest';
import type { LimitRule } from '../../src/core/policy/types.js';
import { IpRules } from '../../src/daemon/ip-rules.js';

const rule = (id: string, limit: number, windowMs: number, shadow = false): LimitRule => ({ id, group: 'ip', limit, windowMs, window: id.slice(3), shadow });
const T = 1_000_000;

describe('IpRules', () => {
  it('denies with the first enforcing rule that is full and refunds the others', () => {
    const r = new IpRules();
    r.update([rule('ip:1d', 3, 86_400_000), rule('ip:1h', 2, 3_600_000)]);
    expect(r.reserve('a', false, T).denied).toBeUndefined();
    expect(r.reserve('a', false, T).denied).toBeUndefined();
    const third = r.reserve('a', false, T);
    expect(third.denied?.rule).toBe('ip:1h');
    // The 1d rule's slot taken by the denied attempt was given back: after the hour, one more fits.
    const later = T + 3_600_000 + 120_000;
    expect(r.reserve('a', false, later).denied).toBeUndefined();
    expect(r.reserve('a', false, later).denied?.rule).toBe('ip:1d');
  });

  it('shadow rules report and never deny; refund gives back a reservation', () => {
    const r = new IpRules();
    r.update([rule('ip:1h', 1, 3_600_000, true), rule('ip:1d', 2, 86_400_000)]);
    expect(r.reserve('b', false, T)).toMatchObject({ denied: undefined, shadow: [] });
    const second = r.reserve('b', false, T);
    expect(second).toMatchObject({ denied: undefined, shadow: ['ip:1h'] });
    second.refund();
    expect(r.reserve('b', false, T).denied).toBeUndefined();
    expect(r.reserve('b', false, T).denied?.rule).toBe('ip:1d');
  });

  it('allowlisted numbers are never denied; unchanged rules keep their counts across updates', () => {
    const r = new IpRules();
    r.update([rule('ip:1h', 1, 3_600_000)]);
    expect(r.reserve('c', false, T).denied).toBeUndefined();
    expect(r.reserve('c', true, T)).toMatchObject({ denied: undefined, shadow: [] });
    r.update([rule('ip:1h', 1, 3_600_000), rule('ip:1d', 5, 86_400_000)]);
    expect(r.reserve('c', false, T).denied?.rule).toBe('ip:1h');
    r.update([rule('ip:1h', 2, 3_600_000)]);
    expect(r.reserve('c', false, T).denied).toBeUndefined();
  });
});
