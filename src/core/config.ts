import { failures } from './errors.js';
import { parseDurationMs } from './duration.js';
import { defaultPolicy } from './policy/default.js';
import type { Policy as RulePolicy } from './policy/types.js';
import * as D from './defaults.js';
import { GENERATE_KEY_HINT, GENERATE_TOKEN_HINT } from './key.js';
import { plainTextDatabaseProblem } from './database-tls.js';
import { parseDatabaseUrl } from './database-url.js';
import { parsePrices, type PriceTable } from './prices.js';

/** Flags as commander hands them over: strings, all optional. */
export interface ConfigFlags {
  databaseUrl?: string;
  dataDir?: string;
  port?: string;
  host?: string;
  phoneLimit?: string;
  phoneWindow?: string;
  ipLimit?: string;
  ipWindow?: string;
}

export type TrustProxy = 'none' | 'fly';

export interface Config {
  /** undefined: the embedded PostgreSQL in `dataDir`. */
  databaseUrl: string | undefined;
  /**
   * RATELIMIT_LISTEN_URL: the notification listener's own session connection (LISTEN does not
   * cross a transaction-mode pooler); undefined: DATABASE_URL.
   */
  listenUrl: string | undefined;
  dataDir: string;
  /** undefined: a generated key kept in `dataDir` (refused in production). */
  phoneKey: string | undefined;
  /** PHONE_ENCRYPTION_KEY_PREVIOUS: during a key rotation, the key being retired (docs/protocol.md *Keys*). */
  previousPhoneKey: string | undefined;
  production: boolean;
  port: number;
  host: string;
  /** RATELIMIT_METRICS_PORT: /metrics only on this port (on `host`; 0 = any free port), not on `port`; undefined = on `port`. */
  metricsPort: number | undefined;
  /**
   * The policy in force while none has been applied to the database, from RATE_LIMIT_* (and the
   * flags). Once one has, the database's active policy wins (src/db/policies.ts).
   */
  defaultPolicy: RulePolicy;
  /** Which RATE_LIMIT_* settings were given, so a daemon can say they are ignored under an applied policy. */
  defaultPolicySources: string[];
  apiTokens: string[];
  allowedOrigins: string[];
  trustProxy: TrustProxy;
  logLevel: string;
  maxFrameBytes: number;
  /** TCP connections (HTTP and WebSocket) one client address may hold. */
  maxConnectionsPerIp: number;
  /** RATELIMIT_MAX_CONNECTIONS: open TCP connections in all; undefined = derived from the process's fd limit. */
  maxConnections: number | undefined;
  /** A WebSocket without a token (browser or open) that sends nothing for this long is closed. */
  wsIdleTimeoutMs: number;
  /** Per connection, for clients without a token (browsers); token clients pipeline freely. */
  messagesPerSecond: number;
  dbStatementTimeoutMs: number;
  /** RATELIMIT_CLI_TIMEOUT: bounds each query of the read commands (stats, top, status). */
  cliTimeoutMs: number;
  dbPoolSize: number;
  shutdownTimeoutMs: number;
  /** RATELIMIT_SPOOL_MAX_BYTES: decisions made from memory kept unwritten; beyond, memory-mode consumes are refused. */
  spoolMaxBytes: number;
  heartbeatIntervalMs: number;
  /** RATELIMIT_PRICES (src/core/prices.ts): what a consume costs per country, for spend in top, stats and metrics. */
  prices: PriceTable;
  /** RATELIMIT_AUDIT_RETENTION: audit rows older than this are pruned (src/db/retention.ts). */
  auditRetentionMs: number;
  /** Numbers known to be at their limit are denied from memory until their reset time. */
  denyCache: boolean;
  /** Fly's VM region, shown by `top`. */
  flyRegion: string | undefined;
  /** FLY_APP_NAME, set by Fly on every machine: RATELIMIT_TRUST_PROXY=fly takes effect only with it. */
  flyAppName: string | undefined;
  /** TWILIO_AUTH_TOKEN: validates Twilio status callbacks; unset, POST /v1/twilio/status is refused. */
  twilioAuthToken: string | undefined;
  /**
   * RATELIMIT_PUBLIC_URL: the scheme and host clients (Twilio) reach the daemon at, e.g.
   * https://ratelimit.example.com, when a proxy in front changes them: Twilio signs that URL.
   */
  publicUrl: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

export interface ResolveOptions {
  /**
   * `serve`: also refuse what only a listening daemon must not do (anonymous production). Admin
   * commands read the same variables but open no port, so they need no tokens.
   */
  serve?: boolean;
}

/** Addresses only this machine can connect to: a daemon listening there may run without tokens. */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/**
 * The one place configuration is read: flags override environment variables, which override
 * the defaults in docs/protocol.md. Every problem is reported at once, naming the flag or variable.
 */
export function resolveConfig(flags: ConfigFlags, env: Env, options: ResolveOptions = {}): Config {
  const problems: string[] = [];
  // `source` is where the value came from, as the user typed it: the flag (`--phone-limit`) or
  // the variable (`RATE_LIMIT_PHONE_MAX`), so every problem names the thing to fix.
  type Raw = { value: string; source: string };
  const pick = (flag: [value: string | undefined, name: string] | undefined, ...vars: string[]): Raw | undefined => {
    if (flag && flag[0] !== undefined) return { value: flag[0], source: flag[1] };
    for (const name of vars) {
      const v = env[name];
      if (v !== undefined && v.trim() !== '') return { value: v.trim(), source: name };
    }
    return undefined;
  };
  const int = (raw: Raw | undefined, fallback: number, min: number, max: number): number => {
    if (!raw) return fallback;
    const n = /^\d+$/.test(raw.value) ? Number(raw.value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${raw.source} must be an integer from ${min} to ${max}, got "${raw.value}"`);
      return fallback;
    }
    return n;
  };
  const duration = (raw: Raw | undefined, fallback: number): number => {
    if (!raw) return fallback;
    const ms = parseDurationMs(raw.value);
    if (ms === null) {
      problems.push(`${raw.source} must be a duration like 500ms, 30s, 15m, 1h, 1d or plain milliseconds, got "${raw.value}"`);
      return fallback;
    }
    return ms;
  };
  const list = (name: string): string[] =>
    (env[name] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);

  const production = env.NODE_ENV === 'production';

  const url = pick([flags.databaseUrl, '--database-url'], 'DATABASE_URL', 'FLY_DATABASE_URL');
  if (url && !/^postgres(ql)?:\/\//.test(url.value)) {
    problems.push(`${url.source} must start with postgres:// or postgresql://`);
  }

  const listenUrl = pick(undefined, 'RATELIMIT_LISTEN_URL');
  if (listenUrl && !/^postgres(ql)?:\/\//.test(listenUrl.value)) problems.push('RATELIMIT_LISTEN_URL must start with postgres:// or postgresql://');
  if (listenUrl && !url) problems.push('RATELIMIT_LISTEN_URL needs DATABASE_URL (the embedded PostgreSQL needs no separate listener)');
  for (const u of [url, listenUrl]) {
    if (!u || !/^postgres(ql)?:\/\//.test(u.value)) continue;
    try {
      parseDatabaseUrl(u.value);
    } catch (err) {
      problems.push(`${u.source}: ${(err as Error).message}`);
    }
  }

  if (url && production) {
    const plain = plainTextDatabaseProblem(url.value, url.source);
    if (plain) problems.push(plain);
  }

  // A named database is shared with other daemons and outlives this process: a short key there
  // lets a guessed key be confirmed offline against its fingerprint (docs/protocol.md *Keys*).
  // Only the embedded default, outside production, may run with a short (warned) key.
  const key = env.PHONE_ENCRYPTION_KEY;
  if ((production || url) && (key === undefined || key.length < D.MIN_KEY_LENGTH)) {
    if (production || (key !== undefined && key.length > 0)) {
      problems.push(
        `PHONE_ENCRYPTION_KEY must be set to at least ${D.MIN_KEY_LENGTH} characters ` +
          `${production ? 'when NODE_ENV=production' : `with a database named (${url!.source})`} (${GENERATE_KEY_HINT})`,
      );
    } else if (key !== undefined) {
      problems.push('PHONE_ENCRYPTION_KEY is set but empty');
    }
    // Unset with a DATABASE_URL and not production: only the commands that hash refuse, saying
    // how to make a key (src/db/key-file.ts); `db init` and the read-only reports run without one.
  } else if (key !== undefined && key.length === 0) {
    problems.push('PHONE_ENCRYPTION_KEY is set but empty');
  }

  const apiTokens = list('RATELIMIT_API_TOKENS');
  const shortTokens = apiTokens.filter((t) => t.length < D.MIN_TOKEN_LENGTH).length;
  if (shortTokens > 0) {
    problems.push(
      `RATELIMIT_API_TOKENS has ${shortTokens === 1 ? 'a token' : `${shortTokens} tokens`} shorter than ${D.MIN_TOKEN_LENGTH} characters: ` +
        `a short token can be guessed (${GENERATE_TOKEN_HINT})`,
    );
  }
  const phoneMax = int(pick([flags.phoneLimit, '--phone-limit'], 'RATE_LIMIT_PHONE_MAX'), D.DEFAULT_PHONE_MAX, 1, 1000);
  const phoneWindowMs = duration(pick([flags.phoneWindow, '--phone-window'], 'RATE_LIMIT_PHONE_WINDOW'), D.DEFAULT_PHONE_WINDOW_MS);
  const ipMax = int(pick([flags.ipLimit, '--ip-limit'], 'RATE_LIMIT_IP_MAX'), D.DEFAULT_IP_MAX, 1, 1_000_000);
  const ipWindowMs = duration(pick([flags.ipWindow, '--ip-window'], 'RATE_LIMIT_IP_WINDOW'), D.DEFAULT_IP_WINDOW_MS);
  const policySources = [
    ['--phone-limit', flags.phoneLimit, 'RATE_LIMIT_PHONE_MAX'],
    ['--phone-window', flags.phoneWindow, 'RATE_LIMIT_PHONE_WINDOW'],
    ['--ip-limit', flags.ipLimit, 'RATE_LIMIT_IP_MAX'],
    ['--ip-window', flags.ipWindow, 'RATE_LIMIT_IP_WINDOW'],
  ].flatMap(([flag, value, name]) => (value !== undefined ? [flag!] : env[name!]?.trim() ? [name!] : []));

  const trust = (env.RATELIMIT_TRUST_PROXY ?? 'none').trim().toLowerCase() || 'none';
  if (trust !== 'none' && trust !== 'fly') {
    problems.push(`RATELIMIT_TRUST_PROXY must be "none" or "fly", got "${trust}"`);
  }
  const logLevel = (env.LOG_LEVEL ?? D.DEFAULT_LOG_LEVEL).trim().toLowerCase();
  if (!LOG_LEVELS.has(logLevel)) problems.push(`LOG_LEVEL must be one of ${[...LOG_LEVELS].join(', ')}, got "${logLevel}"`);

  const origins = list('ALLOWED_ORIGINS');
  for (const o of origins) {
    if (!/^https?:\/\/[^/\s]+$/.test(o)) problems.push(`ALLOWED_ORIGINS entry "${o}" must look like https://example.com (scheme and host, no path)`);
  }

  const metricsPortRaw = pick(undefined, 'RATELIMIT_METRICS_PORT');
  const metricsPort = metricsPortRaw ? int(metricsPortRaw, 0, 0, 65535) : undefined;
  const port = int(pick([flags.port, '--port'], 'PORT'), D.DEFAULT_PORT, 0, 65535);
  if (metricsPort !== undefined && metricsPort !== 0 && metricsPort === port) {
    problems.push(`RATELIMIT_METRICS_PORT must differ from the main port (${port}); leave it unset to serve /metrics on the main port`);
  }
  const publicUrl = pick(undefined, 'RATELIMIT_PUBLIC_URL');
  if (publicUrl && !/^https?:\/\/[^/\s?#]+$/.test(publicUrl.value.replace(/\/$/, ''))) {
    problems.push(`RATELIMIT_PUBLIC_URL must look like https://ratelimit.example.com (scheme and host, no path), got "${publicUrl.value}"`);
  }
  const host = pick([flags.host, '--host'], 'HOST');
  const allowAnonymous = (env.RATELIMIT_ALLOW_ANONYMOUS ?? '').trim();
  if (allowAnonymous !== '' && allowAnonymous !== '1' && allowAnonymous !== '0') {
    problems.push(`RATELIMIT_ALLOW_ANONYMOUS must be 1 (or unset), got "${allowAnonymous}"`);
  }
  if (options.serve && apiTokens.length === 0 && allowAnonymous !== '1') {
    const hostValue = host?.value ?? D.DEFAULT_HOST;
    const why = production
      ? 'NODE_ENV=production'
      : !isLoopbackHost(hostValue)
        ? `${host?.source ?? 'HOST'}=${hostValue} is not a loopback address`
        : undefined;
    if (why) {
      problems.push(
        `RATELIMIT_API_TOKENS is not set and ${why}: anyone who can reach the port could consume and burn (or block) any number's quota. ` +
          `Set RATELIMIT_API_TOKENS to one or more comma-separated tokens (${GENERATE_TOKEN_HINT}) and send one as "Authorization: Bearer <token>", ` +
          `or set RATELIMIT_ALLOW_ANONYMOUS=1 if running without tokens is meant`,
      );
    }
  }

  // Unset: the daemon derives it from its fd limit, which only the running process can read.
  const maxConnections = pick(undefined, 'RATELIMIT_MAX_CONNECTIONS');

  const config: Config = {
    databaseUrl: url?.value,
    listenUrl: listenUrl?.value,
    dataDir: pick([flags.dataDir, '--data-dir'], 'RATELIMIT_DATA_DIR')?.value ?? D.DEFAULT_DATA_DIR,
    phoneKey: key === undefined || key.length === 0 ? undefined : key,
    previousPhoneKey: env.PHONE_ENCRYPTION_KEY_PREVIOUS || undefined,
    production,
    port,
    metricsPort,
    host: host?.value ?? D.DEFAULT_HOST,
    defaultPolicy: defaultPolicy({ phoneMax, phoneWindowMs, ipMax, ipWindowMs }),
    defaultPolicySources: policySources,
    apiTokens,
    allowedOrigins: origins,
    trustProxy: trust === 'fly' ? 'fly' : 'none',
    logLevel,
    maxFrameBytes: int(pick(undefined, 'RATELIMIT_MAX_FRAME_BYTES'), D.DEFAULT_MAX_FRAME_BYTES, 256, 1 << 20),
    maxConnectionsPerIp: int(pick(undefined, 'RATELIMIT_MAX_CONNECTIONS_PER_IP'), D.DEFAULT_MAX_CONNECTIONS_PER_IP, 1, 1_000_000),
    maxConnections: maxConnections ? int(maxConnections, 0, 16, 10_000_000) : undefined,
    wsIdleTimeoutMs: duration(pick(undefined, 'RATELIMIT_WS_IDLE_TIMEOUT'), D.DEFAULT_WS_IDLE_TIMEOUT_MS),
    messagesPerSecond: int(pick(undefined, 'RATELIMIT_MESSAGES_PER_SECOND'), D.DEFAULT_MESSAGES_PER_SECOND, 1, 1_000_000),
    dbStatementTimeoutMs: duration(pick(undefined, 'RATELIMIT_DB_TIMEOUT'), D.DEFAULT_DB_STATEMENT_TIMEOUT_MS),
    cliTimeoutMs: duration(pick(undefined, 'RATELIMIT_CLI_TIMEOUT'), D.DEFAULT_CLI_TIMEOUT_MS),
    dbPoolSize: int(pick(undefined, 'RATELIMIT_DB_POOL_SIZE'), D.DEFAULT_DB_POOL_SIZE, 1, 200),
    shutdownTimeoutMs: duration(pick(undefined, 'RATELIMIT_SHUTDOWN_TIMEOUT'), D.DEFAULT_SHUTDOWN_TIMEOUT_MS),
    spoolMaxBytes: int(pick(undefined, 'RATELIMIT_SPOOL_MAX_BYTES'), D.DEFAULT_SPOOL_MAX_BYTES, 4096, Number.MAX_SAFE_INTEGER),
    heartbeatIntervalMs: duration(pick(undefined, 'RATELIMIT_HEARTBEAT_INTERVAL'), D.DEFAULT_HEARTBEAT_INTERVAL_MS),
    prices: parsePrices(env.RATELIMIT_PRICES, problems),
    auditRetentionMs: duration(pick(undefined, 'RATELIMIT_AUDIT_RETENTION'), D.DEFAULT_AUDIT_RETENTION_MS),
    denyCache: (env.RATELIMIT_DENY_CACHE ?? 'on') !== 'off',
    flyRegion: env.FLY_REGION || undefined,
    flyAppName: env.FLY_APP_NAME || undefined,
    twilioAuthToken: env.TWILIO_AUTH_TOKEN?.trim() || undefined,
    publicUrl: publicUrl?.value.replace(/\/$/, ''),
  };
  if (problems.length > 0) throw failures.config(problems);
  return config;
}
