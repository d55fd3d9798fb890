import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IpLimiter } from '../../src/daemon/limits.js';
import { makeLogPolicy } from '../../src/core/policy/log.js';

describe('IpLimiter (bucketed)', () => {
  it('allows max per window, then denies with a reset time when a slot frees', () => {
    const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: 3, windowMs: 60_000 }]));
    const t0 = 1_000_000;
    expect([0, 1, 2].map((i) => lim.reserve('a', t0 + i).decision.allowed)).toEqual([true, true, true]);
    const denied = lim.reserve('a', t0 + 10).decision;
    expect(denied).toMatchObject({ allowed: false, used: 3, remaining: 0 });
    // Conservative by at most one bucket (window / 60 = 1 s).
    expect(denied.resetTime).toBeGreaterThanOrEqual(t0 + 60_000);
    expect(denied.resetTime).toBeLessThanOrEqual(t0 + 61_000);
    expect(lim.reserve('a', denied.resetTime - 1).decision.allowed).toBe(false);
    expect(lim.reserve('a', denied.resetTime).decision.allowed).toBe(true);
    expect(lim.reserve('b', t0).decision.allowed).toBe(true);
  });

  it('a refund gives the slot back', () => {
    const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: 1, windowMs: 1_000 }]));
    const r = lim.reserve('a', 5_000);
    expect(lim.reserve('a', 5_001).decision.allowed).toBe(false);
    lim.refund('a', r.atMs);
    expect(lim.reserve('a', 5_002).decision.allowed).toBe(true);
  });

  it('property: never more than max in any rolling window, and memory does not grow with the limit', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 60, max: 10_000 }),
        fc.array(fc.integer({ min: 0, max: 400 }), { minLength: 1, maxLength: 400 }),
        (max, windowMs, gaps) => {
          const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: max, windowMs }]));
          let now = 1_000_000;
          const allowed: number[] = [];
          for (const g of gaps) {
            now += g;
            const r = lim.reserve('x', now);
            if (r.decision.allowed) allowed.push(now);
            else expect(r.decision.resetTime).toBeGreaterThan(now);
          }
          for (let i = 0; i + max < allowed.length; i++) {
            expect(allowed[i + max]! - allowed[i]!).toBeGreaterThanOrEqual(windowMs);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('property: used equals the kept calls of the live buckets, through reserves and refunds', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 60, max: 6_000 }),
        fc.array(fc.record({ gap: fc.integer({ min: 0, max: 300 }), refund: fc.option(fc.nat(), { nil: undefined }) }), { minLength: 1, maxLength: 300 }),
        (max, windowMs, ops) => {
          const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: max, windowMs }]));
          const bucketMs = Math.ceil(windowMs / 60);
          let now = 1_000_000;
          const kept: number[] = []; // reservation times not refunded
          for (const op of ops) {
            now += op.gap;
            if (op.refund !== undefined && kept.length > 0) {
              const [at] = kept.splice(op.refund % kept.length, 1);
              lim.refund('x', at!);
            }
            const newest = Math.floor(now / bucketMs);
            const oldest = Math.max(Math.floor((now - windowMs) / bucketMs), newest - 60);
            const used = kept.filter((t) => Math.floor(t / bucketMs) >= oldest).length;
            const r = lim.reserve('x', now);
            expect(r.decision.allowed).toBe(used < max);
            expect(r.decision.used).toBe(r.decision.allowed ? used + 1 : used);
            if (r.decision.allowed) kept.push(now);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('property: take() counts and denies exactly as reserve() does (the decision path uses take)', () => {
    const op = fc.record({ address: fc.constantFrom('a', 'b', 'c', 'd'), dtMs: fc.integer({ min: -500, max: 3_000 }), refund: fc.boolean() });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.array(op, { maxLength: 200 }), (limit, ops) => {
        const policy = makeLogPolicy([{ id: 'ip', limit, windowMs: 10_000 }]);
        // Capacity 2 with four addresses: the overflow entry and evictions are exercised too.
        const viaTake = new IpLimiter(policy, 2);
        const viaReserve = new IpLimiter(policy, 2);
        let now = 1_000_000;
        for (const { address, dtMs, refund } of ops) {
          now += dtMs;
          const t = viaTake.take(address, now);
          const r = viaReserve.reserve(address, now);
          if (typeof t === 'string') {
            expect(r.decision.allowed).toBe(true);
            expect(t).toBe(r.key);
            if (refund) {
              viaTake.refund(t, now);
              viaReserve.refund(r.key, r.atMs);
            }
          } else expect(t).toEqual(r.decision);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('keeps counting when the clock steps back a little', () => {
    const lim = new IpLimiter(makeLogPolicy([{ id: 'ip', limit: 3, windowMs: 60_000 }]));
    expect(lim.reserve('a', 100_000).decision.used).toBe(1);
    expect(lim.reserve('a', 97_500).decision.used).toBe(2); // two buckets earlier
    expect(lim.reserve('a', 100_001).decision.used).toBe(3);
    expect(lim.reserve('a', 100_002).decision.allowed).toBe(false);
  });
});
