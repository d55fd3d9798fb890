// The start-up refusals of issue 17: no anonymous production, no short tokens, no short key with
// a named database, no plain-text database URL to a public host in production. Each is one of the
// problems resolveConfig reports together.
import { describe, expect, it } from 'vitest';
import { isLoopbackHost, resolveConfig } from '../../src/core/config.js';
import { databaseUrlHosts, databaseUrlUsesTls, isPrivateDatabaseHost, plainTextDatabaseProblem } from '../../src/core/database-tls.js';
import { ConfigError } from '../../src/core/errors.js';

const KEY = 'config-trust-key-0123456789abcdefghijkl';
const TOKEN = 'config-trust-token-0123456789';
const PROD = { NODE_ENV: 'production', PHONE_ENCRYPTION_KEY: KEY };
const SERVE = { serve: true };

function problems(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected resolveConfig to refuse');
}

describe('serve without tokens', () => {
  it('is refused with NODE_ENV=production, naming both variables', () => {
    const msg = problems(() => resolveConfig({}, PROD, SERVE));
    expect(msg).toMatch(/RATELIMIT_API_TOKENS is not set and NODE_ENV=production/);
    expect(msg).toContain('RATELIMIT_ALLOW_ANONYMOUS=1');
    expect(msg).toContain('Authorization: Bearer');
  });

  it.each(['0.0.0.0', '::', '10.0.0.5', 'example.com'])('is refused listening on %s, by flag or HOST', (host) => {
    expect(problems(() => resolveConfig({}, { HOST: host }, SERVE))).toContain(`HOST=${host} is not a loopback address`);
    expect(problems(() => resolveConfig({ host }, {}, SERVE))).toContain(`--host=${host} is not a loopback address`);
  });

  it.each(['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]'])('starts on loopback %s outside production (the newcomer path)', (host) => {
    expect(resolveConfig({ host }, {}, SERVE).apiTokens).toEqual([]);
  });

  it('starts with the defaults (npm ci && node bin/ratelimit.js serve)', () => {
    expect(resolveConfig({}, {}, SERVE).host).toBe('127.0.0.1');
  });

  it('starts when RATELIMIT_ALLOW_ANONYMOUS=1 says it is meant', () => {
    expect(resolveConfig({}, { ...PROD, HOST: '::', RATELIMIT_ALLOW_ANONYMOUS: '1' }, SERVE).apiTokens).toEqual([]);
    expect(problems(() => resolveConfig({}, { ...PROD, RATELIMIT_ALLOW_ANONYMOUS: '0' }, SERVE))).toMatch(/RATELIMIT_API_TOKENS is not set/);
    expect(problems(() => resolveConfig({}, { ...PROD, RATELIMIT_ALLOW_ANONYMOUS: 'yes' }, SERVE))).toMatch(/RATELIMIT_ALLOW_ANONYMOUS must be 1/);
  });

  it('starts with a token in production', () => {
    expect(resolveConfig({}, { ...PROD, HOST: '::', RATELIMIT_API_TOKENS: TOKEN }, SERVE).apiTokens).toEqual([TOKEN]);
  });

  it('does not concern admin commands, which open no port', () => {
    expect(resolveConfig({}, { ...PROD, HOST: '::' }).apiTokens).toEqual([]);
  });

  it('isLoopbackHost', () => {
    expect(['127.0.0.1', '127.255.0.9', 'LOCALHOST', '::1', '[::1]', '::ffff:127.0.0.1'].every(isLoopbackHost)).toBe(true);
    expect(['0.0.0.0', '::', '', '128.0.0.1', 'localhost.example.com', '127.0.0.1.nip.io', '::ffff:10.0.0.1'].some(isLoopbackHost)).toBe(false);
  });
});

describe('RATELIMIT_API_TOKENS', () => {
  it('refuses tokens shorter than 16 characters, counting them, never echoing them', () => {
    const msg = problems(() => resolveConfig({}, { RATELIMIT_API_TOKENS: `${TOKEN},short-secret,abc` }));
    expect(msg).toContain('2 tokens shorter than 16 characters');
    expect(msg).not.toContain('short-secret');
    expect(resolveConfig({}, { RATELIMIT_API_TOKENS: 'x'.repeat(16) }).apiTokens).toEqual(['x'.repeat(16)]);
  });
});

describe('PHONE_ENCRYPTION_KEY with a named database', () => {
  it.each([
    ['DATABASE_URL', {}, { DATABASE_URL: 'postgres://db.internal/x' }],
    ['FLY_DATABASE_URL', {}, { FLY_DATABASE_URL: 'postgres://db.internal/x' }],
    ['--database-url', { databaseUrl: 'postgres://db.internal/x' }, {}],
  ])('refuses a short key when %s names one, outside production too', (source, flags, env) => {
    const msg = problems(() => resolveConfig(flags, { ...env, PHONE_ENCRYPTION_KEY: 'k'.repeat(31) }));
    expect(msg).toContain(`at least 32 characters with a database named (${source})`);
    expect(msg).toContain('openssl rand -base64 48');
    expect(resolveConfig(flags, { ...env, PHONE_ENCRYPTION_KEY: KEY }).phoneKey).toBe(KEY);
  });

  it('leaves a missing key to the commands that hash (db init and the reports run without one)', () => {
    expect(resolveConfig({}, { DATABASE_URL: 'postgres://db.internal/x' }).phoneKey).toBeUndefined();
    expect(problems(() => resolveConfig({}, { DATABASE_URL: 'postgres://db.internal/x', PHONE_ENCRYPTION_KEY: '' }))).toMatch(/set but empty/);
  });

  it('still lets the embedded default run with a short key (warned when it is loaded)', () => {
    expect(resolveConfig({}, { PHONE_ENCRYPTION_KEY: 'short' }).phoneKey).toBe('short');
  });
});

describe('a plain-text DATABASE_URL in production', () => {
  it.each([
    'postgres://u:p@db.example.com/x',
    'postgres://u:p@db.example.com/x?sslmode=disable',
    'postgres://u:p@db.example.com/x?sslmode=prefer',
    'postgres://u:p@203.0.113.7:5432/x',
    'postgres://u:p@[2001:db8::7]:5432/x',
    'postgres://u:p@db1.internal:5432,db.example.com:5432/x',
    'postgres://u:p@/x?host=db.example.com',
    'postgres://u:p@172.32.0.1/x',
  ])('refuses %s and says how to fix it', (url) => {
    const msg = problems(() => resolveConfig({}, { ...PROD, DATABASE_URL: url }));
    expect(msg).toMatch(/DATABASE_URL reaches .* without TLS/);
    expect(msg).toContain('sslmode=verify-full');
    expect(msg).not.toContain(':p@');
  });

  it.each([
    'postgres://u:p@db.example.com/x?sslmode=verify-full',
    'postgres://u:p@db.example.com/x?sslmode=require',
    'postgres://u:p@db.example.com/x?sslrootcert=/ca.pem&sslmode=verify-ca',
    'postgres://u:p@db.example.com/x?ssl=true',
    'postgres://u:p@my-db.flycast:5432/x?sslmode=disable',
    'postgres://u:p@top2.nearest.of.my-db.internal:5432/x',
    'postgres://u:p@localhost/x',
    'postgres://u:p@127.0.0.1:5432/x',
    'postgres://u:p@[::1]:5432/x',
    'postgres://u:p@10.1.2.3/x',
    'postgres://u:p@172.16.0.1/x',
    'postgres://u:p@192.168.1.10/x',
    'postgres://u:p@[fdaa:0:1:a7b:1::2]:5432/x',
    'postgres://u:p@postgres:5432/ratelimit?sslmode=disable',
    'postgres://u:p@/x?host=/var/run/postgresql',
    'postgres:///x',
  ])('accepts %s', (url) => {
    expect(resolveConfig({}, { ...PROD, DATABASE_URL: url }).databaseUrl).toBe(url);
  });

  it('is allowed outside production (a developer against a test server)', () => {
    expect(resolveConfig({}, { DATABASE_URL: 'postgres://u:p@db.example.com/x', PHONE_ENCRYPTION_KEY: KEY }).databaseUrl).toBeDefined();
  });

  it('is reported together with the other problems', () => {
    const msg = problems(() => resolveConfig({}, { NODE_ENV: 'production', DATABASE_URL: 'postgres://db.example.com/x', RATELIMIT_API_TOKENS: 'abc' }, SERVE));
    expect(msg).toContain('without TLS');
    expect(msg).toContain('PHONE_ENCRYPTION_KEY');
    expect(msg).toContain('shorter than 16');
  });
});

describe('database URL parsing', () => {
  it('finds every host, without ports, credentials or brackets lost', () => {
    expect(databaseUrlHosts('postgresql://u:p%40ss@a.example:5432,[fd00::1]:6432,b/db?host=c&x=1')).toEqual(['a.example', '[fd00::1]', 'b', 'c']);
    expect(databaseUrlHosts('postgres://u@h')).toEqual(['h']);
  });

  it('reads the last sslmode, like libpq', () => {
    expect(databaseUrlUsesTls('postgres://h/db?sslmode=require&sslmode=disable')).toBe(false);
    expect(databaseUrlUsesTls('postgres://h/db?SSLMODE=VERIFY-FULL')).toBe(true);
  });

  it('never throws on hostile input', () => {
    for (const url of ['postgres://', 'postgres://%zz/db?%zz=%zz', 'postgres://[/x', 'postgres://a,,b/', `postgres://${'a'.repeat(10_000)}`]) {
      expect(() => plainTextDatabaseProblem(url, 'DATABASE_URL')).not.toThrow();
    }
  });

  it('private hosts', () => {
    expect(isPrivateDatabaseHost('[::ffff:10.0.0.1]')).toBe(true);
    expect(isPrivateDatabaseHost('::ffff:8.8.8.8')).toBe(false);
    expect(isPrivateDatabaseHost('fe80::1')).toBe(false);
    expect(isPrivateDatabaseHost('db.internal.example.com')).toBe(false);
  });
});
