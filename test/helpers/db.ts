// Per-test-file databases on the run's shared test server (test/setup/global-postgres.ts), so files running
// in parallel never see each other's rows or schema.

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';

function adminUrl(): string {
  const url = inject('databaseUrl') ?? process.env.RATELIMIT_TEST_ADMIN_URL;
  if (!url) throw new Error('no test database server: run through vitest (globalSetup) or set RATELIMIT_TEST_ADMIN_URL');
  return url;
}

async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = adminUrl();
  // pid + random: unique across parallel workers and across reruns against a long-lived TEST_DATABASE_URL.
  const name = `ratelimit_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  await adminQuery(admin, `CREATE DATABASE "${name}"`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  return {
    url: url.toString(),
    // FORCE: a test that forgot to close its pool must not make cleanup fail.
    drop: () => (dropped ??= adminQuery(admin, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)),
  };
}

/**
 * This test file's own migrated database and a pool on it, made before its tests and dropped
 * after them (the call registers the beforeAll/afterAll hooks). Read `.pool` and `.url` inside
 * hooks and tests, not at module level: they exist once beforeAll has run.
 */
export function migratedTestDatabase(opts: { max: number }): { readonly url: string; readonly pool: Pool } {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let pool: Pool | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
    pool = createPool({ url: db.url, max: opts.max });
    await migrate(pool);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });
  const ready = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error('the test database is made in beforeAll: read it inside a hook or a test');
    return v;
  };
  return {
    get url() {
      return ready(db).url;
    },
    get pool() {
      return ready(pool);
    },
  };
}
