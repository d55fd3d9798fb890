import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { QueryConfig } from 'pg';
import type { Pool } from './pool.js';
import { RateLimitError } from '../core/errors.js';

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

export interface MigrationReport {
  applied: Migration[];
  alreadyApplied: number;
  latest: number;
}

// Any fixed 64-bit number works; it only has to be the same in every process that migrates.
// (The ASCII of "ratelimt".)
const MIGRATION_LOCK_KEY = 0x726174656c696d74n;
// Long enough for a migration that rewrites a 10M-row table on a slow disk. pg reads a query's
// own query_timeout (absent from @types/pg) before the pool's.
const MIGRATION_TIMEOUT_MS = 3_600_000;
const MIGRATION_FILE = /^(\d{3,})_([a-z0-9_]+)\.sql$/;

/** The .sql files live in src/db/migrations both in a checkout and in a build (they are not compiled). */
function migrationsDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'src', 'db', 'migrations');
    if (existsSync(join(dir, 'package.json')) && existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), 'migrations');
}

/** `001_seed_schema`: how a migration is named everywhere it is printed, as its file is. */
export function migrationName(m: Pick<Migration, 'id' | 'name'>): string {
  return `${String(m.id).padStart(3, '0')}_${m.name}`;
}

export async function loadMigrations(dir = migrationsDir()): Promise<Migration[]> {
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
    if (i === 0 ? m.id !== 1 : m.id <= migrations[i - 1]!.id) throw new Error(`migrations must be numbered 1, 2, 3… each once; found ${m.id} at position ${i + 1}`);
  });
  return migrations;
}

/**
 * Applies pending migrations, each in its own transaction, under a session advisory lock, so
 * any number of processes may run this at once: one applies, the others wait and find nothing
 * to do. Forward only: a database newer than this code is refused rather than guessed at.
 */
export async function migrate(pool: Pool, migrations?: Migration[]): Promise<MigrationReport> {
  const all = migrations ?? (await loadMigrations());
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
      return { applied, alreadyApplied: done.size, latest };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]).catch(() => undefined);
    }
  } finally {
    // Back to the pool's own timeout before the connection is reused.
    await client.query('RESET statement_timeout').catch(() => undefined);
    client.release();
  }
}

/** The newest applied migration, or 0 on an uninitialised database. */
export async function schemaVersion(pool: Pool): Promise<number> {
  // Two statements: a reference to a missing table fails at parse time, even in an untaken branch.
  const exists = await pool.query<{ t: string | null }>(`SELECT to_regclass('ratelimit_migrations')::text AS t`);
  if (exists.rows[0]?.t == null) return 0;
  const { rows } = await pool.query<{ v: number }>('SELECT COALESCE(max(id), 0) AS v FROM ratelimit_migrations');
  return rows[0]?.v ?? 0;
}
