// What a browser origin is told of a decision (docs/protocol.md, *WebSocket*): minutes, the
// number's own counts, and for a denial by a rule over many numbers no counts at all.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { browserDecisionReply, decisionReply, isDecisionReply, roundUpToMinute, type DecisionView } from '../../src/protocol/replies.js';
import { DENY_REASONS } from '../../src/protocol/wire.js';

const AT = 1_764_072_000_000;
const view = (d: Partial<DecisionView>): DecisionView => ({
  allowed: true,
  limit: 2,
  used: 1,
  remaining: 1,
  resetTime: AT + 1_234_567,
  retryAfterMs: 0,
  reason: null,
  rule: null,
  shadow: [],
  source: 'database',
  ...d,
});

describe('roundUpToMinute', () => {
  it('rounds up to a multiple of 60,000, keeps 0 and null, never rounds down', () => {
    expect([0, 1, 59_999, 60_000, 60_001].map(roundUpToMinute)).toEqual([0, 60_000, 60_000, 60_000, 120_000]);
    expect(roundUpToMinute(null)).toBeNull();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4e12 }), (ms) => {
        const r = roundUpToMinute(ms);
        expect(r % 60_000).toBe(0);
        expect(r).toBeGreaterThanOrEqual(ms);
        expect(r - ms).toBeLessThan(60_000);
      }),
    );
  });
});

describe('browserDecisionReply', () => {
  it('gives the number its own counts with times rounded up, and no shadow', () => {
    const d = view({ shadow: ['global:1d'] });
    expect(browserDecisionReply(1, '+14155552671', 'US', d, false)).toEqual({
      ...decisionReply(1, '+14155552671', 'US', { ...d, shadow: [] }, false),
      resetTime: AT + 1_260_000,
    });
    const denied = view({ allowed: false, used: 2, remaining: 0, reason: 'phone_rate_limit_exceeded', rule: 'number:1h', retryAfterMs: 1_234_567 });
    expect(browserDecisionReply(2, '+14155552671', 'US', denied, false)).toMatchObject({
      allowed: false,
      used: 2,
      limit: 2,
      resetTime: AT + 1_260_000,
      retryAfterMs: 1_260_000,
      reason: 'phone_rate_limit_exceeded',
    });
    const blocked = view({
      allowed: false,
      limit: 0,
      used: 0,
      remaining: 0,
      resetTime: null,
      retryAfterMs: null,
      reason: 'number_blocked',
      rule: 'list:block',
    });
    expect(browserDecisionReply(3, '+14155552671', 'US', blocked, false)).toMatchObject({ resetTime: null, retryAfterMs: null, reason: 'number_blocked' });
  });

  it('tells a denial by any rule over many numbers without counts or instants', () => {
    for (const reason of DENY_REASONS.filter((r) => !['phone_rate_limit_exceeded', 'number_blocked', 'destination_blocked'].includes(r))) {
      const d = view({ allowed: false, limit: 50, used: 50, remaining: 0, reason, rule: 'prefix:1h', retryAfterMs: 61_000, shadow: ['global:1d'] });
      const r = browserDecisionReply(4, '+14155552671', 'US', d, false);
      expect(r).toEqual({
        type: 'rate_limit_status',
        id: 4,
        phoneNumber: '+14155552671',
        allowed: false,
        reason,
        rule: 'prefix:1h',
        retryAfterMs: 120_000,
        region: 'US',
        source: 'database',
      });
      // The client recognises it (as a decision, not an invalid response).
      expect(isDecisionReply(JSON.parse(JSON.stringify(r)) as Record<string, unknown>)).toBe(true);
    }
  });

  it('never hands a browser an instant or a wait that is not a whole minute', () => {
    const reasons = [null, ...DENY_REASONS] as const;
    fc.assert(
      fc.property(
        fc.constantFrom(...reasons),
        fc.option(fc.integer({ min: 0, max: 4e12 }), { nil: null }),
        fc.option(fc.integer({ min: 0, max: 1e10 }), { nil: null }),
        (reason, resetTime, retryAfterMs) => {
          const d = view({
            allowed: reason === null,
            reason,
            rule: reason === null ? null : 'x:1h',
            resetTime,
            retryAfterMs: reason === null ? 0 : retryAfterMs,
          });
          const r = browserDecisionReply(undefined, '+14155552671', 'US', d, false) as unknown as Record<string, unknown>;
          for (const field of ['resetTime', 'retryAfterMs']) {
            const v = r[field];
            if (typeof v === 'number') expect(v % 60_000).toBe(0);
          }
          expect(r.shadow).toBeUndefined();
        },
      ),
    );
  });
});
