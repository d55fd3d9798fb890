// The environment `ratelimit serve` reads, for the end of its --help: support staff reaching a
// production daemon need the variables (auth above all) as much as the flags. README.md's
// configuration table has the long form; test/cli/errors.test.ts checks none is missing here.
import * as D from '../core/defaults.js';
import { formatDurationMs } from '../core/duration.js';

const GROUPS: ReadonlyArray<[title: string, rows: ReadonlyArray<[name: string, what: string]>]> = [
  [
    'Authentication',
    [
      [
        'RATELIMIT_API_TOKENS',
        `comma-separated bearer tokens (each >= ${D.MIN_TOKEN_LENGTH} characters); unset = anonymous, refused in production or off loopback`,
      ],
      ['RATELIMIT_ALLOW_ANONYMOUS', '1: run without tokens where serve would otherwise refuse'],
      ['ALLOWED_ORIGINS', 'comma-separated browser origins that may check without a token; without tokens, no Origin may consume'],
      ['RATELIMIT_TRUST_PROXY', 'none (default) | fly: take the client address from Fly-Client-IP (on Fly, from a private peer)'],
    ],
  ],
  [
    'Database and key',
    [
      [
        'DATABASE_URL',
        'PostgreSQL URL (or FLY_DATABASE_URL); --database-url; unset = embedded; sslmode=verify-full; a:5432,b:5432 with target_session_attrs=read-write for failover',
      ],
      ['RATELIMIT_LISTEN_URL', "the notification listener's own session connection (default DATABASE_URL)"],
      ['RATELIMIT_DATA_DIR', `embedded database and generated key (default ${D.DEFAULT_DATA_DIR}); --data-dir`],
      ['PHONE_ENCRYPTION_KEY', `hashing key, >= ${D.MIN_KEY_LENGTH} characters; needed with DATABASE_URL`],
      ['PHONE_ENCRYPTION_KEY_PREVIOUS', 'during a key rotation, the key being retired'],
      ['RATELIMIT_DB_TIMEOUT', `a slower statement counts as an outage (default ${formatDurationMs(D.DEFAULT_DB_STATEMENT_TIMEOUT_MS)})`],
      ['RATELIMIT_DB_POOL_SIZE', `pooled connections (default ${D.DEFAULT_DB_POOL_SIZE})`],
      ['RATELIMIT_PG_BINDIR', 'PostgreSQL server binaries for the embedded database'],
      ['RATELIMIT_PG_SEARCH', 'where to look for them: system,package (default)'],
    ],
  ],
  [
    'Listening and limits',
    [
      ['PORT', `flag --port (default ${D.DEFAULT_PORT})`],
      ['HOST', `flag --host (default ${D.DEFAULT_HOST})`],
      ['RATE_LIMIT_PHONE_MAX', `default policy: calls per number per window (default ${D.DEFAULT_PHONE_MAX}); --phone-limit`],
      ['RATE_LIMIT_PHONE_WINDOW', `its window (default ${formatDurationMs(D.DEFAULT_PHONE_WINDOW_MS)}); --phone-window`],
      ['RATE_LIMIT_IP_MAX', `default policy: consumes per client IP (default ${D.DEFAULT_IP_MAX}); --ip-limit`],
      ['RATE_LIMIT_IP_WINDOW', `its window (default ${formatDurationMs(D.DEFAULT_IP_WINDOW_MS)}); --ip-window`],
      ['RATELIMIT_MAX_CONNECTIONS', 'open TCP connections in all (default: 80% of the fd limit)'],
      ['RATELIMIT_MAX_CONNECTIONS_PER_IP', `per client address (default ${D.DEFAULT_MAX_CONNECTIONS_PER_IP})`],
      ['RATELIMIT_MESSAGES_PER_SECOND', `per connection without a token (default ${D.DEFAULT_MESSAGES_PER_SECOND})`],
      ['RATELIMIT_MAX_FRAME_BYTES', `larger frames close the socket (default ${D.DEFAULT_MAX_FRAME_BYTES})`],
      ['RATELIMIT_WS_IDLE_TIMEOUT', `idle WebSockets without a token close (default ${formatDurationMs(D.DEFAULT_WS_IDLE_TIMEOUT_MS)})`],
      ['RATELIMIT_DENY_CACHE', 'on (default) | off: ask the database even for numbers at their limit'],
    ],
  ],
  [
    'Operations',
    [
      ['RATELIMIT_SHUTDOWN_TIMEOUT', `graceful-stop deadline (default ${formatDurationMs(D.DEFAULT_SHUTDOWN_TIMEOUT_MS)})`],
      ['RATELIMIT_HEARTBEAT_INTERVAL', `how often this daemon reports to \`top\` (default ${formatDurationMs(D.DEFAULT_HEARTBEAT_INTERVAL_MS)})`],
      [
        'RATELIMIT_SPOOL_MAX_BYTES',
        `durable spool of decisions made while the database is down (default ${D.DEFAULT_SPOOL_MAX_BYTES} bytes); when full, consumes fail closed`,
      ],
      ['RATELIMIT_AUDIT_RETENTION', `audit rows older than this are pruned (default ${formatDurationMs(D.DEFAULT_AUDIT_RETENTION_MS)})`],
      ['RATELIMIT_METRICS_PORT', 'unset: /metrics on the main port; set: /metrics only on this port (on HOST)'],
      ['TWILIO_AUTH_TOKEN', 'accept Twilio status callbacks (POST /v1/twilio/status) signed with it; unset: that route is refused'],
      ['RATELIMIT_PUBLIC_URL', 'the scheme and host Twilio calls, e.g. https://ratelimit.example.com, when a proxy changes them'],
      [
        'RATELIMIT_PRICES',
        'price per consume by destination country for ratelimit_spend_total, e.g. unit=sms,currency=USD,default=0.05,GB=0.04 (default: a flat 0.05)',
      ],
      ['LOG_LEVEL', `pino level (default ${D.DEFAULT_LOG_LEVEL})`],
      ['NODE_ENV', 'production: refuse to start without PHONE_ENCRYPTION_KEY, tokens, or TLS to a public database'],
      ['DEBUG', 'any value: a start-up failure is logged with its stack and causes'],
    ],
  ],
];

export function serveEnvironmentHelp(): string {
  const width = Math.max(...GROUPS.flatMap(([, rows]) => rows.map(([name]) => name.length)));
  const lines = ['', 'Environment (flags override variables):'];
  for (const [title, rows] of GROUPS) {
    lines.push(`  ${title}:`);
    for (const [name, what] of rows) lines.push(`    ${name.padEnd(width)}  ${what}`);
  }
  return lines.join('\n');
}
