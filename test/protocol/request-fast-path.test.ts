// RequestParser recognises a well-formed check or consume without zod (schema.ts,
// plainDecisionRequest). Every byte of a frame is hostile, so the fast path is held to zod's
// parse on generated requests, well-formed and not: the same result (request, or error code,
// message and echoed id) for every one, and no exception, whatever the input.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalAddress } from '../../src/core/address.js';
import { RequestParser } from '../../src/protocol/schema.js';

const fast = new RequestParser(canonicalAddress);
const zodOnly = new RequestParser(canonicalAddress, { fastPath: false });

const hostileString = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ minLength: 120, maxLength: 140 }));
const anyJson = fc.jsonValue({ maxDepth: 2 });
const field = <T>(arb: fc.Arbitrary<T>) => fc.option(fc.oneof(arb, anyJson), { nil: undefined });

const request = fc.record(
  {
    type: fc.oneof(fc.constantFrom('rate_limit_check', 'rate_limit_consume', 'rate_limit_outcome', 'rate_limit_other', ''), anyJson),
    id: field(fc.oneof(hostileString, fc.double(), fc.integer(), fc.string({ minLength: 127, maxLength: 129 }))),
    phoneNumber: field(fc.oneof(fc.constantFrom('+14155552671', '+1 415 555 2671', '+447911123456', '', '+'), hostileString)),
    ip: field(
      fc.oneof(
        fc.ipV4(),
        fc.ipV6(),
        fc.ipV4Extended(),
        fc.constantFrom('::ffff:10.0.0.1', '[::1]', '1.2.3.4:80', 'fe80::1%eth0', '010.0.0.1', ' 1.2.3.4 ', '300.1.1.1'),
        hostileString,
      ),
    ),
    // Unknown fields are ignored by both.
    extra: field(anyJson),
    __proto__: field(anyJson),
  },
  { requiredKeys: [] },
);

describe('RequestParser fast path', () => {
  it('parses every generated request exactly as zod does', () => {
    fc.assert(
      fc.property(request, (value) => {
        expect(fast.parseRequest(value)).toEqual(zodOnly.parseRequest(value));
      }),
      { numRuns: 5_000 },
    );
  });

  it('parses every frame exactly as zod does, and never throws', () => {
    const frames = fc.oneof(
      request.map((r) => JSON.stringify(r)),
      fc.json({ maxDepth: 3 }),
      fc.string({ unit: 'binary', maxLength: 200 }),
    );
    fc.assert(
      fc.property(frames, (text) => {
        expect(fast.parseFrame(text)).toEqual(zodOnly.parseFrame(text));
      }),
      { numRuns: 5_000 },
    );
  });

  it('with a forced type (the HTTP routes) too', () => {
    fc.assert(
      fc.property(
        request,
        fc.constantFrom('rate_limit_check', 'rate_limit_consume', 'rate_limit_outcome') as fc.Arbitrary<'rate_limit_check'>,
        (value, type) => {
          expect(fast.parseRequest(value, type)).toEqual(zodOnly.parseRequest(value, type));
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('keeps only the known fields and gives ip as its quota key', () => {
    expect(fast.parseFrame('{"type":"rate_limit_consume","id":7,"phoneNumber":"+14155552671","ip":"::ffff:10.0.0.1","x":1}')).toEqual({
      ok: true,
      request: { type: 'rate_limit_consume', id: 7, phoneNumber: '+14155552671', ip: '10.0.0.1' },
    });
  });
});
