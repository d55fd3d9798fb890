import { describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/core/database-url.js';
import { resolveConfig } from '../../src/core/config.js';
import { ConfigError } from '../../src/core/errors.js';

describe('parseDatabaseUrl (libpq multi-host syntax)', () => {
  it('splits hosts in the authority, each with its port, keeping user, database and other parameters', () => {
    const a = parseDatabaseUrl('postgresql://u:p%40ss@a.internal:5433,b.internal,[::1]:5435/db?target_session_attrs=read-write&sslmode=require');
    expect(a.hosts).toStrictEqual([
      { host: 'a.internal', port: 5433 },
      { host: 'b.internal', port: 5432 },
      { host: '::1', port: 5435 },
    ]);
    expect(a.target).toBe('read-write');
    expect([0, 1, 2].map((i) => a.urlFor(i))).toStrictEqual([
      'postgresql://u:p%40ss@a.internal:5433/db?sslmode=require',
      'postgresql://u:p%40ss@b.internal:5432/db?sslmode=require',
      'postgresql://u:p%40ss@[::1]:5435/db?sslmode=require',
    ]);
  });

  it('reads ?host= and ?port= lists (one port for all, or one each)', () => {
    const a = parseDatabaseUrl('postgres://u@/db?host=a,b&port=6000,6001&target_session_attrs=primary');
    expect(a.hosts).toStrictEqual([
      { host: 'a', port: 6000 },
      { host: 'b', port: 6001 },
    ]);
    expect(a.target).toBe('primary');
    expect(a.urlFor(1)).toBe('postgres://u@b:6001/db');
    expect(parseDatabaseUrl('postgres://u@/db?host=a,b&port=7000').hosts.map((h) => h.port)).toStrictEqual([7000, 7000]);
    // A Unix socket directory stays a parameter.
    expect(parseDatabaseUrl('postgres://u@/db?host=/run/postgresql').urlFor(0)).toBe('postgres://u@/db?host=%2Frun%2Fpostgresql&port=5432');
  });

  it('a single host is one host, its URL unchanged but for the attribute', () => {
    const a = parseDatabaseUrl('postgres://u:p@h:5432/db');
    expect(a.hosts).toHaveLength(1);
    expect(a.urlFor(0)).toBe('postgres://u:p@h:5432/db');
  });

  it('refuses what it cannot honour, naming it', () => {
    expect(() => parseDatabaseUrl('postgres://u@a,b/db?target_session_attrs=standby')).toThrow(/target_session_attrs=standby is not supported/);
    expect(() => parseDatabaseUrl('postgres://u@a:99999/db')).toThrow(/invalid port "99999"/);
    expect(() => parseDatabaseUrl('postgres://u@/db?host=a,b,c&port=1,2')).toThrow(/3 hosts but \?port= 2 ports/);
    expect(() => parseDatabaseUrl('postgres://u@a,,b/db')).toThrow(/empty host/);
  });

  it('config reports a bad multi-host URL and a RATELIMIT_LISTEN_URL without DATABASE_URL', () => {
    expect(() => resolveConfig({}, { DATABASE_URL: 'postgres://u@a,b/db?target_session_attrs=any' })).toThrow(ConfigError);
    expect(() => resolveConfig({}, { RATELIMIT_LISTEN_URL: 'postgres://u@a/db' })).toThrow(/RATELIMIT_LISTEN_URL needs DATABASE_URL/);
    const c = resolveConfig({}, { DATABASE_URL: 'postgres://u@a:1,b:2/db?target_session_attrs=read-write', RATELIMIT_LISTEN_URL: 'postgres://u@a:1/db' });
    expect(c.listenUrl).toBe('postgres://u@a:1/db');
  });
});
