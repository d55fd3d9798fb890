import { describe, expect, it } from 'vitest';
import { ListIndex, parsePrefix, type ListIndexEntry } from '../../src/core/lists.js';

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
