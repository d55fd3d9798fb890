// The one error vocabulary shared by the daemon and the CLI. Errors that cross layers carry a
// stable `code` (their FailureKind), so the CLI maps them to exit codes and JSON error documents
// in one table, and `serve` logs them with the same line an admin command prints. Every failure a
// user can cause reads as one sentence, "what happened; what to do", built by `failures` below
// (and src/db/errors.ts's explainDatabaseError for the driver side), never the raw driver text.
import { GENERATE_KEY_HINT } from './key.js';

export type FailureKind =
  | 'invalid_phone_number'
  | 'invalid_usage'
  | 'invalid_config'
  | 'port_in_use'
  | 'database_unreachable'
  | 'database_auth'
  | 'database_error'
  | 'migration_failed'
  | 'key_missing'
  | 'key_mismatch'
  | 'embedded_unavailable'
  | 'internal_error';

export class RateLimitError extends Error {
  readonly code: FailureKind;
  constructor(code: FailureKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RateLimitError';
    this.code = code;
  }
}

export class InvalidPhoneNumberError extends RateLimitError {
  constructor(message: string) {
    super('invalid_phone_number', message);
    this.name = 'InvalidPhoneNumberError';
  }
}

export class ConfigError extends RateLimitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid_config', message, options);
    this.name = 'ConfigError';
  }
}

/** The "what to do" halves that several failures share, so each is worded once. */
export const FIX = {
  databaseUrl: 'set DATABASE_URL (or --database-url), e.g. postgres://user:password@host:5432/ratelimit, or unset it to use the embedded database',
  dbInit: 'run: ratelimit db init',
  generateKey: GENERATE_KEY_HINT,
} as const;

/** "what happened; what to do": the shape of every message below. */
export function sentence(what: string, todo: string): string {
  return `${what}; ${todo}`;
}

type Cause = { cause?: unknown };

/** Builders for the failures users cause, one per situation, used by the daemon and the CLI alike. */
export const failures = {
  /** `problems` each name the flag as typed (`--phone-limit`) or the variable (`RATE_LIMIT_PHONE_MAX`). */
  config: (problems: readonly string[]): ConfigError => new ConfigError(problems.join('; ')),

  portInUse: (host: string, port: number, o?: Cause): RateLimitError =>
    new RateLimitError(
      'port_in_use',
      sentence(
        `cannot listen on ${hostPort(host, port)}: the port is already in use (another ratelimit serve?)`,
        'stop that process, or choose another port with --port or PORT',
      ),
      o,
    ),
  portDenied: (host: string, port: number, o?: Cause): RateLimitError =>
    new RateLimitError(
      'invalid_config',
      sentence(
        `cannot listen on ${hostPort(host, port)}: permission denied (ports below 1024 need privileges)`,
        'choose a port from 1024 up with --port or PORT',
      ),
      o,
    ),
  hostUnavailable: (host: string, port: number, o?: Cause): RateLimitError =>
    new RateLimitError(
      'invalid_config',
      sentence(
        `cannot listen on ${hostPort(host, port)}: ${host} is not an address of this machine`,
        'choose another with --host or HOST (127.0.0.1, or 0.0.0.0 for every interface)',
      ),
      o,
    ),

  databaseAuth: (target: string, o?: Cause): RateLimitError =>
    new RateLimitError(
      'database_auth',
      sentence(`PostgreSQL at ${target} refused the user name or password`, 'check both in DATABASE_URL (or --database-url)'),
      o,
    ),
  databaseMissing: (target: string, o?: Cause): RateLimitError =>
    new RateLimitError(
      'database_unreachable',
      sentence(`PostgreSQL at ${target} has no such database`, 'create it, or fix the database name in DATABASE_URL'),
      o,
    ),
  databaseUnreachable: (target: string, reason: string, o?: Cause): RateLimitError =>
    new RateLimitError('database_unreachable', sentence(`cannot reach PostgreSQL at ${target} (${reason}); is it running?`, FIX.databaseUrl), o),
  schemaMissing: (target: string, o?: Cause): RateLimitError =>
    new RateLimitError('database_error', sentence(`the database at ${target} is not initialised`, FIX.dbInit), o),
  schemaBehind: (target: string, current: number, latest: number, o?: Cause): RateLimitError =>
    new RateLimitError('database_error', sentence(`the database at ${target} is at migration ${current} of ${latest}`, FIX.dbInit), o),
  /** A read command's query outlasted RATELIMIT_CLI_TIMEOUT (`timeout`: as the user would write it, e.g. 5s). */
  cliQueryTimeout: (command: string, target: string, timeout: string, o?: Cause): RateLimitError =>
    new RateLimitError(
      'database_error',
      sentence(
        `ratelimit ${command}: a query on ${target} took longer than ${timeout} and was cancelled (RATELIMIT_CLI_TIMEOUT)`,
        'retry, or allow more time with e.g. RATELIMIT_CLI_TIMEOUT=30s; if the database is busy or its tables are large, check its load (ratelimit top) and run ANALYZE or ratelimit db prune',
      ),
      o,
    ),
};

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** A listen() failure as the sentence for its cause; anything else keeps the system's words. */
export function explainListenError(err: unknown, host: string, port: number): RateLimitError {
  const o = { cause: err };
  switch ((err as { code?: unknown } | null)?.code) {
    case 'EADDRINUSE':
      return failures.portInUse(host, port, o);
    case 'EACCES':
      return failures.portDenied(host, port, o);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return failures.hostUnavailable(host, port, o);
  }
  return new RateLimitError('invalid_config', `cannot listen on ${hostPort(host, port)}: ${(err as Error).message}`, o);
}

/** What the CLI prints and `serve` logs for any failure: its stable code and its one line. */
export function describeFailure(err: unknown): { code: FailureKind; message: string } {
  if (err instanceof RateLimitError) return { code: err.code, message: err.message };
  return { code: 'internal_error', message: err instanceof Error ? err.message : String(err) };
}
