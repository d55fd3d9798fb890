// One-off profile of the decision statement (not part of `npm run bench`): where PostgreSQL's
// time per decision goes, statement by statement inside ratelimit_decide_v3, from
// pg_stat_statements with `track = all` (it times each statement a plpgsql function runs).
// Cases, each on its own database of the same embedded server, one connection:
//   default - 256-decision batches under the default policy over numbers spread 7 per
//             1,000-number range (bench/lib/keys.ts), a table of SQL_PROFILE_PREFILL numbers
//   uniform - 256-decision batches under the default policy over 100k numbers the table mostly
//             lacks (the end-to-end `ws uniform` scenario on a fresh table)
//   single  - 256-decision batches for one number under the default policy (mostly denials)
//   lone    - one-decision statements under the default policy
// Needs pg_stat_statements in the PostgreSQL installation the embedded server uses.
//
//   npm run build && node dist/bench/sql-profile.js      (SQL_PROFILE_BATCHES=100 by default)
// The pg_stat_statements times are wall times: on a busy machine they exceed the CPU read from
// /proc, and "outside the top-level statements" can come out negative; bench/sql-ab.ts compares
// two sources without that noise.
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/db/embedded/index.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { FUNCTION_CONSTANTS, migrate } from '../src/db/migrate.js';
import { decideBatch } from '../src/db/decisions.js';
import { decisionPolicy } from '../src/core/policy/decide.js';
import { defaultPolicy } from '../src/core/policy/default.js';
import { processOnCpuUs } from './lib/proc.js';
import { adminQuery, benchRequest, databaseUrl } from './lib/sql-harness.js';

// SQL_PROFILE_BATCH: decisions per statement (the end-to-end ws scenarios send about half of 256 per statement).
const BATCH = Number(process.env.SQL_PROFILE_BATCH ?? 256);
const BATCHES = Number(process.env.SQL_PROFILE_BATCHES ?? 100);
const PREFILL = Number(process.env.SQL_PROFILE_PREFILL ?? 20_000);
const LONE = Number(process.env.SQL_PROFILE_LONE ?? 1_000);
const HOUR_MS = 3_600_000;
const POLICY = defaultPolicy({ phoneMax: 1_000, phoneWindowMs: HOUR_MS, ipMax: 20, ipWindowMs: HOUR_MS });
const STRICT = defaultPolicy({ phoneMax: 2, phoneWindowMs: HOUR_MS, ipMax: 20, ipWindowMs: HOUR_MS });

let seed = 7;
const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;

async function profile(pool: Pool, label: string, decisions: number, run: () => Promise<void>, times: number): Promise<void> {
  const pid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  // SQL_PROFILE_PID_FILE: the backend's pid is written there before each case (for `perf record -p`).
  if (process.env.SQL_PROFILE_PID_FILE) {
    writeFileSync(process.env.SQL_PROFILE_PID_FILE, `${label}\t${pid}\n`, { flag: 'a' });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  // Row writes per table, and how many updates were HOT (no index entries written): the
  // statistics are read from a snapshot per transaction, so each read is its own statement.
  const tableStats = async () =>
    (
      await pool.query<{ t: string; ins: string; upd: string; hot: string }>(
        `SELECT relname AS t, n_tup_ins::text AS ins, n_tup_upd::text AS upd, n_tup_hot_upd::text AS hot
           FROM pg_stat_user_tables WHERE relname IN ('phone_rate_limits', 'rate_limit_counters', 'rate_limit_active') ORDER BY relname`,
      )
    ).rows;
  await pool.query('SELECT pg_stat_force_next_flush()').catch(() => undefined);
  const stats0 = await tableStats();
  await pool.query('SELECT pg_stat_statements_reset()');
  const cpu0 = processOnCpuUs(pid);
  for (let i = 0; i < times; i++) await run();
  const cpuUs = processOnCpuUs(pid) - cpu0;
  const { rows } = await pool.query<{ query: string; calls: string; ms: number; plan_ms: number; top: boolean }>(
    `SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls::text, total_exec_time AS ms, total_plan_time AS plan_ms, toplevel AS top
       FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_backend_pid%' ORDER BY total_exec_time DESC LIMIT 14`,
  );
  // What the backend spent outside the top-level statements' executor (the protocol: parse,
  // bind with its text arrays, the reply; transaction start and commit): /proc minus their time.
  const topUs = rows.filter((r) => r.top).reduce((a, r) => a + (r.ms + r.plan_ms) * 1000, 0);
  console.log(
    `\n${label}: ${decisions} decisions, backend CPU ${(cpuUs / decisions).toFixed(1)} µs per decision, ` +
      `of which outside the top-level statements ${((cpuUs - topUs) / decisions).toFixed(1)}`,
  );
  await new Promise((resolve) => setTimeout(resolve, 600)); // the statistics are flushed at most once a second
  await pool.query('SELECT pg_stat_force_next_flush()').catch(() => undefined);
  const stats1 = await tableStats();
  for (const after of stats1) {
    const before = stats0.find((b) => b.t === after.t);
    const d = (k: 'ins' | 'upd' | 'hot') => Number(after[k]) - Number(before?.[k] ?? 0);
    console.log(`  ${after.t}: ${d('ins')} inserted, ${d('upd')} updated (${d('hot')} HOT)`);
  }
  console.log('  µs/decision  calls  statement');
  for (const r of rows) {
    console.log(`  ${((r.ms * 1000) / decisions).toFixed(2).padStart(10)} ${r.calls.padStart(6)}  ${r.top ? '' : '  '}${r.query.slice(0, 150)}`);
  }
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratelimit-sql-profile-'));
const server = await startEmbeddedPostgres({
  dataDir: path.join(dir, 'pg'),
  database: 'postgres',
  fsync: false,
  extraConfig: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'all' },
});
try {
  await adminQuery(server.url, 'CREATE DATABASE profile');
  const pool = createPool({ url: databaseUrl(server.url, 'profile'), max: 1 });
  await migrate(pool);
  await pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  // SQL_PROFILE_SOURCE=file.sql: another source of a function (constants filled as migrate() does), to compare shapes.
  if (process.env.SQL_PROFILE_SOURCE) {
    const raw = readFileSync(process.env.SQL_PROFILE_SOURCE, 'utf8');
    await pool.query(raw.replace(/\{\{(\w+)\}\}/g, (_, key: string) => FUNCTION_CONSTANTS[key]!));
  }
  // SQL_PROFILE_NO_ACTIVE=1: the active-number set's triggers off, to see what they cost.
  if (process.env.SQL_PROFILE_NO_ACTIVE) {
    await pool.query('ALTER TABLE phone_rate_limits DISABLE TRIGGER phone_rate_limits_mark_active, DISABLE TRIGGER phone_rate_limits_mark_active_insert');
  }
  const dp = decisionPolicy(POLICY);
  const fillPid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  const fillCpu0 = processOnCpuUs(fillPid);
  for (let i = 0; i < PREFILL; i += BATCH) {
    await decideBatch(
      pool,
      Array.from({ length: Math.min(BATCH, PREFILL - i) }, (_, j) => benchRequest(POLICY, i + j)),
      dp,
    );
  }
  console.log(
    `fill: ${PREFILL} new numbers in batches of ${BATCH}, backend CPU ${((processOnCpuUs(fillPid) - fillCpu0) / PREFILL).toFixed(1)} µs per decision`,
  );
  await pool.query('VACUUM ANALYZE');
  await profile(
    pool,
    `default, batches of ${BATCH}`,
    BATCHES * BATCH,
    () =>
      decideBatch(
        pool,
        Array.from({ length: BATCH }, () => benchRequest(POLICY, rand(PREFILL))),
        dp,
      ).then(() => undefined),
    BATCHES,
  );
  // As the end-to-end `ws uniform` scenario on a fresh table: uniform over 100k numbers the table
  // mostly lacks, so most rows (and many range counters) are new.
  await profile(
    pool,
    `uniform over 100k mostly new numbers, batches of ${BATCH}`,
    BATCHES * BATCH,
    () =>
      decideBatch(
        pool,
        Array.from({ length: BATCH }, () => benchRequest(POLICY, PREFILL + rand(100_000))),
        dp,
      ).then(() => undefined),
    BATCHES,
  );
  const strict = decisionPolicy(STRICT);
  await profile(
    pool,
    `single (one number), batches of ${BATCH}`,
    BATCHES * BATCH,
    () =>
      decideBatch(
        pool,
        Array.from({ length: BATCH }, () => benchRequest(STRICT, 0)),
        strict,
      ).then(() => undefined),
    BATCHES,
  );
  if (process.env.SQL_PROFILE_EXPLAIN) {
    // Each statement's plan with its actual times (auto_explain, as notices), for one default batch.
    const client = new pg.Client({ connectionString: databaseUrl(server.url, 'profile') });
    await client.connect();
    client.on('notice', (n) => console.log(n.message));
    await client.query(`LOAD 'auto_explain'`);
    await client.query(
      `SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice`,
    );
    const size = Number(process.env.SQL_PROFILE_EXPLAIN);
    await decideBatch(
      client as unknown as Pool,
      Array.from({ length: size }, () => benchRequest(POLICY, rand(PREFILL))),
      dp,
    );
    await client.end();
  }
  await profile(pool, 'lone decisions', LONE, () => decideBatch(pool, [benchRequest(POLICY, rand(PREFILL))], dp).then(() => undefined), LONE);
  await pool.end();
} finally {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
