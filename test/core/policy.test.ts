import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { evaluate, makeLogPolicy } from '../../src/core/policy/log.js';
import { consumeLog as consume } from '../helpers/seed.js';

const HOUR = 3_600_000;
const twoPerHour = makeLogPolicy([{ id: 'phone', limit: 2, windowMs: HOUR }]);

describe('evaluate and consume', () => {
  it('allows max calls, then denies until the oldest leaves the window', () => {
    let log: number[] = [];
    const t0 = 1_000_000;
    const a = consume(log, t0, twoPerHour);
    expect(a.decision).toMatchObject({ allowed: true, used: 1, remaining: 1, resetTime: t0 + HOUR, retryAfterMs: 0 });
    log = a.log;
    const b = consume(log, t0 + 10, twoPerHour);
    expect(b.decision).toMatchObject({ allowed: true, used: 2, remaining: 0, resetTime: t0 + HOUR });
    log = b.log;
    const c = consume(log, t0 + 20, twoPerHour);
    expect(c.decision).toMatchObject({ allowed: false, used: 2, remaining: 0, resetTime: t0 + HOUR, retryAfterMs: HOUR - 20 });
    expect(c.log).toEqual(log);
    // One ms before the first call leaves: still denied. At the boundary: allowed.
    expect(evaluate(log, t0 + HOUR - 1, twoPerHour).allowed).toBe(false);
    expect(evaluate(log, t0 + HOUR, twoPerHour)).toMatchObject({ allowed: true, used: 1, remaining: 1 });
  });

  it('a fresh key: used 0, resetTime now', () => {
    expect(evaluate([], 5, twoPerHour)).toEqual({ allowed: true, ruleId: 'phone', limit: 2, used: 0, remaining: 2, resetTime: 5, retryAfterMs: 0 });
  });

  it('never records a call before the latest one (clock going backwards)', () => {
    const r = consume([2000], 1000, makeLogPolicy([{ id: 'p', limit: 5, windowMs: HOUR }]));
    expect(r.atMs).toBe(2000);
    expect(r.log).toEqual([2000, 2000]);
  });

  it('with two rules, reports the one that denies', () => {
    const policy = makeLogPolicy([
      { id: 'hour', limit: 2, windowMs: HOUR },
      { id: 'day', limit: 3, windowMs: 24 * HOUR },
    ]);
    let log: number[] = [];
    for (const t of [0, 2 * HOUR, 4 * HOUR]) log = consume(log, t, policy).log;
    const d = evaluate(log, 6 * HOUR, policy);
    expect(d).toMatchObject({ allowed: false, ruleId: 'day', limit: 3, used: 3, resetTime: 24 * HOUR });
  });

  it('after an outage merge over the limit, denies until enough calls left', () => {
    const d = evaluate(
      [100, 150, 200, 250],
      300,
      makeLogPolicy([
        { id: 'p', limit: 2, windowMs: 1000 },
        { id: 'q', limit: 4, windowMs: 1000 },
      ]),
    );
    expect(d).toMatchObject({ allowed: false, used: 4 });
    // p (2 per 1000 ms): the 2nd most recent call (200) must leave: 1200.
    expect(d.resetTime).toBe(1200);
  });

  it('property: in any rolling window, never more than max allowed', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 500 }),
        fc.array(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 300 }),
        (max, windowMs, gaps) => {
          const policy = makeLogPolicy([{ id: 'p', limit: max, windowMs }]);
          let log: number[] = [];
          let now = 0;
          const allowed: number[] = [];
          for (const gap of gaps) {
            now += gap;
            const r = consume(log, now, policy);
            if (r.decision.allowed) allowed.push(r.atMs);
            // resetTime for a denial is exactly when a call becomes possible again.
            if (!r.decision.allowed) {
              expect(evaluate(log, r.decision.resetTime - 1, policy).allowed).toBe(false);
              expect(evaluate(log, r.decision.resetTime, policy).allowed).toBe(true);
            }
            log = r.log;
          }
          for (let i = 0; i + max < allowed.length; i++) {
            expect(allowed[i + max]! - allowed[i]!).toBeGreaterThanOrEqual(windowMs);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('property: consume allows exactly when evaluate said allowed', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 100 }), (gaps) => {
        const policy = makeLogPolicy([
          { id: 'a', limit: 3, windowMs: 100 },
          { id: 'b', limit: 5, windowMs: 400 },
        ]);
        let log: number[] = [];
        let now = 0;
        for (const g of gaps) {
          now += g;
          const before = evaluate(log, now, policy);
          const r = consume(log, now, policy);
          expect(r.decision.allowed).toBe(before.allowed);
          expect(r.log.length).toBeLessThanOrEqual(policy.capacity);
          log = r.log;
        }
      }),
    );
  });

  it('refuses nonsense rules', () => {
    expect(() => makeLogPolicy([])).toThrow();
    expect(() => makeLogPolicy([{ id: 'x', limit: 0, windowMs: 1 }])).toThrow(/limit/);
    expect(() => makeLogPolicy([{ id: 'x', limit: 1, windowMs: 0.5 }])).toThrow(/window/);
  });
});
