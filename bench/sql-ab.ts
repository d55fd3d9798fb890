// One-off A/B of two sources of ratelimit_decide_v3 (not part of `npm run bench`), interleaved
// batch by batch on one connection and one database, so the other engineers' load on a shared
// machine and the table's growth weigh on both sides alike (run-to-run noise on this machine is
// larger than most of the changes worth measuring). The backend's time on a CPU is read from
// /proc/<pid>/schedstat (in ns) around each batch and summed per side.
// Side A is SQL_AB_BEFORE (a file, constants filled as migrate() does), installed in its own
// schema that search_path puts first; side B is the current source, as migrate() installs it.
// Cases: `default` (256-decision batches under the default policy over a prefilled table of
// SQL_AB_PREFILL numbers) and `uniform` (the same over 100k numbers the table mostly lacks,
// as the end-to-end `ws uniform` scenario).
//
//   npm run build && SQL_AB_BEFORE=/tmp/decide_v3.old.sql node dist/bench/sql-ab.js
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/db/embedded/index.js';
import { createPool } from '../src/db/pool.js';
import { FUNCTION_CONSTANTS, migrate } from '../src/db/migrate.js';
import { decideBatch } from '../src/db/decisions.js';
import { decisionPolicy } from '../src/core/policy/decide.js';
import { defaultPolicy } from '../src/core/policy/default.js';
import { processOnCpuUs } from './lib/proc.js';
import { benchRequest } from './lib/sql-harness.js';

// SQL_AB_BATCH: decisions per statement (the end-to-end ws scenarios send about half of 256 per statement).
const BATCH = Number(process.env.SQL_AB_BATCH ?? 256);
const ROUNDS = Number(process.env.SQL_AB_ROUNDS ?? 150);
const PREFILL = Number(process.env.SQL_AB_PREFILL ?? 20_000);
const HOUR_MS = 3_600_000;
const POLICY = defaultPolicy({ phoneMax: 1_000, phoneWindowMs: HOUR_MS, ipMax: 20, ipWindowMs: HOUR_MS });
const before = process.env.SQL_AB_BEFORE;
// SQL_AB_B_SET=name=value: a setting side B runs under (side A keeps the server's), e.g.
// synchronous_commit=off with SQL_AB_FSYNC=1 and SQL_AB_BEFORE naming the current source: what
// the commit's WAL flush costs the backend.
const B_SETTING = process.env.SQL_AB_B_SET ? (/^(\w+)=(\w+)$/.exec(process.env.SQL_AB_B_SET)?.slice(1) as [string, string] | undefined) : undefined;
if (process.env.SQL_AB_B_SET && !B_SETTING) {
  console.error('SQL_AB_B_SET must be name=value');
  process.exit(2);
}
if (!before) {
  console.error('SQL_AB_BEFORE=<file> names the source to compare the current one with');
  process.exit(2);
}

let seed = 11;
const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratelimit-sql-ab-'));
// SQL_AB_FSYNC=1: commits flushed to disk, as the end-to-end bench runs its server.
const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), database: 'postgres', fsync: process.env.SQL_AB_FSYNC === '1' });
try {
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query('CREATE DATABASE ab');
  await admin.end();
  const u = new URL(server.url);
  u.pathname = '/ab';
  const pool = createPool({ url: u.toString(), max: 1 });
  await migrate(pool);
  const raw = readFileSync(before, 'utf8').replace(/\{\{(\w+)\}\}/g, (_, key: string) => FUNCTION_CONSTANTS[key]!);
  await pool.query('CREATE SCHEMA ab_before');
  await pool.query(`SET search_path = ab_before, public`);
  // Its tables resolve to public's (ab_before holds only the function).
  await pool.query(raw.replace(/CREATE OR REPLACE FUNCTION ratelimit_decide_v3\(/, 'CREATE OR REPLACE FUNCTION ab_before.ratelimit_decide_v3('));
  const dp = decisionPolicy(POLICY);
  for (let i = 0; i < PREFILL; i += BATCH) {
    await decideBatch(
      pool,
      Array.from({ length: Math.min(BATCH, PREFILL - i) }, (_, j) => benchRequest(POLICY, i + j)),
      dp,
    );
  }
  await pool.query('VACUUM ANALYZE');
  const pid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  const cases: [string, () => number][] = [
    ['default', () => rand(PREFILL)],
    ['uniform', () => PREFILL + rand(100_000)],
  ];
  for (const [name, pick] of cases) {
    const total = { A: 0, B: 0 };
    const perRound: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const cost = { A: 0, B: 0 };
      // Alternate which side goes first, so neither always meets the other's freshly dirtied pages.
      for (const side of round % 2 === 0 ? (['A', 'B'] as const) : (['B', 'A'] as const)) {
        await pool.query(side === 'A' ? 'SET search_path = ab_before, public' : 'SET search_path = public');
        if (B_SETTING) await pool.query(side === 'A' ? `RESET ${B_SETTING[0]}` : `SET ${B_SETTING[0]} = ${B_SETTING[1]}`);
        const requests = Array.from({ length: BATCH }, () => benchRequest(POLICY, pick()));
        const cpu0 = processOnCpuUs(pid);
        await decideBatch(pool, requests, dp);
        cost[side] = processOnCpuUs(pid) - cpu0;
      }
      total.A += cost.A;
      total.B += cost.B;
      perRound.push(cost.B - cost.A);
    }
    const decisions = ROUNDS * BATCH;
    console.log(
      `${name}: A (${path.basename(before)}) ${(total.A / decisions).toFixed(1)} µs per decision, B (current) ${(total.B / decisions).toFixed(1)}, ` +
        `B − A ${((total.B - total.A) / decisions).toFixed(2)} (median per round ${(median(perRound) / BATCH).toFixed(2)}), ${ROUNDS} rounds`,
    );
  }
  await pool.end();
} finally {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
