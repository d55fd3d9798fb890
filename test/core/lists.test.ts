import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ListIndex, parsePrefix, prefixRangeProblem, type ListIndexEntry } from '../../src/core/lists.js';
import { longestNumberDigits } from '../../src/core/phone.js';

const entry = (e: Partial<ListIndexEntry> & Pick<ListIndexEntry, 'target'>): ListIndexEntry => ({
  targetType: 'number',
  kind: 'block',
  expiresAtMs: null,
  ...e,
});

describe('ListIndex', () => {
  it('finds a number by its hash and a range by the longest matching prefix', () => {
    const idx = new ListIndex([
      entry({ target: 'h1' }),
      entry({ targetType: 'prefix', target: '+44' }),
      entry({ targetType: 'prefix', target: '+4470', expiresAtMs: 5_000 }),
    ]);
    expect(idx.lookup('h1', '+14155552671', 0)?.entry.target).toBe('h1');
    expect(idx.lookup('hx', '+447012345678', 0)?.entry.target).toBe('+4470');
    // The longer entry expired: the shorter one still matches.
    expect(idx.lookup('hx', '+447012345678', 5_000)?.entry.target).toBe('+44');
    expect(idx.lookup('hx', '+14155552671', 0)).toBeUndefined();
  });

  it("lets a number's own allow entry win over a blocked range", () => {
    const idx = new ListIndex([entry({ target: 'h1', kind: 'allow' }), entry({ targetType: 'prefix', target: '+1415' })]);
    expect(idx.lookup('h1', '+14155552671', 0)?.kind).toBe('allow');
    expect(idx.lookup('h2', '+14155552672', 0)?.kind).toBe('block');
  });

  it('ignores expired entries', () => {
    const idx = new ListIndex([entry({ target: 'h1', expiresAtMs: 1_000 })]);
    expect(idx.lookup('h1', '+14155552671', 999)?.kind).toBe('block');
    expect(idx.lookup('h1', '+14155552671', 1_000)).toBeUndefined();
  });
});

describe('parsePrefix', () => {
  it('accepts + and digits, with the separators people type', () => {
    expect(parsePrefix('+44 70')).toBe('+4470');
    expect(parsePrefix('+1 (415)')).toBe('+1415');
  });
  it('refuses anything else', () => {
    for (const bad of ['4470', '+', '+0', '+44a', '++44', '+1234567890123456']) expect(parsePrefix(bad)).toBeUndefined();
  });
});

describe('prefixRangeProblem: a block or allow prefix must be a range of at least 1,000 numbers', () => {
  it('accepts ranges and refuses prefixes that leave fewer than 3 digits of the longest number of their code', () => {
    for (const ok of ['+4', '+4470', '+1415555', '+14155552', '+442079460', '+8008', '+80012345', '+99']) expect(prefixRangeProblem(ok), ok).toBeUndefined();
    // The example: with 10 of a UK number's 12 digits, 10 candidates are left.
    expect(prefixRangeProblem('+4420794601')).toMatch(
      /too long: numbers starting with it have at most 12 digits.*1,000 numbers.*Use at most 9 digits \(\+442079460\)/,
    );
    expect(prefixRangeProblem('+141555526')).toMatch(/at most 11 digits/);
    expect(prefixRangeProblem('+800123456')).toMatch(/at most 11 digits/);
    // No known calling code: E.164's 15 digits bound it.
    expect(prefixRangeProblem('+9991234567890')).toMatch(/at most 15 digits/);
  });

  it('never accepts a prefix whose longest number longestNumberDigits says is within 3 digits of it', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^\+[1-9]\d{0,14}$/), (prefix) => {
        const room = longestNumberDigits(prefix.slice(1)) - (prefix.length - 1);
        expect(prefixRangeProblem(prefix) === undefined).toBe(room >= 3);
      }),
    );
  });
});
