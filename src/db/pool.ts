import pg from 'pg';
import { explainDatabaseError } from './errors.js';

// BIGINT (int8) arrives as a string by default; our BIGINTs are ms timestamps and counters far
// below 2^53, and reading them as strings once made a public implementation report 0 used.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));
// BIGINT[] (oid 1016): the call logs. Integer arrays in text form are just `{1,2,3}`.
const INT8_ARRAY_OID = 1016;
(pg.types.setTypeParser as (oid: number, parse: (v: string) => unknown) => void)(INT8_ARRAY_OID, (v: string) => (v === '{}' ? [] : v.slice(1, -1).split(',').map(Number)));

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export interface PoolOptions {
  url: string;
  max?: number;
  /** Bounds every statement, so a wedged database cannot stall callers indefinitely. */
  statementTimeoutMs?: number;
  /**
   * false: the statement timeout is the server's only (statement_timeout, which a session such
   * as the migrator's may lift); default: the client also gives up a second after it.
   */
  clientTimeout?: boolean;
  connectTimeoutMs?: number;
  applicationName?: string;
  /** Errors on idle clients (server restart, network cut) arrive here instead of crashing. */
  onIdleError?: (err: Error) => void;
}

/** `postgres://user:***@host:5432/db`: safe for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return `${u.protocol}//${u.username ? `${u.username}${u.password ? ':***' : ''}@` : ''}${u.host}${u.pathname}`;
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}

export function createPool(opts: PoolOptions): Pool {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    application_name: opts.applicationName ?? 'ratelimit',
    ...(opts.statementTimeoutMs ? { statement_timeout: opts.statementTimeoutMs } : {}),
    ...(opts.statementTimeoutMs && opts.clientTimeout !== false ? { query_timeout: opts.statementTimeoutMs + 1_000 } : {}),
    // JIT compiles any plan whose estimated cost is high, which a misestimate easily makes; for
    // statements that run in milliseconds it is pure overhead (it once cost `stats` ~1 s of its
    // 1.2 s at 1M rows). A SET on each new connection (pg-pool awaits onConnect before handing
    // it out), not a startup option, which poolers such as PgBouncer refuse. A server without
    // JIT (PostgreSQL < 11) refuses the SET, which changes nothing.
    // @types/pg declares onConnect as returning void; pg-pool awaits the promise it returns.
    // eslint-disable-next-line @typescript-eslint/no-misused-promises
    onConnect: async (client) => {
      await client.query('SET jit = off').catch(() => undefined);
    },
  });
  pool.on('error', (err) => opts.onIdleError?.(err));
  return pool;
}

/** Connects once, so a bad URL or password is reported before any work starts. */
/** `target` names the database in the message (a redacted URL, or the embedded server). */
export async function verifyConnection(pool: Pool, target: string): Promise<void> {
  try {
    const client = await pool.connect();
    client.release();
  } catch (err) {
    throw explainDatabaseError(err, target);
  }
}
