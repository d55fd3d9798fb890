// The request target (the path and query of the request line) as routes see it, parsed without
// `new URL`: the target is attacker input, and `new URL('//x:99999/ws', base)` or
// `new URL('http://[/ws')` throws; thrown inside the 'upgrade' listener it took the process down.
// Nothing here throws: every target is either a route's path and query or a reason for a 400.
// Shared by the HTTP and WebSocket transports so both answer the same target the same way.

/** A target longer than this is refused: no route or token needs more, and logs stay bounded. */
export const MAX_TARGET_BYTES = 2_048;

export type RequestTarget =
  | {
      ok: true;
      /** The path exactly as sent (no decoding, no dot-segment removal): routes match it byte for byte. */
      path: string;
      /** The query's parameters (URLSearchParams never throws on malformed escapes). */
      params: URLSearchParams;
    }
  | { ok: false; message: string };

// RFC 3986 pchar (unreserved, sub-delims, ':', '@') plus '/', with '%' only as '%' HEXDIG HEXDIG.
const PATH = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/;
// The query also allows '?' and, as browsers send them unescaped, a few characters RFC 3986
// leaves out ("|", "^", "`", "{", "}", "[", "]"); escapes must still be well formed.
const QUERY = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?|^`{}[\]]|%[0-9A-Fa-f]{2})*$/;
// absolute-form (RFC 9112 3.2.2): scheme, authority, then the path and query.
const ABSOLUTE = /^https?:\/\/([^/?#]*)(.*)$/i;
// An authority a client may name: a host name or IPv4 literal, or a bracketed IPv6 literal, with
// an optional port 0-65535. No userinfo (`user@`): a request line has no use for one.
const AUTHORITY = /^(?:[A-Za-z0-9\-._~]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;

/** Unwrapped, quoted and cut short: safe to put in a reply or a log line. */
export function quoteTarget(raw: string): string {
  return JSON.stringify(raw.length > 64 ? `${raw.slice(0, 64)}…` : raw);
}

export function parseTarget(raw: string | undefined): RequestTarget {
  const target = raw ?? '/';
  if (target.length > MAX_TARGET_BYTES) return { ok: false, message: `the request target is longer than ${MAX_TARGET_BYTES} bytes` };
  let rest = target;
  if (!rest.startsWith('/')) {
    const abs = ABSOLUTE.exec(rest);
    if (!abs) return { ok: false, message: `the request target ${quoteTarget(target)} is neither a path (/…) nor an absolute http URL` };
    const authority = AUTHORITY.exec(abs[1]!);
    if (!authority || (authority[1] !== undefined && Number(authority[1]) > 65_535)) {
      return { ok: false, message: `the request target ${quoteTarget(target)} names an invalid host or port` };
    }
    rest = abs[2] === '' ? '/' : abs[2]!;
    if (!rest.startsWith('/') && !rest.startsWith('?')) return { ok: false, message: `the request target ${quoteTarget(target)} has no path` };
    if (rest.startsWith('?')) rest = `/${rest}`;
  }
  // "//host/path" is not a path (RFC 3986 path-absolute cannot begin with "//"); URL parsers read
  // it as an authority, so refusing it keeps every reader of the target in agreement.
  if (rest.startsWith('//')) return { ok: false, message: `the request target ${quoteTarget(target)} begins with "//"; send a path such as /ws` };
  const q = rest.indexOf('?');
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? '' : rest.slice(q + 1);
  if (rest.includes('#')) return { ok: false, message: `the request target ${quoteTarget(target)} carries a fragment ("#"), which a client never sends` };
  if (!PATH.test(path))
    return { ok: false, message: `the request target's path ${quoteTarget(path)} has a character that must be percent-encoded, or a malformed "%" escape` };
  if (!QUERY.test(query)) return { ok: false, message: `the request target's query has a character that must be percent-encoded, or a malformed "%" escape` };
  return { ok: true, path, params: new URLSearchParams(query) };
}
