// fly.toml, parsed as TOML, checked against the code's contract defaults.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PORT, MIGRATE_COMMAND } from '../../src/core/defaults.js';
import { ROUTES } from '../../src/protocol/wire.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

type Table = Record<string, unknown>;
const read = (path: string) => readFileSync(`${ROOT}${path}`, 'utf8');
const config = parse(read('fly.toml')) as Table;

function table(value: unknown, name: string): Table {
  expect(value, `${name} should be a table`).toBeTypeOf('object');
  expect(Array.isArray(value), `${name} should be a table`).toBe(false);
  return value as Table;
}

function tables(value: unknown, name: string): Table[] {
  expect(Array.isArray(value), `${name} should be an array of tables`).toBe(true);
  return value as Table[];
}

/** Fly durations are "15s"-style strings or plain seconds. */
function seconds(value: unknown): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+)(ms|s|m)$/.exec(String(value));
  expect(match, `unparseable duration ${String(value)}`).not.toBeNull();
  const [, amount, unit] = match!;
  return Number(amount) * (unit === 'ms' ? 0.001 : unit === 'm' ? 60 : 1);
}

const env = table(config.env, '[env]');
const service = table(config.http_service, '[http_service]');

describe('fly.toml', () => {
  it('names an app and a primary region the setup script can read', () => {
    expect(config.app).toMatch(/^[a-z0-9][a-z0-9-]*$/);
    expect(config.primary_region).toMatch(/^[a-z]{3}$/);
  });

  it('runs the daemon as the app process', () => {
    expect(table(config.processes, '[processes]').app).toBe('ratelimit serve');
    expect(service.processes).toEqual(['app']);
  });

  it('routes to the default port, bound where Fly can reach it', () => {
    expect(service.internal_port).toBe(DEFAULT_PORT);
    expect(env.PORT).toBe(String(DEFAULT_PORT));
    // Dual-stack wildcard: Fly Proxy connects over private IPv4, the metrics scraper and
    // *.internal callers over IPv6 (6PN). The code's default (127.0.0.1) reaches neither.
    expect(env.HOST).toBe('::');
  });

  it('runs migrations before each release', () => {
    expect(table(config.deploy, '[deploy]').release_command).toBe(MIGRATE_COMMAND);
  });

  it('health-checks /health over HTTP', () => {
    const checks = tables(service.checks, '[[http_service.checks]]');
    expect(checks.length).toBeGreaterThan(0);
    for (const check of checks) {
      expect(check.path).toBe(ROUTES.health);
      expect(check.method ?? 'GET').toBe('GET');
      expect(seconds(check.timeout)).toBeLessThan(seconds(check.interval));
    }
  });

  it('lets Fly scrape /metrics on a private port that the service does not publish', () => {
    const metrics = table(config.metrics, '[metrics]');
    expect(metrics.port).not.toBe(DEFAULT_PORT);
    expect(String(metrics.port)).toBe(env.RATELIMIT_METRICS_PORT);
    expect(metrics.path).toBe(ROUTES.metrics);
    expect(service.internal_port).not.toBe(metrics.port);
  });

  it('says what happens to the spool: no volume, and the deploy guide explains the consequence', () => {
    // The decision recorded in fly.toml and docs/deploy-fly.md: the image's /data, no [mounts].
    expect(config.mounts).toBeUndefined();
    expect(read('fly.toml')).toContain('forgets what it allowed');
    expect(read('docs/deploy-fly.md')).toMatch(/## The spool on Fly/);
  });

  it('limits concurrency by connections, as WebSockets are long-lived', () => {
    const concurrency = table(service.concurrency, '[http_service.concurrency]');
    expect(concurrency.type).toBe('connections');
    expect(concurrency.soft_limit).toBeTypeOf('number');
    expect(concurrency.hard_limit).toBeTypeOf('number');
    expect(concurrency.soft_limit as number).toBeLessThan(concurrency.hard_limit as number);
  });

  it('keeps machines running so live sockets are not cut', () => {
    expect([false, 'off']).toContain(service.auto_stop_machines);
    expect(service.min_machines_running).toBeGreaterThanOrEqual(1);
    expect(service.force_https).toBe(true);
  });

  it('stops with SIGTERM and leaves the ~10 s drain time to finish', () => {
    expect(config.kill_signal).toBe('SIGTERM');
    expect(seconds(config.kill_timeout)).toBeGreaterThan(10);
  });

  it('sets production mode and Fly client-IP handling, and no secrets in [env]', () => {
    expect(env.NODE_ENV).toBe('production');
    expect(env.RATELIMIT_TRUST_PROXY).toBe('fly');
    for (const secret of ['DATABASE_URL', 'FLY_DATABASE_URL', 'PHONE_ENCRYPTION_KEY', 'RATELIMIT_API_TOKENS']) {
      expect(env, `${secret} belongs in fly secrets`).not.toHaveProperty(secret);
    }
  });

  it('builds from the Dockerfile', () => {
    expect(table(config.build, '[build]').dockerfile).toBe('Dockerfile');
  });
});
