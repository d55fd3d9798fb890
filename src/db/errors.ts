import { RateLimitError } from '../core/errors.js';

// Named SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) we act on.
export const SQLSTATE = {
  INVALID_PASSWORD: '28P01',
  INVALID_AUTHORIZATION: '28000',
  INVALID_CATALOG_NAME: '3D000',
  UNDEFINED_TABLE: '42P01',
  UNDEFINED_FUNCTION: '42883',
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
  DUPLICATE_DATABASE: '42P04',
} as const;

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

export const HOW_TO_SET_URL =
  'set DATABASE_URL (or --database-url), e.g. postgres://user:password@host:5432/ratelimit, or unset it to use the embedded database';

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

/** A statement cancelled by statement_timeout (or by an operator), here or anywhere in the cause chain. */
export function isQueryCanceled(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (sqlState(e) === SQLSTATE.QUERY_CANCELED) return true;
  }
  return false;
}

/** Wraps a driver error in one that says what to do about it. */
export function explainDatabaseError(err: unknown, target: string): RateLimitError {
  if (err instanceof RateLimitError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  switch (sqlState(err)) {
    case SQLSTATE.INVALID_PASSWORD:
    case SQLSTATE.INVALID_AUTHORIZATION:
      return new RateLimitError('database_auth', `PostgreSQL at ${target} refused the credentials (${detail}); check the user and password in DATABASE_URL`, { cause: err });
    case SQLSTATE.INVALID_CATALOG_NAME:
      return new RateLimitError('database_unreachable', `PostgreSQL at ${target}: ${detail}; create it or fix the database name in DATABASE_URL`, { cause: err });
    case SQLSTATE.UNDEFINED_TABLE:
    case SQLSTATE.UNDEFINED_FUNCTION:
    case SQLSTATE.UNDEFINED_COLUMN:
      return new RateLimitError('database_error', `the database at ${target} is not initialised or is behind (${detail}); run: ratelimit db init`, { cause: err });
  }
  if (isConnectionError(err)) {
    return new RateLimitError('database_unreachable', `cannot reach PostgreSQL at ${target} (${detail}); is it running? ${HOW_TO_SET_URL}`, { cause: err });
  }
  return new RateLimitError('database_error', `database error at ${target}: ${detail}`, { cause: err });
}
