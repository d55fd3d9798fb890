// libpq's multi-host connection strings, which node-postgres does not understand (pg-connection-
// string 2.14 throws "Invalid URL" on `postgresql://a:1,b:2/db` and takes `?host=a,b` as one host
// name): both forms are split here into one single-host URL per host; src/db/hosts.ts picks the
// writable one.
//
//   postgresql://user:pw@a:5432,b:5433/db?target_session_attrs=read-write
//   postgresql://user:pw@/db?host=a,b&port=5432,5433&target_session_attrs=read-write
//
// The daemon writes on every decision, so a URL always looks for the writable host (libpq's
// `read-write`, the default here); `primary` (not in recovery) is accepted as well. `any` and the
// standby variants make no sense for it and are refused.

export interface HostPort {
  host: string;
  port: number;
}

export interface DatabaseAddress {
  hosts: HostPort[];
  /** Which server counts as writable: libpq's target_session_attrs. */
  target: 'read-write' | 'primary';
  /** The URL for host `i`, without target_session_attrs and the multi-host parameters. */
  urlFor(i: number): string;
}

const DEFAULT_PORT = 5432;
const SESSION_ATTRS = new Set(['read-write', 'primary']);

/** Throws an Error whose message names what is wrong (never the password). */
export function parseDatabaseUrl(url: string): DatabaseAddress {
  const m = /^(postgres(?:ql)?:\/\/)([^@/?#]*@)?([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?$/.exec(url);
  if (!m) throw new Error('DATABASE_URL must look like postgresql://user:password@host:5432/database');
  const [, scheme, userinfo = '', authority = '', path = '', query = ''] = m;
  const params = new URLSearchParams(query.slice(1));
  const attrs = params.get('target_session_attrs') ?? 'read-write';
  if (!SESSION_ATTRS.has(attrs)) {
    throw new Error(`target_session_attrs=${attrs} is not supported: the daemon writes, so use read-write (or primary)`);
  }
  const portsParam = params.get('port')?.split(',') ?? [];
  let hosts: HostPort[];
  if (params.has('host')) {
    const names = params.get('host')!.split(',');
    if (portsParam.length > 1 && portsParam.length !== names.length)
      throw new Error(`?host= names ${names.length} hosts but ?port= ${portsParam.length} ports`);
    hosts = names.map((host, i) => ({ host: host.trim(), port: toPort(portsParam[portsParam.length > 1 ? i : 0]) }));
  } else {
    const parts = authority === '' ? [] : splitAuthority(authority);
    hosts = parts.map(({ host, port }) => ({ host, port: toPort(port ?? portsParam[0]) }));
    if (hosts.length === 0) hosts = [{ host: 'localhost', port: toPort(portsParam[0]) }];
  }
  if (hosts.some((h) => h.host === '')) throw new Error('DATABASE_URL names an empty host');
  const rest = new URLSearchParams(params);
  for (const k of ['host', 'port', 'target_session_attrs']) rest.delete(k);
  const restQuery = rest.toString();
  return {
    hosts,
    target: attrs as DatabaseAddress['target'],
    urlFor(i) {
      const h = hosts[i]!;
      // A Unix socket directory goes back into ?host= (a path cannot sit in the authority).
      if (h.host.startsWith('/')) {
        const q = new URLSearchParams(rest);
        q.set('host', h.host);
        q.set('port', String(h.port));
        return `${scheme}${userinfo}${path}?${q.toString()}`;
      }
      const name = h.host.includes(':') && !h.host.startsWith('[') ? `[${h.host}]` : h.host;
      return `${scheme}${userinfo}${name}:${h.port}${path}${restQuery ? `?${restQuery}` : ''}`;
    },
  };
}

function toPort(raw: string | undefined): number {
  if (raw === undefined || raw.trim() === '') return DEFAULT_PORT;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`DATABASE_URL has an invalid port "${raw}"`);
  return n;
}

function splitAuthority(authority: string): Array<{ host: string; port: string | undefined }> {
  return authority.split(',').map((part) => {
    const v6 = /^\[([^\]]*)\](?::(.*))?$/.exec(part);
    if (v6) return { host: v6[1]!, port: v6[2] };
    const i = part.lastIndexOf(':');
    return i < 0 ? { host: decodeURIComponent(part), port: undefined } : { host: decodeURIComponent(part.slice(0, i)), port: part.slice(i + 1) };
  });
}

export function hostLabel(h: HostPort): string {
  return h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}
