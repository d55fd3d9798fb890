import { ConfigError } from './errors.js';
import { parseDurationMs } from './duration.js';
import { makePolicy, type Policy } from './policy.js';
import { defaultPolicy } from './policy/default.js';
import type { Policy as RulePolicy } from './policy/types.js';
import * as D from './defaults.js';
import { GENERATE_KEY_HINT } from './key.js';

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
  dataDir: string;
  /** undefined: a generated key kept in `dataDir` (refused in production). */
  phoneKey: string | undefined;
  /** PHONE_ENCRYPTION_KEY_PREVIOUS: during a key rotation, the key being retired (PROTOCOL.md *Keys*). */
  previousPhoneKey: string | undefined;
  production: boolean;
  port: number;
  host: string;
  phonePolicy: Policy;
  ipPolicy: Policy;
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
  heartbeatIntervalMs: number;
  /** RATELIMIT_AUDIT_RETENTION: audit rows older than this are pruned (src/db/retention.ts). */
  auditRetentionMs: number;
  /** Numbers known to be at their limit are denied from memory until their reset time. */
  denyCache: boolean;
  /** Fly's VM region, shown by `top`. */
  flyRegion: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/**
 * The one place configuration is read: flags override environment variables, which override
 * the defaults in PROTOCOL.md. Every problem is reported at once, naming the flag or variable.
 */
export function resolveConfig(flags: ConfigFlags, env: Env): Config {
  const problems: string[] = [];
  const pick = (flag: string | undefined, ...vars: string[]): { value: string; source: string } | undefined => {
    if (flag !== undefined) return { value: flag, source: 'flag' };
    for (const name of vars) {
      const v = env[name];
      if (v !== undefined && v.trim() !== '') return { value: v.trim(), source: name };
    }
    return undefined;
  };
  const int = (label: string, raw: { value: string; source: string } | undefined, fallback: number, min: number, max: number): number => {
    if (!raw) return fallback;
    const n = /^\d+$/.test(raw.value) ? Number(raw.value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${label} (${raw.source}) must be an integer from ${min} to ${max}, got "${raw.value}"`);
      return fallback;
    }
    return n;
  };
  const duration = (label: string, raw: { value: string; source: string } | undefined, fallback: number): number => {
    if (!raw) return fallback;
    const ms = parseDurationMs(raw.value);
    if (ms === null) {
      problems.push(`${label} (${raw.source}) must be a duration like 500ms, 30s, 15m, 1h, 1d or plain milliseconds, got "${raw.value}"`);
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

  const url = pick(flags.databaseUrl, 'DATABASE_URL', 'FLY_DATABASE_URL');
  if (url && !/^postgres(ql)?:\/\//.test(url.value)) {
    problems.push(`database URL (${url.source}) must start with postgres:// or postgresql://`);
  }

  const key = env.PHONE_ENCRYPTION_KEY;
  if (production && (key === undefined || key.length < D.MIN_KEY_LENGTH)) {
    problems.push(
      `PHONE_ENCRYPTION_KEY must be set to at least ${D.MIN_KEY_LENGTH} characters when NODE_ENV=production ` +
        `(${GENERATE_KEY_HINT})`,
    );
  } else if (key !== undefined && key.length === 0) {
    problems.push('PHONE_ENCRYPTION_KEY is set but empty');
  }

  const phoneMax = int('phone limit', pick(flags.phoneLimit, 'RATE_LIMIT_PHONE_MAX'), D.DEFAULT_PHONE_MAX, 1, 1000);
  const phoneWindowMs = duration('phone window', pick(flags.phoneWindow, 'RATE_LIMIT_PHONE_WINDOW'), D.DEFAULT_PHONE_WINDOW_MS);
  const ipMax = int('IP limit', pick(flags.ipLimit, 'RATE_LIMIT_IP_MAX'), D.DEFAULT_IP_MAX, 1, 1_000_000);
  const ipWindowMs = duration('IP window', pick(flags.ipWindow, 'RATE_LIMIT_IP_WINDOW'), D.DEFAULT_IP_WINDOW_MS);
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

  // Unset: the daemon derives it from its fd limit, which only the running process can read.
  const maxConnections = pick(undefined, 'RATELIMIT_MAX_CONNECTIONS');

  const config: Config = {
    databaseUrl: url?.value,
    dataDir: pick(flags.dataDir, 'RATELIMIT_DATA_DIR')?.value ?? D.DEFAULT_DATA_DIR,
    phoneKey: key === undefined || key.length === 0 ? undefined : key,
    previousPhoneKey: env.PHONE_ENCRYPTION_KEY_PREVIOUS || undefined,
    production,
    port: int('port', pick(flags.port, 'PORT'), D.DEFAULT_PORT, 0, 65535),
    host: pick(flags.host, 'HOST')?.value ?? D.DEFAULT_HOST,
    phonePolicy: makePolicy([{ id: 'phone', max: phoneMax, windowMs: phoneWindowMs }]),
    defaultPolicy: defaultPolicy({ phoneMax, phoneWindowMs, ipMax, ipWindowMs }),
    defaultPolicySources: policySources,
    ipPolicy: makePolicy([{ id: 'ip', max: ipMax, windowMs: ipWindowMs }]),
    apiTokens: list('RATELIMIT_API_TOKENS'),
    allowedOrigins: origins,
    trustProxy: trust === 'fly' ? 'fly' : 'none',
    logLevel,
    maxFrameBytes: int('max frame bytes', pick(undefined, 'RATELIMIT_MAX_FRAME_BYTES'), D.DEFAULT_MAX_FRAME_BYTES, 256, 1 << 20),
    maxConnectionsPerIp: int('connections per IP', pick(undefined, 'RATELIMIT_MAX_CONNECTIONS_PER_IP'), D.DEFAULT_MAX_CONNECTIONS_PER_IP, 1, 1_000_000),
    maxConnections: maxConnections ? int('max connections', maxConnections, 0, 16, 10_000_000) : undefined,
    wsIdleTimeoutMs: duration('WebSocket idle timeout', pick(undefined, 'RATELIMIT_WS_IDLE_TIMEOUT'), D.DEFAULT_WS_IDLE_TIMEOUT_MS),
    messagesPerSecond: int('messages per second', pick(undefined, 'RATELIMIT_MESSAGES_PER_SECOND'), D.DEFAULT_MESSAGES_PER_SECOND, 1, 1_000_000),
    dbStatementTimeoutMs: duration('database timeout', pick(undefined, 'RATELIMIT_DB_TIMEOUT'), D.DEFAULT_DB_STATEMENT_TIMEOUT_MS),
    cliTimeoutMs: duration('CLI query timeout', pick(undefined, 'RATELIMIT_CLI_TIMEOUT'), D.DEFAULT_CLI_TIMEOUT_MS),
    dbPoolSize: int('database pool size', pick(undefined, 'RATELIMIT_DB_POOL_SIZE'), D.DEFAULT_DB_POOL_SIZE, 1, 200),
    shutdownTimeoutMs: duration('shutdown timeout', pick(undefined, 'RATELIMIT_SHUTDOWN_TIMEOUT'), D.DEFAULT_SHUTDOWN_TIMEOUT_MS),
    heartbeatIntervalMs: duration('heartbeat interval', pick(undefined, 'RATELIMIT_HEARTBEAT_INTERVAL'), D.DEFAULT_HEARTBEAT_INTERVAL_MS),
    auditRetentionMs: duration('audit retention', pick(undefined, 'RATELIMIT_AUDIT_RETENTION'), D.DEFAULT_AUDIT_RETENTION_MS),
    denyCache: (env.RATELIMIT_DENY_CACHE ?? 'on') !== 'off',
    flyRegion: env.FLY_REGION || undefined,
  };
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
  return config;
}
