// replyText (src/protocol/replies.ts) writes decision replies without JSON.stringify's walk over
// the object; what goes on the wire must not change. Held to JSON.stringify, byte for byte, for
// every shape decisionReply and browserDecisionReply make, with hostile ids and rule ids.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { browserDecisionReply, decisionReply, errorReply, outcomeRecordedReply, replyText, type DecisionView } from '../../src/protocol/replies.js';
import { DENY_REASONS, type Reply } from '../../src/protocol/wire.js';

const hostile = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('"', '\\', '\u2028', '\ud800', '\udc00x', '😀', '\u0000'),
);
const number = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, 1e21, 2 ** 53, Number.NaN, Infinity));
const time = fc.option(number, { nil: null });

const view: fc.Arbitrary<DecisionView> = fc.record({
  allowed: fc.boolean(),
  limit: number,
  used: number,
  remaining: number,
  resetTime: time,
  retryAfterMs: time,
  reason: fc.option(fc.constantFrom(...DENY_REASONS), { nil: null }),
  rule: fc.option(hostile, { nil: null }),
  shadow: fc.array(hostile, { maxLength: 3 }),
  source: fc.constantFrom('database', 'memory'),
});
const id = fc.option(fc.oneof(hostile, number), { nil: undefined });
const region = fc.option(fc.oneof(fc.constantFrom('US', 'GB'), hostile), { nil: undefined });

describe('replyText', () => {
  it('writes every decision reply exactly as JSON.stringify does', () => {
    fc.assert(
      fc.property(
        id,
        hostile,
        region,
        view,
        fc.boolean(),
        fc.option(hostile, { nil: undefined }),
        fc.boolean(),
        (reqId, e164, r, v, consume, decisionId, browser) => {
          const reply = browser ? browserDecisionReply(reqId, e164, r, v, consume) : decisionReply(reqId, e164, r, v, consume, decisionId);
          expect(replyText(reply)).toBe(JSON.stringify(reply));
        },
      ),
      { numRuns: 5_000 },
    );
  });

  it('writes other replies as JSON.stringify does', () => {
    const others: Reply[] = [
      errorReply('invalid_json', 'the frame is not valid JSON'),
      errorReply('forbidden', 'no', 'x"y'),
      outcomeRecordedReply(3, 'abc', false),
    ];
    for (const r of others) expect(replyText(r)).toBe(JSON.stringify(r));
  });
});
