// One-off timing (not part of `npm run bench`): the cost of a one-decision ratelimit_decide_v3
// statement, the shape every decision takes at low rates, under three ways of planning its
// statements, interleaved in rounds on one embedded server so the machine's noise hits all alike:
//   generic - today's src/db/functions/decide_v3.sql (`SET enable_seqscan = off` and
//             `SET plan_cache_mode = force_generic_plan`: each statement planned once per
//             connection, never a sequential scan of phone_rate_limits)
//   auto    - without the plan_cache_mode line (statements parameterized by plpgsql variables
//             get custom plans, re-planned on every call, until the plan cache settles)
//   custom  - `SET plan_cache_mode = force_custom_plan` (replans every call)
// each with a number-only policy (two number rules) and with the default policy (a sweep counter
// per request: src/core/policy/default.ts). Reported: median wall µs per statement and the
// backend's CPU µs per statement (from /proc).
// Against an older function, run this file in a checkout of that ref, alternating with this one.
//
//   npm run build && node dist/bench/sql-single.js      (SQL_SINGLE_CALLS=2000 by default)
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '../src/db/embedded/index.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { loadFunctions, migrate } from '../src/db/migrate.js';
import { decideBatch } from '../src/db/decisions.js';
import { decisionPolicy } from '../src/core/policy/decide.js';
import { applicableCounters, CONVERSION_IDLE } from '../src/core/policy/counters.js';
import { processOnCpuUs } from './lib/proc.js';
import { defaultPolicy } from '../src/core/policy/default.js';
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
const defaults = defaultPolicy({ phoneMax: 1_000, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 3_600_000 });
const dpDefault = decisionPolicy(defaults);
/** Number i under the default policy: its range's sweep counter (ranges of 1,000 numbers, 7 numbers each). */
const defaultRequest = (i: number) => {
  const e164 = `+1415${String(200 + Math.floor(i / 7)).padStart(6, '0')}${i % 7}`;
  return {
    hash: `d${i}`,
    region: 'US',
    masked: '+1415•••',
    allowlisted: false,
    counters: applicableCounters(defaults, e164, 'US', { conversion: CONVERSION_IDLE }),
  };
};

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratelimit-sql-single-'));
const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), database: 'postgres', fsync: false });
try {
  const pool: Pool = createPool({ url: server.url, max: 1 });
  await migrate(pool);
  for (let i = 0; i < PREFILL; i += 256) {
    await decideBatch(
      pool,
      Array.from({ length: 256 }, (_, j) => request(i + j)),
      dp,
    );
    await decideBatch(
      pool,
      Array.from({ length: 256 }, (_, j) => defaultRequest(i + j)),
      dpDefault,
    );
  }
  await pool.query('VACUUM ANALYZE phone_rate_limits');
  // SQL_SINGLE_FUNCTION: the function decideBatch calls, when this file runs in an older checkout
  // (a function without the plan_cache_mode line is measured as it is).
  const fn = process.env.SQL_SINGLE_FUNCTION ?? 'ratelimit_decide_v3';
  const decide = (await loadFunctions()).find((f) => f.name === fn)!.sql;
  const generic = 'SET plan_cache_mode = force_generic_plan';
  const variants: Record<string, string> = decide.includes(generic)
    ? { generic: decide, auto: decide.replace(generic, ''), custom: decide.replace(generic, 'SET plan_cache_mode = force_custom_plan') }
    : { [fn]: decide };
  const policies = [
    { name: 'number', dp, request },
    { name: 'default', dp: dpDefault, request: defaultRequest },
  ];
  const pid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  const results = new Map<string, { us: number[]; cpuUs: number }>();
  let n = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const [variant, sql] of Object.entries(variants)) {
      await pool.query(sql);
      for (const p of policies) {
        const name = `${variant} ${p.name}`;
        const r = results.get(name) ?? { us: [], cpuUs: 0 };
        const cpu0 = processOnCpuUs(pid);
        for (let c = 0; c < CALLS / ROUNDS; c++) {
          const t0 = process.hrtime.bigint();
          await decideBatch(pool, [p.request(n++ % PREFILL)], p.dp);
          r.us.push(Number(process.hrtime.bigint() - t0) / 1e3);
        }
        r.cpuUs += processOnCpuUs(pid) - cpu0;
        results.set(name, r);
      }
    }
  }
  console.log(`one-decision statements, ${CALLS} per variant, table of ${PREFILL} numbers`);
  console.log('variant          median µs   server CPU µs/statement');
  for (const [name, r] of results) {
    const sorted = [...r.us].sort((a, b) => a - b);
    console.log(`${name.padEnd(15)}  ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0).padStart(9)}   ${(r.cpuUs / r.us.length).toFixed(0).padStart(10)}`);
  }
  await pool.end();
} finally {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
