import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/core/config.js';
import { parseDurationMs, formatDurationMs } from '../../src/core/duration.js';
import { ConfigError } from '../../src/core/errors.js';

describe('parseDurationMs', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['15m', 900_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    ['2500', 2500],
  ])('%s', (text, ms) => {
    expect(parseDurationMs(text)).toBe(ms);
    expect(parseDurationMs(formatDurationMs(ms))).toBe(ms);
  });

  it.each(['', '0', '-1s', '1.5h', 'h', '1w', '1 hour', '400d'])('rejects %j', (text) => {
    expect(parseDurationMs(text)).toBeNull();
  });
});

describe('resolveConfig', () => {
  it('has the contract defaults', () => {
    const c = resolveConfig({}, {});
    expect(c).toMatchObject({ port: 8081, host: '127.0.0.1', databaseUrl: undefined, dataDir: './.ratelimit', apiTokens: [], trustProxy: 'none' });
    expect(c.defaultPolicy.number.map((r) => ({ limit: r.limit, windowMs: r.windowMs }))).toEqual([{ limit: 2, windowMs: 3_600_000 }]);
  });

  it('flags beat environment variables, which beat defaults', () => {
    const env = {
      RATE_LIMIT_PHONE_MAX: '5',
      RATE_LIMIT_PHONE_WINDOW: '15m',
      PORT: '9000',
      DATABASE_URL: 'postgres://env/db',
      FLY_DATABASE_URL: 'postgres://fly/db',
    };
    const fromEnv = resolveConfig({}, env);
    expect(fromEnv.defaultPolicy.number[0]).toMatchObject({ limit: 5, windowMs: 900_000 });
    expect(fromEnv.port).toBe(9000);
    expect(fromEnv.databaseUrl).toBe('postgres://env/db');
    const fromFlags = resolveConfig({ phoneLimit: '3', phoneWindow: '30s', port: '7000', databaseUrl: 'postgres://flag/db' }, env);
    expect(fromFlags.defaultPolicy.number[0]).toMatchObject({ limit: 3, windowMs: 30_000 });
    expect(fromFlags.port).toBe(7000);
    expect(fromFlags.databaseUrl).toBe('postgres://flag/db');
    expect(resolveConfig({}, { FLY_DATABASE_URL: 'postgres://fly/db' }).databaseUrl).toBe('postgres://fly/db');
  });

  it('reports every problem at once, naming where it came from', () => {
    let err: unknown;
    try {
      resolveConfig({ phoneLimit: 'two' }, { RATE_LIMIT_PHONE_WINDOW: 'an hour', PORT: '99999', DATABASE_URL: 'mysql://x' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/--phone-limit must be an integer/);
    expect(msg).toMatch(/RATE_LIMIT_PHONE_WINDOW/);
    expect(msg).toMatch(/PORT/);
    expect(msg).toMatch(/postgres:\/\//);
  });

  it('production refuses a missing or short key', () => {
    expect(() => resolveConfig({}, { NODE_ENV: 'production' })).toThrow(/PHONE_ENCRYPTION_KEY/);
    expect(() => resolveConfig({}, { NODE_ENV: 'production', PHONE_ENCRYPTION_KEY: 'short' })).toThrow(/at least 32/);
    expect(resolveConfig({}, { NODE_ENV: 'production', PHONE_ENCRYPTION_KEY: 'x'.repeat(32) }).phoneKey).toBe('x'.repeat(32));
  });

  it('reads token and origin lists', () => {
    const [a, b, c3] = ['token-a-0123456789', 'token-b-0123456789', 'token-c-0123456789'];
    const c = resolveConfig({}, { RATELIMIT_API_TOKENS: ` ${a}, ${b} ,,${c3}`, ALLOWED_ORIGINS: 'https://app.example.com,http://localhost:3000' });
    expect(c.apiTokens).toEqual([a, b, c3]);
    expect(c.allowedOrigins).toEqual(['https://app.example.com', 'http://localhost:3000']);
    expect(() => resolveConfig({}, { ALLOWED_ORIGINS: 'app.example.com/path' })).toThrow(/ALLOWED_ORIGINS/);
  });
});

describe('frame limit default', () => {
  it('is the same in the config and in the protocol clients default to', async () => {
    const core = await import('../../src/core/defaults.js');
    const wire = await import('../../src/protocol/wire.js');
    expect(core.DEFAULT_MAX_FRAME_BYTES).toBe(wire.DEFAULT_MAX_FRAME_BYTES);
  });
});
