// The I/O that turns a resolved Config into working parts: the phone key and the database.
// Shared by every command, `serve` included, so the CLI always reads what the daemon enforces.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { userInfo, hostname } from 'node:os';
import type { Config } from '../core/config.js';
import { MIN_KEY_LENGTH } from '../core/defaults.js';
import { RateLimitError } from '../core/errors.js';
import { createPool, redactUrl, verifyConnection, type Pool } from '../db/pool.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../db/embedded.js';
import { explainDatabaseError } from '../db/errors.js';
import { migrate, schemaVersion, loadMigrations, type MigrationReport } from '../db/migrate.js';

export type Warn = (message: string) => void;

export const KEY_FILE = 'phone-encryption.key';

/**
 * PHONE_ENCRYPTION_KEY, or outside production a key generated once and kept in the data dir:
 * every process on this machine (daemon and admin commands) must hash with the same key.
 */
export async function loadPhoneKey(config: Config, warn: Warn): Promise<string> {
  if (config.phoneKey !== undefined) {
    if (config.phoneKey.length < MIN_KEY_LENGTH) {
      warn(`PHONE_ENCRYPTION_KEY is shorter than ${MIN_KEY_LENGTH} characters; production (NODE_ENV=production) refuses such a key`);
    }
    return config.phoneKey;
  }
  const dir = resolve(config.dataDir);
  const file = join(dir, KEY_FILE);
  try {
    const key = (await readFile(file, 'utf8')).trim();
    if (key.length >= MIN_KEY_LENGTH) {
      const mode = (await stat(file)).mode & 0o777;
      if (mode & 0o077) warn(`${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`);
      return key;
    }
    throw new RateLimitError('invalid_config', `${file} holds a key shorter than ${MIN_KEY_LENGTH} characters; fix or delete it (deleting it forgets every stored count)`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const key = randomBytes(48).toString('base64url');
  try {
    // 'wx': when two processes start at once, exactly one key wins and both use it.
    await writeFile(file, `${key}\n`, { mode: 0o600, flag: 'wx' });
    warn(`PHONE_ENCRYPTION_KEY is not set: generated a key in ${file}. Keep it: a new key makes every stored count unreachable. Set PHONE_ENCRYPTION_KEY in production.`);
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readFile(file, 'utf8')).trim();
  }
}

export interface Database {
  pool: Pool;
  /** For messages: the URL without its password, or "embedded PostgreSQL in <dir>". */
  target: string;
  embedded: EmbeddedServer | undefined;
  /**
   * Embedded only: starts the server again if whoever owned it (say, an admin command that
   * started it first) has stopped it. No-op with a URL.
   */
  revive(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenOptions {
  poolSize?: number;
  statementTimeoutMs?: number;
  applicationName?: string;
  onIdleError?: (err: Error) => void;
  /** Connect now, so a bad URL fails here with a clear message (default true). */
  verify?: boolean;
  log?: (message: string) => void;
}

export async function openDatabase(config: Config, opts: OpenOptions = {}): Promise<Database> {
  let url = config.databaseUrl;
  let embedded: EmbeddedServer | undefined;
  let target: string;
  const dataDir = join(resolve(config.dataDir), 'pg');
  if (url === undefined) {
    try {
      embedded = await startEmbeddedPostgres({ dataDir, ...(opts.log ? { log: opts.log } : {}) });
    } catch (err) {
      throw new RateLimitError(
        'embedded_unavailable',
        `cannot start the embedded PostgreSQL in ${dataDir}: ${(err as Error).message}; or set DATABASE_URL to use your own server`,
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
    applicationName: opts.applicationName ?? 'ratelimit',
    onIdleError: opts.onIdleError ?? (() => undefined),
  });
  const close = async () => {
    await pool.end().catch(() => undefined);
    await embedded?.stop();
  };
  const revive = async () => {
    if (!embedded || embedded.owned) return;
    const again = await startEmbeddedPostgres({ dataDir, port: embedded.port, ...(opts.log ? { log: opts.log } : {}) });
    if (again.owned) embedded = again;
  };
  if (opts.verify !== false) {
    try {
      await verifyConnection(pool, url);
    } catch (err) {
      await close();
      throw err instanceof RateLimitError ? new RateLimitError(err.code, err.message.replace(redactUrl(url), target), { cause: err.cause }) : err;
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

/**
 * The embedded database belongs to us, so it is migrated on first use; a database given by
 * URL is only read, and a missing schema says to run `ratelimit db init`.
 */
export async function ensureSchema(db: Database): Promise<MigrationReport | undefined> {
  try {
    if (db.embedded) return await migrate(db.pool);
    const [current, migrations] = await Promise.all([schemaVersion(db.pool), loadMigrations()]);
    const latest = migrations.length;
    if (current < latest) {
      throw new RateLimitError(
        'database_error',
        current === 0
          ? `the database at ${db.target} is not initialised; run: ratelimit db init`
          : `the database at ${db.target} is at migration ${current} of ${latest}; run: ratelimit db init`,
      );
    }
    return undefined;
  } catch (err) {
    throw explainDatabaseError(err, db.target);
  }
}

/** Who a reset is recorded as: RATELIMIT_OPERATOR, else user@host. */
export function operatorName(env: Readonly<Record<string, string | undefined>>): string {
  if (env.RATELIMIT_OPERATOR?.trim()) return env.RATELIMIT_OPERATOR.trim().slice(0, 200);
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (some containers): keep "unknown"
  }
  return `${user}@${hostname()}`;
}
