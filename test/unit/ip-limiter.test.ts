import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IpLimiter } from '../../src/daemon/limits.js';
import { makePolicy } from '../../src/core/policy.js';

describe('IpLimiter (bucketed)', () => {
  it('allows max per window, then denies with a reset time when a slot frees', () => {
    const lim = new IpLimiter(makePolicy([{ id: 'ip', max: 3, windowMs: 60_000 }]));
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
    const lim = new IpLimiter(makePolicy([{ id: 'ip', max: 1, windowMs: 1_000 }]));
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
          const lim = new IpLimiter(makePolicy([{ id: 'ip', max, windowMs }]));
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
});
