// Every setting `ratelimit serve` and the admin commands take, in one table: the variable, its
// flag, its default and what it means. `serve --help` is rendered from it (src/cli/serve-env.ts);
// test/core/settings.test.ts holds resolveConfig (src/core/config.ts), README.md's configuration
// table and docs/protocol.md's to it, so none can gain, lose or change a setting alone.
import * as D from './defaults.js';
import { formatDurationMs } from './duration.js';

export type SettingGroup = 'Authentication' | 'Database and key' | 'Listening and limits' | 'Operations';

export interface Setting {
  /** The environment variable. */
  env: string;
  /** Read too when `env` is unset (Fly sets FLY_DATABASE_URL). */
  alias?: string;
  flag?: `--${string}`;
  /** As the docs and --help write it; undefined: unset (no value, or one derived at run time: `help` says which). */
  default?: string;
  /** How a value is written: durations compare by what they mean (`60s` is `1m`). */
  kind: 'duration' | 'integer' | 'text';
  group: SettingGroup;
  /** One line for `serve --help`. */
  help: string;
  /** In docs/protocol.md's Configuration table (the contract's subset); README.md's lists every setting. */
  contract?: true;
  /** Read by the admin commands only: `serve --help` leaves it out. */
  adminOnly?: true;
}

const ms = formatDurationMs;

export const SETTINGS: readonly Setting[] = [
  {
    env: 'RATELIMIT_API_TOKENS',
    kind: 'text',
    group: 'Authentication',
    contract: true,
    help: `comma-separated bearer tokens (each >= ${D.MIN_TOKEN_LENGTH} characters); unset = anonymous, refused in production or off loopback`,
  },
  {
    env: 'RATELIMIT_ALLOW_ANONYMOUS',
    kind: 'text',
    group: 'Authentication',
    contract: true,
    help: '1: run without tokens where serve would otherwise refuse',
  },
  {
    env: 'ALLOWED_ORIGINS',
    kind: 'text',
    group: 'Authentication',
    contract: true,
    help: 'comma-separated browser origins that may check without a token; without tokens, no Origin may consume',
  },
  {
    env: 'RATELIMIT_TRUST_PROXY',
    default: 'none',
    kind: 'text',
    group: 'Authentication',
    help: 'none | fly: take the client address from Fly-Client-IP (on Fly, from a private peer)',
  },
  {
    env: 'DATABASE_URL',
    alias: 'FLY_DATABASE_URL',
    flag: '--database-url',
    kind: 'text',
    group: 'Database and key',
    contract: true,
    help: 'PostgreSQL URL; unset = embedded; sslmode=verify-full; a:5432,b:5432 with target_session_attrs=read-write for failover',
  },
  {
    env: 'RATELIMIT_LISTEN_URL',
    default: 'DATABASE_URL',
    kind: 'text',
    group: 'Database and key',
    help: "the notification listener's own session connection",
  },
  {
    env: 'RATELIMIT_DATA_DIR',
    flag: '--data-dir',
    default: D.DEFAULT_DATA_DIR,
    kind: 'text',
    group: 'Database and key',
    help: 'embedded database, generated key and outage spool',
  },
  {
    env: 'PHONE_ENCRYPTION_KEY',
    kind: 'text',
    group: 'Database and key',
    contract: true,
    help: `hashing key, >= ${D.MIN_KEY_LENGTH} characters; needed with DATABASE_URL (unset: generated, embedded only)`,
  },
  {
    env: 'PHONE_ENCRYPTION_KEY_PREVIOUS',
    kind: 'text',
    group: 'Database and key',
    contract: true,
    help: 'during a key rotation, the key being retired',
  },
  {
    env: 'RATELIMIT_DB_TIMEOUT',
    default: ms(D.DEFAULT_DB_STATEMENT_TIMEOUT_MS),
    kind: 'duration',
    group: 'Database and key',
    help: 'a slower statement counts as an outage',
  },
  {
    env: 'RATELIMIT_DB_POOL_SIZE',
    default: String(D.DEFAULT_DB_POOL_SIZE),
    kind: 'integer',
    group: 'Database and key',
    help: 'pooled connections',
  },
  {
    env: 'RATELIMIT_PG_BINDIR',
    kind: 'text',
    group: 'Database and key',
    help: 'PostgreSQL server binaries for the embedded database (unset: searched for)',
  },
  {
    env: 'RATELIMIT_PG_SEARCH',
    default: 'system,package',
    kind: 'text',
    group: 'Database and key',
    help: 'where to look for them',
  },
  {
    env: 'PORT',
    flag: '--port',
    default: String(D.DEFAULT_PORT),
    kind: 'integer',
    group: 'Listening and limits',
    contract: true,
    help: 'port to listen on',
  },
  {
    env: 'HOST',
    flag: '--host',
    default: D.DEFAULT_HOST,
    kind: 'text',
    group: 'Listening and limits',
    contract: true,
    help: 'address to listen on',
  },
  {
    env: 'RATE_LIMIT_PHONE_MAX',
    flag: '--phone-limit',
    default: String(D.DEFAULT_PHONE_MAX),
    kind: 'integer',
    group: 'Listening and limits',
    contract: true,
    help: 'default policy: calls per number per window',
  },
  {
    env: 'RATE_LIMIT_PHONE_WINDOW',
    flag: '--phone-window',
    default: ms(D.DEFAULT_PHONE_WINDOW_MS),
    kind: 'duration',
    group: 'Listening and limits',
    contract: true,
    help: 'default policy: the per-number rolling window',
  },
  {
    env: 'RATE_LIMIT_IP_MAX',
    flag: '--ip-limit',
    default: String(D.DEFAULT_IP_MAX),
    kind: 'integer',
    group: 'Listening and limits',
    contract: true,
    help: 'default policy: consumes per client IP',
  },
  {
    env: 'RATE_LIMIT_IP_WINDOW',
    flag: '--ip-window',
    default: ms(D.DEFAULT_IP_WINDOW_MS),
    kind: 'duration',
    group: 'Listening and limits',
    contract: true,
    help: 'default policy: the per-IP rolling window',
  },
  {
    env: 'RATELIMIT_MAX_CONNECTIONS',
    kind: 'integer',
    group: 'Listening and limits',
    help: 'open TCP connections in all (unset: 80% of the fd limit)',
  },
  {
    env: 'RATELIMIT_MAX_CONNECTIONS_PER_IP',
    default: String(D.DEFAULT_MAX_CONNECTIONS_PER_IP),
    kind: 'integer',
    group: 'Listening and limits',
    help: 'per client address',
  },
  {
    env: 'RATELIMIT_MESSAGES_PER_SECOND',
    default: String(D.DEFAULT_MESSAGES_PER_SECOND),
    kind: 'integer',
    group: 'Listening and limits',
    help: 'per connection without a token',
  },
  {
    env: 'RATELIMIT_MAX_FRAME_BYTES',
    default: String(D.DEFAULT_MAX_FRAME_BYTES),
    kind: 'integer',
    group: 'Listening and limits',
    help: 'larger frames close the socket',
  },
  {
    env: 'RATELIMIT_WS_IDLE_TIMEOUT',
    default: ms(D.DEFAULT_WS_IDLE_TIMEOUT_MS),
    kind: 'duration',
    group: 'Listening and limits',
    help: 'idle WebSockets without a token close',
  },
  {
    env: 'RATELIMIT_DENY_CACHE',
    default: 'on',
    kind: 'text',
    group: 'Listening and limits',
    help: 'on | off: ask the database even for numbers at their limit',
  },
  {
    env: 'RATELIMIT_SHUTDOWN_TIMEOUT',
    default: ms(D.DEFAULT_SHUTDOWN_TIMEOUT_MS),
    kind: 'duration',
    group: 'Operations',
    help: 'graceful-stop deadline',
  },
  {
    env: 'RATELIMIT_HEARTBEAT_INTERVAL',
    default: ms(D.DEFAULT_HEARTBEAT_INTERVAL_MS),
    kind: 'duration',
    group: 'Operations',
    help: 'how often this daemon reports to `top`',
  },
  {
    env: 'RATELIMIT_SPOOL_MAX_BYTES',
    default: String(D.DEFAULT_SPOOL_MAX_BYTES),
    kind: 'integer',
    group: 'Operations',
    help: 'durable spool of decisions made while the database is down, in bytes; when full, consumes fail closed',
  },
  {
    env: 'RATELIMIT_AUDIT_RETENTION',
    default: ms(D.DEFAULT_AUDIT_RETENTION_MS),
    kind: 'duration',
    group: 'Operations',
    contract: true,
    help: 'audit rows older than this are pruned',
  },
  {
    env: 'RATELIMIT_METRICS_PORT',
    kind: 'integer',
    group: 'Operations',
    contract: true,
    help: 'unset: /metrics on the main port; set: /metrics only on this port (on HOST)',
  },
  {
    env: 'TWILIO_AUTH_TOKEN',
    kind: 'text',
    group: 'Operations',
    contract: true,
    help: 'accept Twilio status callbacks (POST /v1/twilio/status) signed with it; unset: that route is refused',
  },
  {
    env: 'RATELIMIT_PUBLIC_URL',
    kind: 'text',
    group: 'Operations',
    contract: true,
    help: 'the scheme and host Twilio calls, e.g. https://ratelimit.example.com, when a proxy changes them',
  },
  {
    env: 'RATELIMIT_PRICES',
    kind: 'text',
    group: 'Operations',
    contract: true,
    help: 'price per consume by destination country for ratelimit_spend_total, e.g. unit=sms,currency=USD,default=0.05,GB=0.04 (unset: a flat 0.05)',
  },
  {
    env: 'LOG_LEVEL',
    default: D.DEFAULT_LOG_LEVEL,
    kind: 'text',
    group: 'Operations',
    help: 'pino level',
  },
  {
    env: 'NODE_ENV',
    kind: 'text',
    group: 'Operations',
    help: 'production: refuse to start without PHONE_ENCRYPTION_KEY, tokens, or TLS to a public database',
  },
  {
    env: 'DEBUG',
    kind: 'text',
    group: 'Operations',
    help: 'any value: a start-up failure is logged with its stack and causes',
  },
  {
    env: 'RATELIMIT_CLI_TIMEOUT',
    default: ms(D.DEFAULT_CLI_TIMEOUT_MS),
    kind: 'duration',
    group: 'Operations',
    adminOnly: true,
    help: 'bounds each query of stats, top and status',
  },
  {
    env: 'RATELIMIT_OPERATOR',
    default: 'user@host',
    kind: 'text',
    group: 'Operations',
    adminOnly: true,
    help: 'who reset, policy apply, block, allow and unlist record',
  },
];

export const SETTING_GROUPS: readonly SettingGroup[] = ['Authentication', 'Database and key', 'Listening and limits', 'Operations'];

/** The setting a variable or flag names (an alias included). */
export function settingNamed(name: string): Setting | undefined {
  return SETTINGS.find((s) => s.env === name || s.alias === name || s.flag === name);
}
