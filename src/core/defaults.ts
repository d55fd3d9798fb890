// The contract's defaults (docs/protocol.md), in one place so the daemon, the CLI,
// the deployment files and their tests cannot drift apart.

export const DEFAULT_PORT = 8081;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_DATA_DIR = './.ratelimit';

export const DEFAULT_PHONE_MAX = 2;
export const DEFAULT_PHONE_WINDOW_MS = 60 * 60 * 1000;
export const DEFAULT_IP_MAX = 20;
export const DEFAULT_IP_WINDOW_MS = 60 * 60 * 1000;

/** Frames larger than this close the socket with 1009 (docs/protocol.md). */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024;

/** Open TCP connections (HTTP and WebSocket) one client address may hold (RATELIMIT_MAX_CONNECTIONS_PER_IP). */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 100;
/** A WebSocket without a token that sends nothing for this long is closed (RATELIMIT_WS_IDLE_TIMEOUT). */
export const DEFAULT_WS_IDLE_TIMEOUT_MS = 60_000;
/** Per connection without a token (RATELIMIT_MESSAGES_PER_SECOND). */
export const DEFAULT_MESSAGES_PER_SECOND = 20;
/** Statement timeout on the decision path (RATELIMIT_DB_TIMEOUT). */
export const DEFAULT_DB_STATEMENT_TIMEOUT_MS = 2_000;
// The read commands' queries (stats, top, status): a frame that takes longer is no use to an
// operator, and a runaway scan on a big table should say so instead of hanging.
export const DEFAULT_CLI_TIMEOUT_MS = 5_000;
/** The daemon's pooled connections (RATELIMIT_DB_POOL_SIZE). */
export const DEFAULT_DB_POOL_SIZE = 8;
/** How long a graceful stop may take (RATELIMIT_SHUTDOWN_TIMEOUT). */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;
/** Unwritten decisions the spool keeps during an outage (RATELIMIT_SPOOL_MAX_BYTES): ~100k calls or more. */
export const DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024;
/** How often each daemon writes its heartbeat row (RATELIMIT_HEARTBEAT_INTERVAL). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 2_000;
export const DEFAULT_LOG_LEVEL = 'info';
/** Audit rows (resets, policy and list changes) older than this are pruned (RATELIMIT_AUDIT_RETENTION). */
export const DEFAULT_AUDIT_RETENTION_MS = 90 * 24 * 60 * 60 * 1000;

/** A key shorter than this refuses to start in production or with a named database. */
export const MIN_KEY_LENGTH = 32;
/** A RATELIMIT_API_TOKENS entry shorter than this refuses to start. */
export const MIN_TOKEN_LENGTH = 16;

/** What Fly's release_command and operators run to migrate. */
export const MIGRATE_COMMAND = 'ratelimit db init';
