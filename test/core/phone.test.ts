import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { hashPhone, maskPhone, normalizePhone } from '../../src/core/phone.js';
import { InvalidPhoneNumberError } from '../../src/core/errors.js';
import { prefixKey } from '../../src/core/policy/counters.js';

const KEY = 'k'.repeat(40);

describe('normalizePhone', () => {
  it('treats common spellings of one number as one E.164 number', () => {
    for (const s of ['+1 (415) 555-2671', '+14155552671', '+1.415.555.2671', ' +1 415 555 2671 ', '+1-415-555-2671']) {
      expect(normalizePhone(s)).toEqual({ e164: '+14155552671', region: 'US' });
    }
  });

  it('accepts possible-but-not-valid fictional numbers, with no region', () => {
    expect(normalizePhone('+1 555 555 0100')).toEqual({ e164: '+15555550100', region: undefined });
  });

  it('knows other countries', () => {
    expect(normalizePhone('+44 20 7946 0958')).toEqual({ e164: '+442079460958', region: 'GB' });
    expect(normalizePhone('+33 1 23 45 67 89').region).toBe('FR');
  });

  it.each([
    ['', /empty/],
    ['4155552671', /international format/],
    ['+1555', /wrong number of digits/],
    ['+999123456789', /unknown country/],
    ['call +14155552671', /letters are not accepted/],
    ['+14155552671 ext 12', /extensions are not accepted/],
    ['+1'.padEnd(80, '5'), /longer than/],
    ['+1 415 555 2671 <script>', /contains "<", which is not allowed/],
  ])('rejects %j', (input, message) => {
    expect(() => normalizePhone(input)).toThrow(InvalidPhoneNumberError);
    expect(() => normalizePhone(input)).toThrow(message);
  });

  it('rejects non-strings', () => {
    for (const v of [undefined, null, 14155552671, {}, ['+14155552671']]) {
      expect(() => normalizePhone(v)).toThrow(InvalidPhoneNumberError);
    }
  });

  it('never throws anything but InvalidPhoneNumberError, whatever the input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom(...'+0123456789 ().-') })), (s) => {
        try {
          const r = normalizePhone(s);
          expect(r.e164).toMatch(/^\+[1-9]\d{1,14}$/);
        } catch (err) {
          expect(err).toBeInstanceOf(InvalidPhoneNumberError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('is idempotent: normalising an E.164 result gives it back', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^\+[1-9][0-9 ().-]{6,20}$/), (s) => {
        let r;
        try {
          r = normalizePhone(s);
        } catch {
          return;
        }
        expect(normalizePhone(r.e164)).toEqual(r);
      }),
      { numRuns: 2000 },
    );
  });

  it('formatting characters never change the number', () => {
    const sep = fc.constantFrom('', ' ', '-', '.', '(', ')');
    fc.assert(
      fc.property(fc.array(sep, { minLength: 10, maxLength: 10 }), (seps) => {
        const digits = '4155552671';
        const spelled = '+1' + [...digits].map((d, i) => seps[i] + d).join('');
        let r;
        try {
          r = normalizePhone(spelled);
        } catch {
          return; // e.g. unbalanced parentheses may be refused; what is accepted must be the same number
        }
        expect(r.e164).toBe('+14155552671');
      }),
    );
  });
});

describe('hashPhone', () => {
  it('is HMAC-SHA256 hex of the E.164 form', () => {
    // Independent reference: RFC 4231 test case 2 ("Jefe").
    expect(hashPhone('what do ya want for nothing?', 'Jefe')).toBe('5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  });

  it('depends on the key and on every digit, and never contains the number', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^\+1[2-9]\d{9}$/), fc.string({ minLength: 32 }), (e164, key) => {
        const h = hashPhone(e164, key);
        expect(h).toMatch(/^[0-9a-f]{64}$/);
        expect(h).not.toContain(e164.slice(1));
        expect(hashPhone(e164, key + 'x')).not.toBe(h);
        const flipped = e164.slice(0, -1) + ((Number(e164.at(-1)) + 1) % 10);
        expect(hashPhone(flipped, key)).not.toBe(h);
      }),
    );
  });

  it('spellings of one number share one hash', () => {
    const a = normalizePhone('+1 (415) 555-2671').e164;
    const b = normalizePhone('+14155552671').e164;
    expect(hashPhone(a, KEY)).toBe(hashPhone(b, KEY));
  });
});

describe('maskPhone', () => {
  it('matches the contract example: the number without its last three digits', () => {
    expect(maskPhone('+14155552671')).toBe('+14155552•••');
    expect(maskPhone('+442079460123')).toBe('+442079460•••');
  });

  it("shows exactly the digits of the number's 1,000-number range key, never one more, and keeps the length", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^\+[1-9]\d{0,14}$/), (e164) => {
        const m = maskPhone(e164);
        const hidden = [...m].filter((c) => c === '•').length;
        expect(m.length).toBe(e164.length);
        // At least 3 hidden: at least 1,000 candidates, however short the number.
        expect(hidden).toBeGreaterThanOrEqual(Math.min(3, e164.length - 1));
        const shown = m.slice(0, m.indexOf('•'));
        expect(e164.startsWith(shown)).toBe(true);
        // Never more than the range key (prefix digits 3) shows.
        expect(prefixKey(e164, 3).startsWith(shown)).toBe(true);
        expect(/^\+\d*•+$/.test(m)).toBe(true);
      }),
    );
  });
});

describe('normalizePhone says what is wrong with a refused spelling (issue #13)', () => {
  const refusal = (input: string): string => {
    try {
      normalizePhone(input);
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidPhoneNumberError);
      return (err as Error).message;
    }
    throw new Error(`${JSON.stringify(input)} was accepted`);
  };

  it.each(['+1415555CALL', '+1 800 FLOWERS', '+44 20 7946 OK58', '+7 495 ДОМ-1234'])('letters: %j', (input) => {
    const m = refusal(input);
    expect(m).toMatch(/letters are not accepted; type the digits instead/);
    expect(m).toMatch(/ABC=2/);
  });

  it.each(['+14155552671 ext. 12', '+14155552671 ext 12', '+1 415 555 2671 extension 12', '+14155552671x12', '+14155552671 #12', '+14155552671;ext=12'])(
    'an extension: %j',
    (input) => {
      expect(refusal(input)).toMatch(/extensions are not accepted; send the number without it/);
    },
  );

  it.each(['++14155552671', '+ +14155552671', '++1 415 555 2671'])('a doubled "+": %j', (input) => {
    expect(refusal(input)).toMatch(/more than one "\+"/);
  });

  it('a "+" after the start', () => {
    expect(refusal('+1 415 555 2671 +1')).toMatch(/"\+" at position 17: "\+" may only come first/);
  });

  it.each([
    ['4155552671', /international format: add "\+" and the country code/],
    ['(415) 555-2671', /international format: add "\+" and the country code/],
    ['0044 20 7946 0958', /replace the leading "00" with "\+"/],
    ['+', /no digits after "\+"/],
  ])('a national number or no number: %j', (input, message) => {
    expect(refusal(input)).toMatch(message);
  });

  it.each([
    ['+1 415 555 2671 <script>', '"<"'],
    ['+1/415/555/2671', '"/"'],
    ['+1_415_555_2671', '"_"'],
    ['+1\t415 555 2671', '"\\t" (U+0009)'],
    ['+1\u2013415\u20135552671', '"\u2013" (U+2013)'],
    ['\uff0b14155552671', '"\uff0b" (U+FF0B)'],
  ])('a stray character, named: %j', (input, named) => {
    const m = refusal(input);
    expect(m).toContain(`contains ${named}, which is not allowed`);
  });

  it('never echoes the number', () => {
    for (const input of ['+1650253CALL', '+16502530000 ext. 12', '++16502530000', '+16502530000 <b>', '6502530000', '+1 650 253 0000 +1']) {
      expect(refusal(input)).not.toMatch(/650253|2530000/);
    }
  });

  it('explains only: what was accepted before is accepted alike, and nothing else', () => {
    const allowed = /^\+[0-9 ().\-\u00a0]+$/;
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'+0123456789 ().-xXeE#;=/\u00a0ABC') }), (s) => {
        let accepted = true;
        try {
          normalizePhone(s);
        } catch {
          accepted = false;
        }
        if (accepted) expect(s.trim()).toMatch(allowed);
      }),
      { numRuns: 2000 },
    );
  });
});
