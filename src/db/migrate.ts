import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { QueryConfig } from 'pg';
import type { Pool, PoolClient } from './pool.js';
import { RateLimitError } from '../core/errors.js';
import { EXACT_LOG_ENTRIES } from '../core/policy/log-summary.js';
import { ACTIVE_EPOCH_MS } from './active-numbers.js';
import { NOW_MS } from './clock.js';
import { SQLSTATE } from './errors.js';

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

/** One current SQL function: src/db/functions/<file>.sql defines ratelimit_<file>. */
export interface FunctionSource {
  /** The function's name, `ratelimit_decide_v3` for decide_v3.sql. */
  name: string;
  /** The file's text with its {{PLACEHOLDERS}} filled in. */
  sql: string;
}

export interface MigrationReport {
  applied: Migration[];
  alreadyApplied: number;
  latest: number;
  /** Functions (re)created because their source changed. */
  functions: string[];
}

// Any fixed 64-bit number works; it only has to be the same in every process that migrates.
// (The ASCII of "ratelimt".)
const MIGRATION_LOCK_KEY = 0x726174656c696d74n;
// Long enough for a migration that rewrites a 10M-row table on a slow disk. pg reads a query's
// own query_timeout (absent from @types/pg) before the pool's.
const MIGRATION_TIMEOUT_MS = 3_600_000;
const MIGRATION_FILE = /^(\d{3,})_([a-z0-9_]+)\.sql$/;

/**
 * The .sql files live in src/db/migrations and src/db/functions both in a checkout and in a build
 * (they are not compiled; package.json "files" ships both).
 */
function sqlDir(name: 'migrations' | 'functions'): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'src', 'db', name);
    if (existsSync(join(dir, 'package.json')) && existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), name);
}

/**
 * Constants defined once in TypeScript and given to the function sources as {{NAME}}, so SQL
 * and the TS models cannot drift apart.
 */
export const FUNCTION_CONSTANTS: Readonly<Record<string, string>> = {
  LOG_SUMMARY_ENTRIES: String(EXACT_LOG_ENTRIES),
  ACTIVE_EPOCH_MS: String(ACTIVE_EPOCH_MS),
  NOW_MS,
};

const FUNCTION_FILE = /^([a-z0-9_]+)\.sql$/;

/** Every current function source, with its constants filled in. */
export async function loadFunctions(dir = sqlDir('functions')): Promise<FunctionSource[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  const out: FunctionSource[] = [];
  for (const file of files) {
    const match = FUNCTION_FILE.exec(file);
    if (!match) throw new Error(`function file ${file} must be named name.sql (lower case)`);
    const name = `ratelimit_${match[1]!}`;
    const text = await readFile(join(dir, file), 'utf8');
    const defined = [...text.matchAll(/CREATE OR REPLACE FUNCTION (\w+)\(/g)].map((m) => m[1]);
    if (defined.length !== 1 || defined[0] !== name) {
      throw new Error(`function file ${file} must define exactly one function, ${name} (found ${defined.join(', ') || 'none'})`);
    }
    const sql = text.replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
      const value = FUNCTION_CONSTANTS[key];
      if (value === undefined) throw new Error(`function file ${file} uses {{${key}}}, which FUNCTION_CONSTANTS does not define`);
      return value;
    });
    out.push({ name, sql });
  }
  return out;
}

/** `001_seed_schema`: how a migration is named everywhere it is printed, as its file is. */
export function migrationName(m: Pick<Migration, 'id' | 'name'>): string {
  return `${String(m.id).padStart(3, '0')}_${m.name}`;
}

export async function loadMigrations(dir = sqlDir('migrations')): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = MIGRATION_FILE.exec(file);
    if (!match) throw new Error(`migration file ${file} must be named NNN_name.sql`);
    migrations.push({ id: Number(match[1]), name: match[2]!, sql: await readFile(join(dir, file), 'utf8') });
  }
  // Increasing and unique. Gaps are allowed: migration numbers are reserved per branch, so one
  // may land before the numbers below it (migrate() applies whichever are missing, in order).
  migrations.forEach((m, i) => {
    if (i === 0 ? m.id !== 1 : m.id <= migrations[i - 1]!.id)
      throw new Error(`migrations must be numbered 1, 2, 3… each once; found ${m.id} at position ${i + 1}`);
  });
  return migrations;
}

/**
 * Applies pending migrations, each in its own transaction, then the function sources that
 * changed, all under a session advisory lock, so any number of processes may run this at once:
 * one applies, the others wait and find nothing to do. Forward only: a database newer than this
 * code is refused rather than guessed at. Migrations keep tables and data (committed history,
 * never edited); src/db/functions holds the one readable source of each function.
 * `functions`: [] leaves the functions as the migrations made them (tests building an older
 * release's schema).
 */
export async function migrate(pool: Pool, migrations?: Migration[], functions?: FunctionSource[]): Promise<MigrationReport> {
  const all = migrations ?? (await loadMigrations());
  const sources = functions ?? (await loadFunctions());
  const client = await pool.connect();
  try {
    // A migration may rewrite a big table, and waiting for another migrator is expected: a
    // pool's statement timeout (the read commands set one) must not cut either short.
    await client.query('SET statement_timeout = 0');
    await client.query({ text: 'SELECT pg_advisory_lock($1)', values: [MIGRATION_LOCK_KEY.toString()], query_timeout: MIGRATION_TIMEOUT_MS } as QueryConfig);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS ratelimit_migrations (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
      )`);
      const { rows } = await client.query<{ id: number }>('SELECT id FROM ratelimit_migrations ORDER BY id');
      const done = new Set(rows.map((r) => r.id));
      const newest = rows.length > 0 ? rows[rows.length - 1]!.id : 0;
      const latest = all.length > 0 ? all[all.length - 1]!.id : 0;
      if (newest > latest) {
        throw new RateLimitError(
          'migration_failed',
          `the database is at migration ${newest} but this ratelimit knows only up to ${latest}; upgrade ratelimit instead of downgrading the schema`,
        );
      }
      const applied: Migration[] = [];
      for (const m of all) {
        if (done.has(m.id)) continue;
        try {
          await client.query('BEGIN');
          await client.query({ text: m.sql, query_timeout: MIGRATION_TIMEOUT_MS } as QueryConfig);
          await client.query('INSERT INTO ratelimit_migrations (id, name) VALUES ($1, $2)', [m.id, m.name]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw new RateLimitError('migration_failed', `migration ${migrationName(m)} failed: ${(err as Error).message}`, { cause: err });
        }
        applied.push(m);
      }
      const changed = await applyFunctions(client, sources);
      return { applied, alreadyApplied: done.size, latest, functions: changed };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]).catch(() => undefined);
    }
  } finally {
    // Back to the pool's own timeout before the connection is reused.
    await client.query('RESET statement_timeout').catch(() => undefined);
    client.release();
  }
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * Creates or replaces each function whose source differs from the one last applied (its digest
 * is kept in ratelimit_functions), in one transaction: a daemon restart changes nothing, so no
 * running daemon's plans are invalidated and a role that may not create functions can still
 * start once its schema is current. CREATE OR REPLACE keeps a function's identity when its
 * argument types stay; when they change, the old overload is dropped (the previous release's
 * daemons call by the old types: version the name instead, see docs/self-hosting.md). A change
 * CREATE OR REPLACE refuses (argument names, result columns) drops and recreates the function.
 */
async function applyFunctions(client: PoolClient, sources: readonly FunctionSource[]): Promise<string[]> {
  await client.query(`CREATE TABLE IF NOT EXISTS ratelimit_functions (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
  )`);
  const { rows } = await client.query<{ name: string; sha256: string }>('SELECT name, sha256 FROM ratelimit_functions');
  const known = new Map(rows.map((r) => [r.name, r.sha256]));
  const stale = sources.filter((f) => known.get(f.name) !== sha256(f.sql));
  if (stale.length === 0) return [];
  try {
    await client.query('BEGIN');
    // Bodies are checked when they run: the files may be applied in any order.
    await client.query('SET LOCAL check_function_bodies = off');
    for (const f of stale) {
      const before = await overloads(client, f.name);
      await client.query('SAVEPOINT fn');
      try {
        await client.query({ text: f.sql, query_timeout: MIGRATION_TIMEOUT_MS } as QueryConfig);
      } catch (err) {
        if ((err as { code?: unknown }).code !== SQLSTATE.INVALID_FUNCTION_DEFINITION) throw err;
        await client.query('ROLLBACK TO SAVEPOINT fn');
        for (const sig of before.keys()) await client.query(`DROP FUNCTION ${sig}`);
        await client.query({ text: f.sql, query_timeout: MIGRATION_TIMEOUT_MS } as QueryConfig);
      }
      // Overloads this source did not just write (their catalog row is unchanged) are superseded
      // signatures.
      for (const [sig, version] of await overloads(client, f.name)) {
        if (before.get(sig) === version) await client.query(`DROP FUNCTION ${sig}`);
      }
      await client.query(
        `INSERT INTO ratelimit_functions (name, sha256) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = NOW()`,
        [f.name, sha256(f.sql)],
      );
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new RateLimitError('migration_failed', `applying src/db/functions failed: ${(err as Error).message}`, { cause: err });
  }
  return stale.map((f) => f.name);
}

/** The functions named `name` in the current schema: signature -> the version of its catalog row. */
async function overloads(client: PoolClient, name: string): Promise<Map<string, string>> {
  const { rows } = await client.query<{ sig: string; version: string }>(
    `SELECT p.oid::regprocedure::text AS sig, p.xmin::text || '/' || p.ctid::text AS version FROM pg_proc AS p
      WHERE p.proname = $1 AND p.pronamespace = current_schema()::regnamespace`,
    [name],
  );
  return new Map(rows.map((r) => [r.sig, r.version]));
}

/** The newest applied migration, or 0 on an uninitialised database. */
export async function schemaVersion(pool: Pool): Promise<number> {
  // Two statements: a reference to a missing table fails at parse time, even in an untaken branch.
  const exists = await pool.query<{ t: string | null }>(`SELECT to_regclass('ratelimit_migrations')::text AS t`);
  if (exists.rows[0]?.t == null) return 0;
  const { rows } = await pool.query<{ v: number }>('SELECT COALESCE(max(id), 0) AS v FROM ratelimit_migrations');
  return rows[0]?.v ?? 0;
}
