// One-off timing (not part of `npm run bench`): the cost of a one-decision ratelimit_decide
// statement, the shape every decision takes at low rates, under three ways of planning its
// statements, interleaved in rounds on one embedded server so the machine's noise hits all alike:
//   keyed  - today's src/db/functions/decide.sql (`SET enable_seqscan = off`: cached plans kept,
//            a sequential scan of phone_rate_limits never chosen)
//   plain  - the same body without that line (the plan cache may keep a sequential-scan plan)
//   custom - the same body with `SET plan_cache_mode = force_custom_plan` (replans every call)
// Reported: median wall µs per statement and the backend's CPU µs per statement (from /proc).
//
//   npm run build && node dist/bench/sql-single.js      (SQL_SINGLE_CALLS=2000 by default)
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '../src/db/embedded/index.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { loadFunctions, migrate } from '../src/db/migrate.js';
import { decideBatch } from '../src/db/decisions.js';
import { decisionPolicy } from '../src/core/policy/decide.js';
import type { LimitRule } from '../src/core/policy/types.js';

const CALLS = Number(process.env.SQL_SINGLE_CALLS ?? 2_000);
const PREFILL = Number(process.env.SQL_SINGLE_PREFILL ?? 20_000);
const ROUNDS = 4;
const rule = (limit: number, windowMs: number): LimitRule => ({
  id: `number:${windowMs}`,
  group: 'number',
  limit,
  windowMs,
  window: `${windowMs}ms`,
  shadow: false,
});
const dp = decisionPolicy({
  number: [rule(5, 3_600_000), rule(20, 86_400_000)],
  blockAfter: undefined,
});
const request = (i: number) => ({ hash: `h${i}`, region: 'US', masked: '+1415•••', allowlisted: false, counters: [] });

function backendCpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000; // USER_HZ is 100 on Linux
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratelimit-sql-single-'));
const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), database: 'postgres', fsync: false });
try {
  const pool: Pool = createPool({ url: server.url, max: 1 });
  await migrate(pool);
  for (let i = 0; i < PREFILL; i += 256)
    await decideBatch(
      pool,
      Array.from({ length: 256 }, (_, j) => request(i + j)),
      dp,
    );
  await pool.query('VACUUM ANALYZE phone_rate_limits');
  const decide = (await loadFunctions()).find((f) => f.name === 'ratelimit_decide')!.sql;
  const variants = {
    keyed: decide,
    plain: decide.replace('SET enable_seqscan = off', ''),
    custom: decide.replace('SET enable_seqscan = off', 'SET plan_cache_mode = force_custom_plan'),
  };
  const pid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  const results = new Map<string, { us: number[]; cpuUs: number }>();
  let n = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, sql] of Object.entries(variants)) {
      await pool.query(sql);
      const r = results.get(name) ?? { us: [], cpuUs: 0 };
      const cpu0 = backendCpuUs(pid);
      for (let c = 0; c < CALLS / ROUNDS; c++) {
        const t0 = process.hrtime.bigint();
        await decideBatch(pool, [request(n++ % PREFILL)], dp);
        r.us.push(Number(process.hrtime.bigint() - t0) / 1e3);
      }
      r.cpuUs += backendCpuUs(pid) - cpu0;
      results.set(name, r);
    }
  }
  console.log(`one-decision statements, ${CALLS} per variant, table of ${PREFILL} numbers`);
  console.log('variant   median µs   server CPU µs/statement');
  for (const [name, r] of results) {
    const sorted = [...r.us].sort((a, b) => a - b);
    console.log(`${name.padEnd(8)}  ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0).padStart(9)}   ${(r.cpuUs / r.us.length).toFixed(0).padStart(10)}`);
  }
  await pool.end();
} finally {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
