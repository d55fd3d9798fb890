// Client addresses as per-IP quota keys (issue #11). One client must map to one key however its
// address is spelled, so the key is derived from the parsed address, never from the text:
// `::ffff:5.6.7.8`, `::FFFF:5.6.7.8`, `0:0:0:0:0:ffff:5.6.7.8` and `5.6.7.8` are one client.
// IPv6 keys are the /64 network: an ISP hands a whole /64 (or more) to one subscriber, whose
// devices pick any address in it at will (RFC 4941 privacy addresses), so per-address IPv6 quotas
// are free to multiply.
import ipaddr from 'ipaddr.js';

export type CanonicalAddress =
  | {
      ok: true;
      /** The per-IP quota key: the dotted quad for IPv4, the /64 network for IPv6 (`2001:db8:1:2::/64`). */
      key: string;
      /** The one address, canonical (RFC 5952 for IPv6), for logs. */
      address: string;
    }
  | { ok: false; message: string };

// The form nearly every address arrives in (a socket's peer, Fly-Client-IP): four decimal parts
// 0-255 without leading zeros. Such text is already its own canonical form, so it needs no parse.
const CANONICAL_IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** The longest IPv6 text form is 45 characters (with an embedded IPv4), plus brackets. */
const MAX_INPUT_LENGTH = 64;
const IPV6_KEY_PREFIX_BITS = 64;

/** Quotes untrusted input for a message, bounded so a hostile header cannot flood the logs. */
function quote(text: string): string {
  return JSON.stringify(text.length > MAX_INPUT_LENGTH ? `${text.slice(0, MAX_INPUT_LENGTH)}…` : text);
}

function fail(message: string): CanonicalAddress {
  return { ok: false, message };
}

/**
 * Parses an address from a socket, a proxy header (`Fly-Client-IP`) or a client's `ip` field.
 * Accepts IPv4 as four decimal parts and IPv6 in any RFC 4291 spelling, optionally in brackets
 * (`[::1]`, as in URLs and some proxies). Refuses:
 * - IPv4 shorthand and non-decimal parts (`127.1`, `0x7f.0.0.1`, `010.0.0.1`): inet_aton reads
 *   these one way and humans another; no proxy sends them.
 * - zone ids (`fe80::1%eth0`): they name an interface of one host, so they are meaningless from
 *   another host, and letting them through would make `fe80::1%a` and `fe80::1%b` two quotas.
 * - ports (`[::1]:80`, `1.2.3.4:80`): the caller must strip them; guessing would accept junk.
 */
export function canonicalAddress(text: string): CanonicalAddress {
  if (CANONICAL_IPV4.test(text)) return { ok: true, key: text, address: text };
  let s = text.trim();
  if (s.length === 0) return fail('the address is empty');
  if (s.length > MAX_INPUT_LENGTH) return fail(`${quote(s)} is longer than ${MAX_INPUT_LENGTH} characters, so it is not an IP address`);
  const bracketed = s.startsWith('[') && s.endsWith(']');
  if (bracketed) s = s.slice(1, -1).trim();
  if (s.includes('%')) return fail(`${quote(text.trim())} has a zone id (the part after "%"), which is local to one host; send the address without it`);

  if (!bracketed && ipaddr.IPv4.isValid(s)) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(s)) {
      return fail(`${quote(s)} is not an IPv4 address in dotted-quad form (four decimal numbers 0-255 without leading zeros, e.g. 203.0.113.9)`);
    }
    const v4 = ipaddr.IPv4.parse(s).toString();
    return { ok: true, key: v4, address: v4 };
  }
  if (!ipaddr.IPv6.isValid(s)) {
    if (/^\[.*\]:\d+$|^[0-9.]+:\d+$/.test(text.trim())) {
      return fail(`${quote(text.trim())} has a port; send the address without it`);
    }
    return fail(`${quote(text.trim())} is not an IPv4 or IPv6 address`);
  }
  const v6 = ipaddr.IPv6.parse(s);
  if (v6.isIPv4MappedAddress()) {
    // A dual-stack socket reports IPv4 clients this way; they must share the IPv4 client's quota.
    const v4 = v6.toIPv4Address().toString();
    return { ok: true, key: v4, address: v4 };
  }
  const keptParts = IPV6_KEY_PREFIX_BITS / 16;
  const network = new ipaddr.IPv6(v6.parts.map((part, i) => (i < keptParts ? part : 0)));
  return { ok: true, key: `${network.toRFC5952String()}/${IPV6_KEY_PREFIX_BITS}`, address: v6.toRFC5952String() };
}

/**
 * The wider IPv6 networks a per-IP quota key also counts against: an ISP hands a subscriber a
 * /64, a /56 (256 /64s) or a /48 (65,536 /64s), so per-/64 quotas alone give whoever holds a /48
 * 65,536 fresh ones. Each entry: the network's key and how many times the /64 limit it gets
 * (IPV6_WIDER_LIMIT_FACTORS). Empty for an IPv4 key (or anything that is not a /64 key).
 */
export const IPV6_WIDER_LIMIT_FACTORS: ReadonlyArray<{ bits: 56 | 48; factor: number }> = [
  // A household behind a /56 may run a few networks (guest Wi-Fi, a VPN): 16 /64s' worth.
  { bits: 56, factor: 16 },
  // A /48 is a site: an office or a small ISP customer; 64 /64s' worth, not 65,536.
  { bits: 48, factor: 64 },
];

export function widerIpv6Networks(key: string): Array<{ key: string; bits: number; factor: number }> {
  if (!key.endsWith(`/${IPV6_KEY_PREFIX_BITS}`)) return [];
  const text = key.slice(0, -`/${IPV6_KEY_PREFIX_BITS}`.length);
  if (!ipaddr.IPv6.isValid(text)) return [];
  const parts = ipaddr.IPv6.parse(text).parts;
  return IPV6_WIDER_LIMIT_FACTORS.map(({ bits, factor }) => {
    const masked = parts.map((part, i) => {
      const kept = Math.max(0, Math.min(16, bits - i * 16));
      return kept === 0 ? 0 : part & (0xffff << (16 - kept)) & 0xffff;
    });
    return { key: `${new ipaddr.IPv6(masked).toRFC5952String()}/${bits}`, bits, factor };
  });
}
