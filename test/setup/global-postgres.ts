// One PostgreSQL server per test run: TEST_DATABASE_URL if given (CI with a service container), otherwise a
// throwaway embedded cluster. Test files get isolated databases on it through test/helpers/fixture.ts.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Admin connection string of the test server; the role must be allowed to CREATE DATABASE. */
    databaseUrl: string;
  }
}

let server: EmbeddedServer | undefined;
let tempDir: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  let url = process.env.TEST_DATABASE_URL;
  if (!url) {
    tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-test-pg-'));
    // mkdtemp makes it 0700; as root the server runs as `postgres`, which must be able to pass through.
    await fs.chmod(tempDir, 0o711);
    server = await startEmbeddedPostgres({
      dataDir: path.join(tempDir, 'pg'),
      database: 'postgres',
      fsync: false,
      // Every test file opens pools of its own, in parallel.
      extraConfig: { max_connections: '300' },
    });
    url = server.url;
  }
  project.provide('databaseUrl', url);
  // Child processes (the CLI and daemon under test) cannot call inject().
  process.env.RATELIMIT_TEST_ADMIN_URL = url;
}

export async function teardown(): Promise<void> {
  try {
    await server?.stop();
  } finally {
    if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
    server = undefined;
    tempDir = undefined;
  }
}
