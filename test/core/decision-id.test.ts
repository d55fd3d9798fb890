// Decision ids (src/core/decision-id.ts): what an outcome is attributed with, days after the
// decision, without a lookup, and what they must not give away.
import { describe, expect, it } from 'vitest';
import { DECISION_ID_HORIZON_MS, DECISION_ID_LENGTH, DecisionIds, rangeLabel } from '../../src/core/decision-id.js';
import { hashPhone } from '../../src/core/phone.js';

const KEY = 'decision-id-test-key-0123456789abcdef0123';
const OTHER = 'another-key-entirely-0123456789abcdef0123';
const NOW = Date.UTC(2026, 11, 7, 12);
const E164 = '+14155552671';
const facts = { hash: hashPhone(E164, KEY), region: 'US', range: rangeLabel(E164), atMs: NOW };

describe('decision ids', () => {
  it('carry the hash, region, 1,000-number range and instant, and decode only under the key', () => {
    const ids = new DecisionIds(KEY);
    const id = ids.encode(facts);
    expect(id).toHaveLength(DECISION_ID_LENGTH);
    expect(id).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(rangeLabel(E164)).toBe('+14155552');
    expect(ids.decode(id, NOW + 1000)).toEqual({ ok: true, facts, previousKey: false });
    expect(new DecisionIds(OTHER).decode(id, NOW)).toEqual({ ok: false, why: 'unknown' });
  });

  it('give nothing away: no digit run of the number, two ids of one decision differ', () => {
    const ids = new DecisionIds(KEY);
    const a = ids.encode(facts);
    const b = ids.encode(facts);
    expect(a).not.toBe(b);
    const decoded = Buffer.from(a, 'base64url');
    expect(decoded.includes(Buffer.from('4155552'))).toBe(false);
    expect(decoded.includes(Buffer.from(facts.hash, 'hex'))).toBe(false);
    // The region travels sealed next to the hash. (Asking the text not to contain "US" failed
    // about once in 40 runs: random base64 spells it by chance.)
    expect(decoded.includes(Buffer.concat([Buffer.from(facts.hash, 'hex'), Buffer.from('US')]))).toBe(false);
  });

  it('still decode under the previous key during a rotation', () => {
    const old = new DecisionIds(OTHER).encode({ ...facts, hash: hashPhone(E164, OTHER) });
    expect(new DecisionIds(KEY, OTHER).decode(old, NOW)).toMatchObject({ ok: true, previousKey: true, facts: { region: 'US', range: '+14155552' } });
    expect(new DecisionIds(KEY).decode(old, NOW)).toEqual({ ok: false, why: 'unknown' });
  });

  it('expire after the horizon; one from the future is unknown', () => {
    const ids = new DecisionIds(KEY);
    const id = ids.encode(facts);
    expect(ids.decode(id, NOW + DECISION_ID_HORIZON_MS).ok).toBe(true);
    expect(ids.decode(id, NOW + DECISION_ID_HORIZON_MS + 1)).toEqual({ ok: false, why: 'expired' });
    expect(ids.decode(id, NOW - 3_600_000)).toEqual({ ok: false, why: 'unknown' });
  });

  it('refuse every altered or truncated id, and junk of every type, without throwing', () => {
    const ids = new DecisionIds(KEY);
    const id = ids.encode(facts);
    for (let i = 0; i < id.length; i++) {
      const c = id[i] === 'A' ? 'B' : 'A';
      expect(ids.decode(id.slice(0, i) + c + id.slice(i + 1), NOW).ok).toBe(false);
    }
    for (const junk of [
      undefined,
      null,
      42,
      {},
      '',
      id.slice(1),
      `${id}=`,
      `${id}A`,
      id.replace(/./, '+'),
      'x'.repeat(DECISION_ID_LENGTH),
      '\u0000'.repeat(DECISION_ID_LENGTH),
    ]) {
      expect(ids.decode(junk, NOW).ok).toBe(false);
    }
  });

  it('keep an unknown region and a short number apart from real ones', () => {
    const ids = new DecisionIds(KEY);
    const id = ids.encode({ hash: facts.hash, region: undefined, range: '+1555', atMs: NOW });
    expect(ids.decode(id, NOW)).toMatchObject({ ok: true, facts: { region: undefined, range: '+1555' } });
  });
});
