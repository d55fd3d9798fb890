import { FIX, failures, RateLimitError, sentence } from '../core/errors.js';
import { describeRole, ReadOnlyTargetError } from './hosts.js';

// Named SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) we act on.
export const SQLSTATE = {
  INVALID_PASSWORD: '28P01',
  INVALID_AUTHORIZATION: '28000',
  INVALID_CATALOG_NAME: '3D000',
  UNDEFINED_TABLE: '42P01',
  DUPLICATE_TABLE: '42P07',
  DUPLICATE_OBJECT: '42710',
  UNDEFINED_FUNCTION: '42883',
  INVALID_FUNCTION_DEFINITION: '42P13',
  UNDEFINED_COLUMN: '42703',
  ADMIN_SHUTDOWN: '57P01',
  CRASH_SHUTDOWN: '57P02',
  CANNOT_CONNECT_NOW: '57P03',
  TOO_MANY_CONNECTIONS: '53300',
  QUERY_CANCELED: '57014',
  CONNECTION_EXCEPTION: '08000',
  CONNECTION_DOES_NOT_EXIST: '08003',
  CONNECTION_FAILURE: '08006',
  SQLCLIENT_UNABLE_TO_ESTABLISH: '08001',
  SQLSERVER_REJECTED_ESTABLISHMENT: '08004',
  READ_ONLY_TRANSACTION: '25006',
  UNIQUE_VIOLATION: '23505',
  SERIALIZATION_FAILURE: '40001',
  DEADLOCK_DETECTED: '40P01',
  DUPLICATE_DATABASE: '42P04',
} as const;

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** True for failures that say "the database is not reachable right now", as opposed to a bug. */
export function isConnectionError(err: unknown): boolean {
  if (err instanceof RateLimitError) return err.code === 'database_unreachable';
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  const state = sqlState(err);
  if (state !== undefined) {
    return (
      state.startsWith('08') ||
      state === SQLSTATE.ADMIN_SHUTDOWN ||
      state === SQLSTATE.CRASH_SHUTDOWN ||
      state === SQLSTATE.CANNOT_CONNECT_NOW ||
      state === SQLSTATE.TOO_MANY_CONNECTIONS ||
      state === SQLSTATE.QUERY_CANCELED ||
      state === SQLSTATE.READ_ONLY_TRANSACTION
    );
  }
  const message = err instanceof Error ? err.message : '';
  // node-postgres reports these without a code.
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error/i.test(
    message,
  );
}

/**
 * What a log line's `err` should hold: the database being unreachable is expected (the daemon
 * answers from memory meanwhile), so only its message; anything else is a bug or a surprise, so
 * the error itself, which pino writes with its stack and cause.
 */
export function errForLog(err: unknown): unknown {
  return isConnectionError(err) ? (err instanceof Error ? err.message : String(err)) : err;
}

/** A statement cancelled by statement_timeout (or by an operator), here or anywhere in the cause chain. */
export function isQueryCanceled(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (sqlState(e) === SQLSTATE.QUERY_CANCELED) return true;
  }
  return false;
}

// Failures that happen before a statement reaches the server (nothing was sent).
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
const NOT_COMMITTED_STATES: ReadonlySet<string> = new Set([
  // the server cancelled it (statement_timeout) or refused to write: rolled back
  SQLSTATE.QUERY_CANCELED,
  SQLSTATE.READ_ONLY_TRANSACTION,
  // refused at connect
  SQLSTATE.CANNOT_CONNECT_NOW,
  SQLSTATE.TOO_MANY_CONNECTIONS,
  SQLSTATE.SQLCLIENT_UNABLE_TO_ESTABLISH,
  SQLSTATE.SQLSERVER_REJECTED_ESTABLISHMENT,
]);

/**
 * For a statement that failed with a connection error: could it have committed anyway? False
 * only when the failure proves it did not (never sent, cancelled, refused). A connection that
 * died while the statement ran (reset, admin or crash shutdown, client-side timeout) may have
 * died after the commit: true.
 */
export function mayHaveCommitted(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (CONNECT_CODES.has(code) || NOT_COMMITTED_STATES.has(code))) return false;
  const message = err instanceof Error ? err.message : '';
  return !/timeout exceeded when trying to connect|due to connection timeout/i.test(message);
}

/**
 * Wraps a driver error in the sentence for its situation (src/core/errors.ts `failures`), so the
 * daemon and every admin command say the same thing. The driver's text stays in `cause` (printed
 * with DEBUG), except for errors we have no sentence for, where it is all we know.
 */
export function explainDatabaseError(err: unknown, target: string): RateLimitError {
  if (err instanceof RateLimitError) return err;
  const o = { cause: err };
  switch (sqlState(err)) {
    case SQLSTATE.INVALID_PASSWORD:
    case SQLSTATE.INVALID_AUTHORIZATION:
      return failures.databaseAuth(target, o);
    case SQLSTATE.INVALID_CATALOG_NAME:
      return failures.databaseMissing(target, o);
    case SQLSTATE.UNDEFINED_TABLE:
    case SQLSTATE.UNDEFINED_FUNCTION:
    case SQLSTATE.UNDEFINED_COLUMN:
      return new RateLimitError('database_error', sentence(`the database at ${target} is not initialised or is behind`, FIX.dbInit), o);
  }
  const readOnly = findReadOnly(err);
  if (readOnly) {
    return new RateLimitError(
      'database_unreachable',
      sentence(
        `the database at ${target} is ${readOnly}, and ratelimit writes on every decision`,
        'point DATABASE_URL at the primary, or list every host with ?target_session_attrs=read-write (postgresql://a:5432,b:5432/db?target_session_attrs=read-write); after a failover, wait for the promotion',
      ),
      o,
    );
  }
  if (sqlState(err) === SQLSTATE.TOO_MANY_CONNECTIONS) {
    return new RateLimitError(
      'database_unreachable',
      sentence(
        `PostgreSQL at ${target} refused a connection: too many connections (its capacity, not an outage)`,
        "raise max_connections (or the pooler's default_pool_size) to at least RATELIMIT_DB_POOL_SIZE + 1 per daemon, plus the admin commands you run at once, or lower RATELIMIT_DB_POOL_SIZE",
      ),
      o,
    );
  }
  const refused = refusedParameter(err);
  if (refused) {
    return new RateLimitError(
      'database_unreachable',
      sentence(
        `the server or pooler at ${target} answered but refused the connection: ${refused}`,
        "remove that parameter from DATABASE_URL (ratelimit sets its session settings itself), or add it to PgBouncer's ignore_startup_parameters",
      ),
      o,
    );
  }
  if (isConnectionError(err)) return failures.databaseUnreachable(target, unreachableReason(err), o);
  const detail = err instanceof Error ? err.message : String(err);
  return new RateLimitError('database_error', `database error at ${target}: ${detail}`, o);
}

/** "a standby (in recovery, read-only)" when the failure is a server that cannot take writes. */
function findReadOnly(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof ReadOnlyTargetError) return describeRole(e.role);
    if (sqlState(e) === SQLSTATE.READ_ONLY_TRANSACTION) {
      const message = e instanceof Error ? e.message : '';
      // "no writable host among 2 (…)": the selector's own words say which host is what.
      if (message.startsWith('no writable host')) return `unusable for writes (${message})`;
      return 'read-only (a standby, or default_transaction_read_only is on)';
    }
  }
  return undefined;
}

/**
 * A server that answered and refused what the client sent at start-up (PgBouncer: "unsupported
 * startup parameter: …", SQLSTATE 08P01): reachable, so "is it running?" would mislead.
 */
function refusedParameter(err: unknown): string | undefined {
  const message = err instanceof Error ? err.message : '';
  if (/unsupported startup parameter|unrecognized configuration parameter/i.test(message)) return message;
  return sqlState(err) === '08P01' ? message : undefined;
}

/** A short reason: the system's code when there is one (ECONNREFUSED), else the driver's words. */
function unreachableReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
  return err instanceof Error ? err.message : String(err);
}
