// Turns a resolved Config into a working database: the embedded server when no URL is given,
// a pool, a verified connection. Shared by every command, `serve` included.
import { join, resolve } from 'node:path';
import type { Config } from '../core/config.js';
import { failures, RateLimitError } from '../core/errors.js';
import { createPool, hostSelectorOf, redactUrl, verifyConnection, type Pool } from './pool.js';
import { NoClusterError, startEmbeddedPostgres, type EmbeddedServer } from './embedded/index.js';
import { explainDatabaseError } from './errors.js';
import { migrate, schemaVersion, loadMigrations, type MigrationReport } from './migrate.js';

export interface Database {
  pool: Pool;
  /** For messages: the URL without its password, or "embedded PostgreSQL in <dir>". */
  target: string;
  embedded: EmbeddedServer | undefined;
  /**
   * Embedded: starts the server again if whoever owned it (say, an admin command that started
   * it first) has stopped it. A URL: picks the writable host again (multi-host URLs).
   */
  revive(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenOptions {
  poolSize?: number;
  statementTimeoutMs?: number;
  /** See PoolOptions.clientTimeout. */
  clientTimeout?: boolean;
  applicationName?: string;
  onIdleError?: (err: Error) => void;
  /** How long opening one connection may take (default 5 s); the daemon gives its DB timeout. */
  connectTimeoutMs?: number;
  /** See PoolOptions.onCapacity. */
  onCapacity?: (err: Error) => void;
  /** Connect now, so a bad URL fails here with a clear message (default true). */
  verify?: boolean;
  log?: (message: string) => void;
  /**
   * Embedded only: create the cluster when the data dir has none (default true: the daemon and
   * `db init`). Admin commands pass false and fail saying where they looked instead.
   */
  createEmbedded?: boolean;
}

export async function openDatabase(config: Config, opts: OpenOptions = {}): Promise<Database> {
  let url = config.databaseUrl;
  let embedded: EmbeddedServer | undefined;
  let target: string;
  const dataDir = join(resolve(config.dataDir), 'pg');
  if (url === undefined) {
    try {
      embedded = await startEmbeddedPostgres({ dataDir, create: opts.createEmbedded ?? true, ...(opts.log ? { log: opts.log } : {}) });
    } catch (err) {
      if (err instanceof NoClusterError) {
        throw new RateLimitError(
          'embedded_unavailable',
          `no database: DATABASE_URL is not set and there is no embedded PostgreSQL in ${dataDir} (this command never creates one). ` +
            `Point it at the daemon's data: --data-dir or RATELIMIT_DATA_DIR (the folder holding pg/), or DATABASE_URL; ` +
            'to create the embedded database here, run: ratelimit db init',
          { cause: err },
        );
      }
      throw new RateLimitError(
        'embedded_unavailable',
        // The embedded module's messages end with their own fix; DATABASE_URL, the way out of every one of
        // them, is said here once.
        `cannot start the embedded PostgreSQL in ${dataDir}: ${(err as Error).message.replace(/[.\s]+$/, '')}; or set DATABASE_URL to use a PostgreSQL server you already run`,
        { cause: err },
      );
    }
    url = embedded.url;
    target = `embedded PostgreSQL in ${dataDir}`;
  } else {
    target = redactUrl(url);
  }
  const pool = createPool({
    url,
    max: opts.poolSize ?? 4,
    ...(opts.statementTimeoutMs ? { statementTimeoutMs: opts.statementTimeoutMs } : {}),
    ...(opts.clientTimeout !== undefined ? { clientTimeout: opts.clientTimeout } : {}),
    applicationName: opts.applicationName ?? 'ratelimit',
    onIdleError: opts.onIdleError ?? (() => undefined),
    ...(opts.connectTimeoutMs ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
    ...(opts.onCapacity ? { onCapacity: opts.onCapacity } : {}),
  });
  const close = async () => {
    await pool.end().catch(() => undefined);
    await embedded?.stop();
  };
  const revive = async () => {
    // A multi-host URL: after a failover the writable host may be another one.
    if (!embedded) return hostSelectorOf(pool)?.select();
    if (embedded.owned) return;
    // Called before every (re)migration: finding the same server still there is not news, so its
    // "attached" line is said once, by the open above; a server we had to start again is.
    const said: string[] = [];
    const again = await startEmbeddedPostgres({ dataDir, port: embedded.port, create: false, log: (m) => said.push(m) }).catch((err: unknown) => {
      said.forEach((m) => opts.log?.(m));
      throw err;
    });
    if (again.owned || again.port !== embedded.port) said.forEach((m) => opts.log?.(m));
    if (again.owned) embedded = again;
  };
  if (opts.verify !== false) {
    try {
      await verifyConnection(pool, target);
    } catch (err) {
      await close();
      throw err;
    }
  }
  return {
    pool,
    target,
    get embedded() {
      return embedded;
    },
    revive,
    close,
  };
}

const ensured = new WeakSet<Database>();

/**
 * The embedded database belongs to us, so it is migrated on first use; a database given by
 * URL is only read, and a missing schema says to run `ratelimit db init`.
 */
export async function ensureSchema(db: Database): Promise<MigrationReport | undefined> {
  // Commands call it, and so does the key check before them: once per Database is enough.
  if (ensured.has(db)) return undefined;
  try {
    if (db.embedded) {
      const report = await migrate(db.pool);
      ensured.add(db);
      return report;
    }
    const [current, migrations] = await Promise.all([schemaVersion(db.pool), loadMigrations()]);
    const latest = migrations.at(-1)?.id ?? 0;
    if (current < latest) throw current === 0 ? failures.schemaMissing(db.target) : failures.schemaBehind(db.target, current, latest);
    ensured.add(db);
    return undefined;
  } catch (err) {
    throw explainDatabaseError(err, db.target);
  }
}
