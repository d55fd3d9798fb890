import pg from 'pg';
import { explainDatabaseError, SQLSTATE } from './errors.js';
import { hostLabel, parseDatabaseUrl } from '../core/database-url.js';
import { HostSelector, isWritable, ReadOnlyTargetError, ROLE_QUERY } from './hosts.js';

// BIGINT (int8) arrives as a string by default; our BIGINTs are ms timestamps and counters far
// below 2^53, and reading them as strings once made a public implementation report 0 used.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));
// BIGINT[] (oid 1016): the call logs. Integer arrays in text form are just `{1,2,3}`, with NULL
// elements spelled NULL (ratelimit_decide_v3's per-request block and reset times).
const INT8_ARRAY_OID = 1016;
const int8OrNull = (x: string) => (x === 'NULL' ? null : Number(x));
(pg.types.setTypeParser as (oid: number, parse: (v: string) => unknown) => void)(INT8_ARRAY_OID, (v: string) =>
  v === '{}' ? [] : v.includes('N') ? v.slice(1, -1).split(',').map(int8OrNull) : v.slice(1, -1).split(',').map(Number),
);

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
  /** Refuse connections to a standby or a read-only server (default true): the daemon writes. */
  requireWritable?: boolean;
  /** The server refused a connection for capacity (53300); it is retried within the connect timeout. */
  onCapacity?: (err: Error) => void;
}

/** `postgres://user:***@host:5432/db` (every host of a multi-host URL): safe for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const address = parseDatabaseUrl(url);
    const u = new URL(address.urlFor(0));
    const user = u.username ? `${u.username}${u.password ? ':***' : ''}@` : '';
    return `${u.protocol}//${user}${address.hosts.map(hostLabel).join(',')}${u.pathname}`;
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}

const selectors = new WeakMap<Pool, HostSelector>();

/** The pool's host choice (one host for a single-host URL): re-run select() after a failover. */
export function hostSelectorOf(pool: Pool): HostSelector | undefined {
  return selectors.get(pool);
}

// "too many connections" (53300) is a full server, not a missing one: connecting again shortly
// usually succeeds as other clients' connections close. Retried within the connect timeout.
const CAPACITY_RETRY_MIN_MS = 25;
const CAPACITY_RETRY_MAX_MS = 250;

export function createPool(opts: PoolOptions): Pool {
  const address = parseDatabaseUrl(opts.url);
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
  const selector = new HostSelector(address, connectTimeoutMs);
  const requireWritable = opts.requireWritable ?? true;
  // Each new connection goes to the host chosen last (pg-pool constructs one Client per connection).
  class RoutedClient extends pg.Client {
    constructor(config?: pg.ClientConfig) {
      super({ ...config, connectionString: selector.url });
    }
  }
  const settings: string[] = [];
  // Session settings are SET once per connection, never sent as startup parameters: PgBouncer
  // refuses unknown startup parameters (statement_timeout among them) with its default ini.
  if (opts.statementTimeoutMs) settings.push(`SET statement_timeout = ${Math.floor(opts.statementTimeoutMs)}`);
  const setup = [...settings, ROLE_QUERY].join('; ');
  const where = redactUrl(opts.url);
  const pool = new RetryingPool(
    {
      Client: RoutedClient,
      max: opts.max ?? 10,
      connectionTimeoutMillis: connectTimeoutMs,
      idleTimeoutMillis: 30_000,
      application_name: opts.applicationName ?? 'ratelimit',
      ...(opts.statementTimeoutMs && opts.clientTimeout !== false ? { query_timeout: opts.statementTimeoutMs + 1_000 } : {}),
      // @types/pg declares onConnect as returning void; pg-pool awaits the promise it returns.
      // eslint-disable-next-line @typescript-eslint/no-misused-promises
      onConnect: async (client) => {
        const results = (await client.query(setup)) as unknown as pg.QueryResult | pg.QueryResult[];
        const last = Array.isArray(results) ? results[results.length - 1]! : results;
        const row = last.rows[0] as { in_recovery: boolean; read_only: boolean };
        const role = { inRecovery: row.in_recovery, readOnly: row.read_only };
        if (requireWritable && !isWritable(role, address.target)) throw new ReadOnlyTargetError(role, where);
        // JIT compiles any plan whose estimated cost is high, which a misestimate easily makes; for
        // statements that run in milliseconds it is pure overhead (it once cost `stats` ~1 s of its
        // 1.2 s at 1M rows). A server without JIT (PostgreSQL < 11) refuses the SET, which changes nothing.
        await client.query('SET jit = off').catch(() => undefined);
      },
    },
    connectTimeoutMs,
    opts.onCapacity,
  );
  pool.on('error', (err) => opts.onIdleError?.(err));
  selectors.set(pool, selector);
  return pool;
}

type ConnectCallback = (err: Error | undefined, client: PoolClient | undefined, done: (release?: unknown) => void) => void;

/** pg.Pool whose connect() (pool.query's too) retries "too many connections" within its budget. */
class RetryingPool extends pg.Pool {
  constructor(
    config: pg.PoolConfig,
    private readonly budgetMs: number,
    private readonly onCapacity: ((err: Error) => void) | undefined,
  ) {
    super(config);
  }

  // Both of pg.Pool's forms: the promise, and the callback pool.query uses (the promise returned
  // then has handlers, so its rejection is never unhandled).
  override connect(cb?: ConnectCallback): Promise<PoolClient> {
    const p = this.connectRetrying();
    if (cb) {
      p.then(
        (client) => cb(undefined, client, (release?: unknown) => client.release(release as Error | undefined)),
        (err: Error) => cb(err, undefined, () => undefined),
      );
    }
    return p;
  }

  private async connectRetrying(): Promise<PoolClient> {
    const deadline = Date.now() + this.budgetMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await (super.connect as () => Promise<PoolClient>).call(this);
      } catch (err) {
        if ((err as { code?: unknown }).code !== SQLSTATE.TOO_MANY_CONNECTIONS || this.ending) throw err;
        if (attempt === 0) this.onCapacity?.(err as Error);
        const waitMs = Math.min(CAPACITY_RETRY_MAX_MS, CAPACITY_RETRY_MIN_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
        if (Date.now() + waitMs >= deadline) throw err;
        await new Promise((r) => setTimeout(r, waitMs));
      }
    }
  }
}

/**
 * Connects once, so a bad URL or password is reported before any work starts. `target` names
 * the database in the message (a redacted URL, or the embedded server).
 */
export async function verifyConnection(pool: Pool, target: string): Promise<void> {
  try {
    await hostSelectorOf(pool)?.select();
    const client = await pool.connect();
    client.release();
  } catch (err) {
    throw explainDatabaseError(err, target);
  }
}

/**
 * False when the connections behind `pool` are shared between clients transaction by transaction
 * (PgBouncer's pool_mode = transaction or statement). Two connections of ours are held at once:
 * a session pooler (or PostgreSQL itself) gives each its own server process, a transaction pooler
 * hands the first one's server (idle between its statements) to the second. A matching pid proves
 * transaction pooling; distinct pids are what session pooling always shows (and what transaction
 * pooling shows only with several idle servers, which PgBouncer does not pick over its most
 * recently used one).
 */
export async function hasSessionPooling(pool: Pool): Promise<boolean> {
  const a = await pool.connect();
  try {
    const pidA = (await a.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const b = await pool.connect();
    try {
      const pidB = (await b.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      return pidA !== pidB;
    } finally {
      b.release();
    }
  } finally {
    a.release();
  }
}
