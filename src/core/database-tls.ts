// What a DATABASE_URL says about its transport, for the production refusal in src/core/config.ts:
// a URL without TLS is fine to a host only this machine or its private network can reach, and
// nowhere else (docs/protocol.md *Database*). Parsed by hand, not with `new URL`: a multi-host
// URL (`postgres://a:5432,b:5432/db`) is valid for libpq but not for WHATWG URL parsing.

/** sslmode values that encrypt (libpq's; `prefer`/`allow` may silently fall back to plain text). */
const TLS_MODES = new Set(['require', 'verify-ca', 'verify-full']);

/** The hosts a postgres:// URL names: its authority's comma-separated list and any `host=` parameters. */
export function databaseUrlHosts(url: string): string[] {
  const rest = url.replace(/^postgres(ql)?:\/\//i, '');
  const end = rest.search(/[/?#]/);
  const authority = end === -1 ? rest : rest.slice(0, end);
  const hostList = authority.slice(authority.lastIndexOf('@') + 1);
  const hosts = hostList.split(',').map((h) => stripPort(decodeOr(h.trim())));
  for (const [name, value] of queryParams(url)) {
    if (name === 'host') hosts.push(...value.split(',').map((h) => stripPort(h.trim())));
  }
  return hosts;
}

/** Does the URL ask for TLS, by `sslmode=require|verify-ca|verify-full` or `ssl=true|1`? */
export function databaseUrlUsesTls(url: string): boolean {
  let tls = false;
  for (const [name, value] of queryParams(url)) {
    const v = value.toLowerCase();
    if (name === 'sslmode') tls = TLS_MODES.has(v);
    else if (name === 'ssl' && (v === 'true' || v === '1')) tls = true;
  }
  return tls;
}

/**
 * A host reachable only from this machine or a private network: loopback, RFC 1918 and IPv6 ULA
 * addresses (Fly's 6PN is fdaa::/16), Fly's private names (`*.internal`, `*.flycast`), a Unix
 * socket path, no host at all (libpq's default: the local socket), and a name without a dot
 * (a compose service or /etc/hosts entry: public DNS names have one).
 */
export function isPrivateDatabaseHost(host: string): boolean {
  const h = host
    .toLowerCase()
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '');
  if (h === '' || h.startsWith('/') || h.startsWith('@')) return true;
  if (h === 'localhost' || h.endsWith('.localhost') || h.endsWith('.internal') || h.endsWith('.flycast')) return true;
  const v4 = ipv4(h);
  if (v4) {
    const [a, b] = v4;
    return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
  }
  if (h.includes(':')) {
    if (h === '::1') return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
    if (mapped) return isPrivateDatabaseHost(mapped[1]!);
    // fc00::/7: the first 16-bit group is fcxx or fdxx.
    return /^f[cd][0-9a-f]{0,2}:/.test(h);
  }
  return !h.includes('.');
}

/**
 * The production refusal: undefined when the URL is fine, otherwise the sentence saying what to
 * change. `source` names where the URL came from (DATABASE_URL, --database-url...).
 */
export function plainTextDatabaseProblem(url: string, source: string): string | undefined {
  if (databaseUrlUsesTls(url)) return undefined;
  const publicHosts = databaseUrlHosts(url).filter((h) => !isPrivateDatabaseHost(h));
  if (publicHosts.length === 0) return undefined;
  return (
    `${source} reaches ${publicHosts.join(', ')} without TLS, which NODE_ENV=production refuses outside loopback, private addresses ` +
    `(10/8, 172.16/12, 192.168/16, fc00::/7), names without a dot and *.internal/*.flycast: add sslmode=verify-full to the URL ` +
    `(with sslrootcert=/path/to/ca.pem when the server's certificate is not signed by a public CA), or sslmode=require to encrypt without checking the certificate`
  );
}

function queryParams(url: string): Array<[string, string]> {
  const q = url.indexOf('?');
  if (q === -1) return [];
  const hash = url.indexOf('#', q);
  return url
    .slice(q + 1, hash === -1 ? undefined : hash)
    .split('&')
    .filter(Boolean)
    .map((pair) => {
      const eq = pair.indexOf('=');
      return eq === -1
        ? [decodeOr(pair).toLowerCase(), '']
        : [decodeOr(pair.slice(0, eq)).toLowerCase(), decodeOr(pair.slice(eq + 1).replace(/\+/g, ' ')).trim()];
    });
}

function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1 || undefined);
  // A bare IPv6 address has several colons and no port.
  const colons = host.split(':').length - 1;
  return colons === 1 ? host.slice(0, host.indexOf(':')) : host;
}

function decodeOr(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function ipv4(host: string): [number, number, number, number] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number) as [number, number, number, number];
  return parts.every((p) => p <= 255) ? parts : undefined;
}
