import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'test/**/*.test.tsx'],
    // One PostgreSQL server for the whole run; each test file gets its own database (test/helpers/fixture.ts).
    globalSetup: ['test/setup/global-postgres.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Separate processes: the code under test spawns servers and handles signals, which threads can't isolate.
    pool: 'forks',
  },
});
