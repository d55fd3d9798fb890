import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { canonicalAddress } from '../../src/core/address.js';

function ok(text: string): { key: string; address: string } {
  const r = canonicalAddress(text);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(text)} to be accepted, got: ${r.message}`);
  return { key: r.key, address: r.address };
}

function refused(text: string): string {
  const r = canonicalAddress(text);
  if (r.ok) throw new Error(`expected ${JSON.stringify(text)} to be refused, got key ${r.key}`);
  return r.message;
}

describe('canonicalAddress', () => {
  it('gives every spelling of one IPv4 client one key (issue #11)', () => {
    for (const s of ['5.6.7.8', '::ffff:5.6.7.8', '::FFFF:5.6.7.8', '0:0:0:0:0:ffff:5.6.7.8', '::ffff:0506:0708', ' 5.6.7.8 ', '[::ffff:5.6.7.8]']) {
      expect(ok(s)).toEqual({ key: '5.6.7.8', address: '5.6.7.8' });
    }
  });

  it('keys IPv6 by its /64 network in canonical form, and keeps the address for logs', () => {
    expect(ok('2001:db8:1:2:aaaa::1')).toEqual({ key: '2001:db8:1:2::/64', address: '2001:db8:1:2:aaaa::1' });
    expect(ok('2001:0DB8:0001:0002:0000:0000:0000:0001')).toEqual({ key: '2001:db8:1:2::/64', address: '2001:db8:1:2::1' });
    expect(ok('[2001:db8::1]')).toEqual({ key: '2001:db8::/64', address: '2001:db8::1' });
    expect(ok('::1')).toEqual({ key: '::/64', address: '::1' });
  });

  it('puts every address of one /64 under one key, and neighbouring /64s under different keys', () => {
    const hex = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
    fc.assert(
      fc.property(fc.array(hex, { minLength: 4, maxLength: 4 }), fc.array(hex, { minLength: 4, maxLength: 4 }), (a, b) => {
        const prefix = '2001:db8:42:7';
        expect(ok(`${prefix}:${a.join(':')}`).key).toBe('2001:db8:42:7::/64');
        expect(ok(`${prefix}:${b.join(':')}`).key).toBe('2001:db8:42:7::/64');
      }),
    );
    expect(ok('2001:db8:42:8::1').key).toBe('2001:db8:42:8::/64');
  });

  it('gives any IPv4 a.b.c.d and its IPv4-mapped IPv6 spellings the same key', () => {
    const octet = fc.integer({ min: 0, max: 255 });
    fc.assert(
      fc.property(fc.tuple(octet, octet, octet, octet), fc.boolean(), ([a, b, c, d], upper) => {
        const dotted = `${a}.${b}.${c}.${d}`;
        const hex = (hi: number, lo: number) => ((hi << 8) | lo).toString(16);
        const ffff = upper ? 'FFFF' : 'ffff';
        const spellings = [
          dotted,
          `::${ffff}:${dotted}`,
          `0:0:0:0:0:${ffff}:${dotted}`,
          `::${ffff}:${hex(a, b)}:${hex(c, d)}`,
          `0000:0000:0000:0000:0000:${ffff}:${hex(a, b).padStart(4, '0')}:${hex(c, d).padStart(4, '0')}`,
          `[::${ffff}:${dotted}]`,
        ];
        for (const s of spellings) expect(ok(s)).toEqual({ key: dotted, address: dotted });
      }),
    );
  });

  it.each([
    ['junk-1', /"junk-1" is not an IPv4 or IPv6 address/],
    ['', /empty/],
    ['   ', /empty/],
    ['1.2.3.256', /not an IPv4 or IPv6 address/],
    ['1.2.3', /dotted-quad/],
    ['127.1', /dotted-quad/],
    ['0x7f.0.0.1', /dotted-quad/],
    ['010.0.0.1', /dotted-quad/],
    ['fe80::1%eth0', /zone id/],
    ['[fe80::1%25eth0]', /zone id/],
    ['1.2.3.4:8080', /has a port/],
    ['[::1]:8080', /has a port/],
    ['2001:db8::1::2', /not an IPv4 or IPv6 address/],
    ['1.2.3.4, 5.6.7.8', /not an IPv4 or IPv6 address/],
    ['[1.2.3.4]', /not an IPv4 or IPv6 address/],
    ['1'.repeat(200), /longer than 64/],
  ])('refuses %j, saying what is wrong', (input, message) => {
    expect(refused(input)).toMatch(message);
  });

  it('never throws, and whatever it accepts maps back to itself', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.[]%') })), (s) => {
        const r = canonicalAddress(s);
        if (!r.ok) return;
        expect(canonicalAddress(r.address)).toEqual(r);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('canonicalAddress IPv4 fast path', () => {
  // The fast path returns canonical dotted quads unparsed; anything near that form must get the
  // same answer as the full parse (ipaddr.js), accepted or refused.
  const slow = (text: string) => canonicalAddress(` ${text}`); // leading space: never the fast path
  const part = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom('00', '01', '010', '0x1', '', '-1', '255', '256', '1e1', ' 1'));
  it('agrees with the full parse on dotted quads, valid or not', () => {
    fc.assert(
      fc.property(fc.array(part, { minLength: 3, maxLength: 5 }), fc.constantFrom('.', ':', '..'), (parts, sep) => {
        const text = parts.join(sep);
        const fast = canonicalAddress(text);
        const full = slow(text);
        expect(fast.ok).toBe(full.ok);
        if (fast.ok && full.ok) expect({ key: fast.key, address: fast.address }).toEqual({ key: full.key, address: full.address });
      }),
      { numRuns: 5_000 },
    );
  });
  it('agrees with the full parse on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), (text) => {
        const fast = canonicalAddress(text);
        const full = slow(text);
        expect(fast.ok).toBe(full.ok);
        if (fast.ok && full.ok) expect(fast.key).toBe(full.key);
      }),
      { numRuns: 5_000 },
    );
  });
});
