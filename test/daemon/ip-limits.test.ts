// Per-IP limits (issue 17): an IPv6 address counts against its /64, /56 and /48 (the wider ones
// with IPV6_WIDER_LIMIT_FACTORS times the limit), and the limiter's table never evicts counting
// state that can still deny, whatever a flood of fresh addresses does.
import { describe, expect, it } from 'vitest';
import { canonicalAddress, IPV6_WIDER_LIMIT_FACTORS, widerIpv6Networks } from '../../src/core/address.js';
import { makeLogPolicy } from '../../src/core/policy/log.js';
import type { LimitRule } from '../../src/core/policy/types.js';
import { IpRules } from '../../src/daemon/ip-rules.js';
import { IpLimiter, OVERFLOW_KEY } from '../../src/daemon/limits.js';

const T = 1_000_000;
const rule = (limit: number, windowMs = 3_600_000): LimitRule => ({ id: 'ip:1h', group: 'ip', limit, windowMs, window: '1h', shadow: false });
const key = (address: string) => {
  const c = canonicalAddress(address);
  if (!c.ok) throw new Error(c.message);
  return c.key;
};
/** The /64 number `i` inside 2001:db8:aa00::/40 (so /48 and /56 vary with i). */
const sixtyFour = (i: number) => key(`2001:db8:${(0xaa00 + (i >> 16)).toString(16)}:${(i & 0xffff).toString(16)}::1`);

describe('widerIpv6Networks', () => {
  it('gives the /56 and /48 of a /64 key, and nothing for IPv4', () => {
    expect(widerIpv6Networks(key('2001:db8:1:2345::9'))).toEqual([
      { key: '2001:db8:1:2300::/56', bits: 56, factor: 16 },
      { key: '2001:db8:1::/48', bits: 48, factor: 64 },
    ]);
    expect(widerIpv6Networks(key('203.0.113.9'))).toEqual([]);
    expect(widerIpv6Networks('unknown')).toEqual([]);
  });
});

describe('IpRules over IPv6', () => {
  it('a /48 gets its factor times the limit, not 65,536 quotas', () => {
    const limit = 2;
    const r = new IpRules();
    r.update([rule(limit)]);
    let allowed = 0;
    // Every /64 of one /48 (bounded: 4,096 of them is far past the /48's limit of 2 x 64).
    for (let i = 0; i < 4_096; i++) {
      for (let n = 0; n < limit; n++) if (!r.reserve(key(`2001:db8:5:${i.toString(16)}::${n + 1}`), false, T).denied) allowed++;
    }
    const factor48 = IPV6_WIDER_LIMIT_FACTORS.find((f) => f.bits === 48)!.factor;
    expect(allowed).toBe(limit * factor48);
    // Another /48 is untouched.
    expect(r.reserve(key('2001:db8:6::1'), false, T).denied).toBeUndefined();
  });

  it('a /56 gets its factor times the limit, and a denial there gives back the /64 slot', () => {
    const r = new IpRules();
    r.update([rule(1)]);
    const factor56 = IPV6_WIDER_LIMIT_FACTORS.find((f) => f.bits === 56)!.factor;
    const statuses = [];
    for (let i = 0; i < 256; i++) statuses.push(r.reserve(key(`2001:db8:7:${(0x1200 + i).toString(16)}::1`), false, T).denied ? 'denied' : 'allowed');
    expect(statuses.filter((s) => s === 'allowed')).toHaveLength(factor56);
    const denied = r.reserve(key('2001:db8:7:12ff::1'), false, T);
    expect(denied.denied?.decision).toMatchObject({ allowed: false, limit: factor56 });
    // The /64 of that denied attempt did not keep its slot: once the /56 has room it may call.
    expect(r.reserve(key('2001:db8:7:12ff::2'), false, T + 3_700_000).denied).toBeUndefined();
  });

  it('IPv4 is unchanged: one quota per address', () => {
    const r = new IpRules();
    r.update([rule(1)]);
    expect(r.reserve('203.0.113.1', false, T).denied).toBeUndefined();
    expect(r.reserve('203.0.113.1', false, T).denied).toBeDefined();
    expect(r.reserve('203.0.113.2', false, T).denied).toBeUndefined();
  });
});

describe('IpLimiter under a flood of fresh addresses', () => {
  it('never evicts live counts: a full table sends new addresses to a shared overflow entry, reported', () => {
    const capacity = 1_000;
    let full = 0;
    const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: 1, windowMs: 60_000 }]), capacity, () => full++);
    // The victim address is at its limit...
    expect(lim.reserve('198.51.100.7', T).decision.allowed).toBe(true);
    expect(lim.reserve('198.51.100.7', T).decision.allowed).toBe(false);
    // ...then a flood of 10x the table's capacity in fresh addresses, within the window.
    const flood = [];
    for (let i = 0; i < capacity * 10; i++) flood.push(lim.reserve(sixtyFour(i), T + 1).decision.allowed);
    expect(lim.size).toBeLessThanOrEqual(capacity);
    // The victim's count survived: still denied (with a silent LRU it got a fresh quota).
    expect(lim.reserve('198.51.100.7', T + 2).decision.allowed).toBe(false);
    // Past the table, new addresses shared one quota: one call allowed among them in all.
    expect(flood.filter(Boolean)).toHaveLength(capacity - 1 + 1);
    expect(full).toBe(capacity * 10 - (capacity - 1));
    expect(lim.reserve(OVERFLOW_KEY, T + 3).decision.allowed).toBe(false);
  });

  it('makes room by evicting only entries whose counts have left the window', () => {
    const capacity = 100;
    let full = 0;
    const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: 1, windowMs: 60_000 }]), capacity, () => full++);
    for (let i = 0; i < capacity; i++) lim.reserve(sixtyFour(i), T);
    // A window and a bucket later every entry is dead: fresh addresses replace them one by one.
    const later = T + 62_000;
    for (let i = capacity; i < capacity * 2; i++) expect(lim.reserve(sixtyFour(i), later).decision.allowed).toBe(true);
    expect(full).toBe(0);
    expect(lim.size).toBe(capacity);
    // Now every entry is live again: the next fresh address overflows instead of evicting one.
    expect(lim.reserve(sixtyFour(capacity * 2), later).decision.allowed).toBe(true);
    expect(full).toBe(1);
    expect(lim.reserve(sixtyFour(capacity), later).decision.allowed).toBe(false);
  });

  it('a refund that empties an entry frees its slot', () => {
    const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: 5, windowMs: 60_000 }]), 10);
    const r = lim.reserve('192.0.2.1', T);
    expect(lim.size).toBe(1);
    lim.refund(r.key, r.atMs);
    expect(lim.size).toBe(0);
  });
});
