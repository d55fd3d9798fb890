// Longer than 350 lines because every case (policies, limits, the baseline's function) shares
// one harness, run in interleaved rounds.
// One-off timing of the policy engine's SQL (not part of `npm run bench`): 256-decision batches
// through ratelimit_decide_v3 with the full policy, a number-only policy, the default policy
// (a sweep counter per request, numbers spread 7 per 1,000-number range as bench/lib/keys.ts
// spreads them) and the default policy with every request for one number (mostly denials;
// SQL_BENCH_CASES=default,single picks cases), one batch at a time on one connection, so the
// figure is the SQL's own cost plus one loopback round trip. Each case runs on a fresh table and
// on one pre-filled with 100k numbers (the counters then hold a realistic number of buckets).
// Also reports how many of a 100k-new-number fill's row updates were HOT (issue #12).
//
// On a shared machine wall time swings with the neighbours' load, so every case is run in
// rounds, interleaved with the others, and the server process's own CPU time per batch (from
// /proc, when the server runs on this machine) is reported next to the wall times.
// SQL_BENCH_BASELINE=<git ref> adds the ratelimit_decide_v3 of src/db/functions/decide_v3.sql at that
// ref as cases of its own (`full@ref`, …), for before/after figures from one run (the ref's
// function must take the same arguments as today's: it is called through decideQuery). Against
// an older function, run this file in a checkout of that ref, alternating with this one.
//
// Then, per number limit (2, 100, 1000; issue #12: the reply used to carry every number's whole
// log), 256-decision batches over 256 numbers whose logs are already long (half at the limit,
// half at half of it): ms per batch and bytes of reply per batch, today's function against the
// baseline's when SQL_BENCH_BASELINE is set. SQL_BENCH_ONLY=limits runs only these;
// SQL_BENCH_ONLY=policy only the policy cases; SQL_BENCH_LIMITS=2,100 picks the limits.
//
//   npm run build && node dist/bench/sql-decide.js      (SQL_BENCH_BATCHES=100 by default)
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/db/embedded/index.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { FUNCTION_CONSTANTS, migrate } from '../src/db/migrate.js';
import { decideBatch, decideQuery, type DecideRequest } from '../src/db/decisions.js';
import { applicableCounters } from '../src/core/policy/counters.js';
import { decisionPolicy } from '../src/core/policy/decide.js';
import { defaultPolicy } from '../src/core/policy/default.js';
import type { GroupName, LimitRule, Policy } from '../src/core/policy/types.js';
import { adminQuery, benchRequest, databaseUrl } from './lib/sql-harness.js';

const BATCH = 256;
const BATCHES = Number(process.env.SQL_BENCH_BATCHES ?? 100);
const WARMUP_BATCHES = Number(process.env.SQL_BENCH_WARMUP ?? 10);
const ROUNDS = 4;
const BASELINE = process.env.SQL_BENCH_BASELINE;
const PREFILL = Number(process.env.SQL_BENCH_PREFILL ?? 100_000);
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

function rule(group: GroupName, limit: number, windowMs: number, window: string, shadow = false, region?: string): LimitRule {
  return { id: `${group}:${region ? `${region}:` : ''}${window}`, group, limit, windowMs, window, shadow };
}

const NUMBER_RULES = [rule('number', 5, HOUR_MS, '1h'), rule('number', 20, DAY_MS, '1d')];
const FULL: Policy = {
  number: NUMBER_RULES,
  blockAfter: { denials: 3, withinMs: HOUR_MS, forMs: HOUR_MS },
  prefix: { digits: 4, rules: [rule('prefix', 2_000, HOUR_MS, '1h')] },
  country: { rules: [rule('country', 500_000, HOUR_MS, '1h')], overrides: new Map([['GB', [rule('country', 50_000, HOUR_MS, '1h', false, 'GB')]]]) },
  global: [rule('global', 1_000_000, DAY_MS, '1d'), rule('global', 100_000, HOUR_MS, '1h', true)],
  ip: [],
  destinations: { countries: undefined, blockTypes: [] },
  conversion: undefined,
  sweep: undefined,
  blocks: undefined,
  safe: { prefixes: [] },
};
const NUMBER_ONLY: Policy = { ...FULL, blockAfter: undefined, prefix: undefined, country: undefined, global: [] };
/**
 * The policy a daemon runs without a policy file (src/core/policy/default.ts): one number rule,
 * the sweep counter of the number's 1,000-number range on every request, escalating blocks. Its
 * number limit is raised so that, as in the end-to-end `ws uniform` scenario, decisions over the
 * bench's numbers (7 per range, bench/lib/keys.ts, under the sweep rule's 10) stay allowed.
 */
const DEFAULT: Policy = defaultPolicy({ phoneMax: 1_000, phoneWindowMs: HOUR_MS, ipMax: 20, ipWindowMs: HOUR_MS });
/** The default policy with its own number limit (2 an hour): the `single` case's denials. */
const DEFAULT_STRICT: Policy = defaultPolicy({ phoneMax: 2, phoneWindowMs: HOUR_MS, ipMax: 20, ipWindowMs: HOUR_MS });

/** Number i: 100 US area codes (so 100 prefix keys of ~1,000 numbers each), every tenth in GB. */
function subject(i: number): { e164: string; region: string } {
  if (i % 10 === 9) return { e164: `+4420794${String(i).padStart(6, '0')}`, region: 'GB' };
  return { e164: `+1${200 + (i % 100)}555${String(Math.floor(i / 100) % 10_000).padStart(4, '0')}`, region: 'US' };
}

function request(p: Policy, i: number): DecideRequest {
  if (p === DEFAULT || p === DEFAULT_STRICT) {
    return benchRequest(p, i, 'd');
  }
  const { e164, region } = subject(i);
  // The hash only has to be unique per number; the bench never sees a key file.
  return { hash: `h${i}:${e164}`, region, masked: e164.slice(0, 5) + '•••', allowlisted: false, counters: applicableCounters(p, e164, region) };
}

/**
 * full / number-only: the policies above over subject(); default: the default policy over the
 * bench's numbers (a sweep counter per request, ~all allowed); single: every request of the
 * batch for one number under the default policy (the end-to-end `ws single` pattern, ~all denied).
 */
type Case = 'full' | 'number-only' | 'default' | 'single';
const CASES = (process.env.SQL_BENCH_CASES ?? 'full,number-only,default,single').split(',') as Case[];

function casePolicy(c: Case): Policy {
  return c === 'full' ? FULL : c === 'number-only' ? NUMBER_ONLY : c === 'default' ? DEFAULT : DEFAULT_STRICT;
}

function caseRequests(c: Case, ids: number[]): DecideRequest[] {
  const p = casePolicy(c);
  return c === 'single' ? ids.map(() => request(p, 0)) : ids.map((i) => request(p, i));
}

/** ratelimit_decide_v3 as src/db/functions/decide_v3.sql defined it at `ref` (its constants filled in). */
function baselineDecide(ref: string): string {
  const raw = execFileSync('git', ['show', `${ref}:src/db/functions/decide_v3.sql`], { encoding: 'utf8' });
  const sql = raw.replace(/\{\{(\w+)\}\}/g, (_, key: string) => FUNCTION_CONSTANTS[key] ?? `{{${key}}}`);
  const start = sql.indexOf('CREATE OR REPLACE FUNCTION ratelimit_decide_v3(');
  const end = sql.indexOf('$fn$;', sql.indexOf('$fn$', start) + 4);
  if (start < 0 || end < 0) throw new Error(`no ratelimit_decide_v3 in src/db/functions/decide_v3.sql at ${ref}`);
  return sql.slice(start, end + 5);
}

/** A batch through the baseline's ratelimit_decide_v3 (same arguments; its result is not read). */
async function runBaselineBatch(pool: Pool, c: Case, ids: number[]): Promise<void> {
  await pool.query({ ...decideQuery(caseRequests(c, ids), decisionPolicy(casePolicy(c))), name: 'baseline_decide' });
}

/** Installs the baseline's ratelimit_decide_v3 in place of today's (their result columns may differ, so drop first). */
async function installBaseline(pool: Pool, sql: string): Promise<void> {
  await pool.query('DROP FUNCTION IF EXISTS ratelimit_decide_v3');
  await pool.query(sql);
}

async function runBatch(pool: Pool, c: Case, ids: number[], baseline = false): Promise<void> {
  if (baseline) {
    await runBaselineBatch(pool, c, ids);
  } else {
    await decideBatch(pool, caseRequests(c, ids), decisionPolicy(casePolicy(c)));
  }
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

let seed = 42;
const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;

/** The server's CPU ms for this connection's backend, or NaN when /proc does not show it. */
async function backendCpuMs(pool: Pool): Promise<() => number> {
  const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const file = `/proc/${rows[0]!.pid}/stat`;
  const tick = 10; // USER_HZ is 100 on Linux
  return () => {
    try {
      const fields = readFileSync(file, 'utf8').split(') ')[1]!.split(' ');
      return (Number(fields[11]) + Number(fields[12])) * tick;
    } catch {
      return NaN;
    }
  };
}

interface Samples {
  ms: number[];
  cpuMs: number;
  batches: number;
}

/** Runs `batches` batches on `pool` (one connection, kept across rounds as a daemon keeps its own). */
async function measureRound(pool: Pool, c: Case, baseline: boolean, batches: number, ids: () => number[], out: Samples): Promise<void> {
  const cpu = await backendCpuMs(pool);
  const cpu0 = cpu();
  for (let b = 0; b < batches; b++) {
    const batch = ids();
    const t0 = process.hrtime.bigint();
    await runBatch(pool, c, batch, baseline);
    out.ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  out.cpuMs += cpu() - cpu0;
  out.batches += batches;
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'ratelimit-sql-bench-'));
const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), database: 'postgres', fsync: false });

async function policyCases(): Promise<void> {
  // The template: migrated, then filled with PREFILL new numbers through the full policy.
  await adminQuery(server.url, 'CREATE DATABASE bench_template');
  const tplUrl = databaseUrl(server.url, 'bench_template');
  const tpl = createPool({ url: tplUrl, max: 1 });
  await migrate(tpl);
  await tpl.query('SELECT pg_stat_reset()');
  const fillStart = Date.now();
  for (let i = 0; i < PREFILL; i += BATCH) {
    const ids = Array.from({ length: Math.min(BATCH, PREFILL - i) }, (_, j) => i + j);
    await runBatch(tpl, 'full', ids);
    if (CASES.includes('default')) await runBatch(tpl, 'default', ids);
  }
  const fillMs = Date.now() - fillStart;
  await tpl.query('SELECT pg_stat_force_next_flush()');
  const { rows } = await tpl.query<{ upd: string; hot: string; dead: string }>(
    `SELECT n_tup_upd AS upd, n_tup_hot_upd AS hot, n_dead_tup AS dead FROM pg_stat_user_tables WHERE relname = 'phone_rate_limits'`,
  );
  await tpl.end();
  const s = rows[0]!;
  const hotPct = Number(s.upd) > 0 ? (100 * Number(s.hot)) / Number(s.upd) : 0;
  console.log(
    `fill of ${PREFILL} new numbers (full policy): ${fillMs} ms; phone_rate_limits updates ${s.upd}, HOT ${s.hot} (${hotPct.toFixed(1)}%), dead tuples ${s.dead}`,
  );
  await adminQuery(server.url, 'VACUUM ANALYZE'); // connected to postgres; the template gets its own below
  await adminQuery(tplUrl, 'VACUUM ANALYZE');

  console.log(`\n${BATCHES} batches of ${BATCH} decisions in ${ROUNDS} interleaved rounds, ms per batch (one connection, loopback):`);
  console.log('case                    table          median    p95  server CPU ms/batch, µs/decision');
  const cases: { label: string; c: Case; sql?: string }[] = CASES.map((c) => ({ label: c, c }));
  if (BASELINE) {
    const sql = baselineDecide(BASELINE);
    cases.push(...CASES.map((c) => ({ label: `${c}@${BASELINE}`, c, sql })));
  }
  for (const prefilled of [false, true]) {
    const dbs = cases.map((_, i) => `bench_${prefilled ? 'filled' : 'fresh'}_${i}`);
    for (const [i, name] of dbs.entries()) {
      await adminQuery(server.url, prefilled ? `CREATE DATABASE ${name} TEMPLATE bench_template` : `CREATE DATABASE ${name}`);
      const p = createPool({ url: databaseUrl(server.url, name), max: 1 });
      if (!prefilled) await migrate(p);
      if (cases[i]!.sql) await installBaseline(p, cases[i]!.sql!);
      await p.end();
    }
    const samples = cases.map((): Samples => ({ ms: [], cpuMs: 0, batches: 0 }));
    const pools = dbs.map((name) => createPool({ url: databaseUrl(server.url, name), max: 1 }));
    let next = PREFILL * 2; // fresh numbers, never in the template
    const ids = () => Array.from({ length: BATCH }, () => (prefilled ? rand(PREFILL) : next++));
    for (const [i, pool] of pools.entries()) for (let b = 0; b < WARMUP_BATCHES; b++) await runBatch(pool, cases[i]!.c, ids(), cases[i]!.sql !== undefined);
    const perRound = Math.ceil(BATCHES / ROUNDS);
    for (let round = 0; round < ROUNDS; round++) {
      for (let j = 0; j < cases.length; j++) {
        const i = (j + round) % cases.length; // rotate who goes first
        await measureRound(pools[i]!, cases[i]!.c, cases[i]!.sql !== undefined, perRound, ids, samples[i]!);
      }
    }
    await Promise.all(pools.map((p) => p.end()));
    for (const [i, s] of samples.entries()) {
      const ms = [...s.ms].sort((a, b) => a - b);
      const cpu = s.cpuMs / s.batches;
      console.log(
        `${cases[i]!.label.padEnd(23)} ${(prefilled ? `${PREFILL / 1000}k numbers` : 'fresh').padEnd(13)} ${quantile(ms, 0.5).toFixed(1).padStart(7)} ${quantile(ms, 0.95).toFixed(1).padStart(6)} ${Number.isNaN(cpu) ? '     n/a' : cpu.toFixed(1).padStart(8)} ${Number.isNaN(cpu) ? '' : ((cpu * 1000) / BATCH).toFixed(1).padStart(8)}`,
      );
    }
    for (const name of dbs) await adminQuery(server.url, `DROP DATABASE ${name}`);
  }
}

const LIMITS = (process.env.SQL_BENCH_LIMITS ?? '2,100,1000').split(',').map(Number);
const LIMIT_NUMBERS = 256;

/** A number-only policy of one rule (`limit` a day) plus a global counter, as a daemon would run. */
function limitPolicy(limit: number): Policy {
  return { ...NUMBER_ONLY, number: [rule('number', limit, DAY_MS, '1d')], global: [rule('global', 10_000_000, DAY_MS, '1d')] };
}

/** Numbers 0..LIMIT_NUMBERS-1 with logs inside the day: even ones at the limit, odd ones at half of it. */
async function fillLogs(pool: Pool, limit: number): Promise<void> {
  const now = Date.now();
  const p = limitPolicy(limit);
  const reqs = Array.from({ length: LIMIT_NUMBERS }, (_, i) => request(p, i));
  await pool.query(
    `INSERT INTO phone_rate_limits (phone_hash, region, phone_masked, calls, call_count, window_start, last_call_at)
     SELECT h, r, m, c, cardinality(c), c[1], c[cardinality(c)]
       FROM (SELECT h, r, m, (SELECT array_agg($5::bigint - ($4::bigint * (n - g)) / n ORDER BY g) FROM generate_series(1, n) AS g) AS c
               FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(h, r, m, i),
                    LATERAL (SELECT CASE WHEN i % 2 = 1 THEN $6::int ELSE GREATEST(1, $6::int / 2) END AS n) AS k) AS x`,
    [reqs.map((r) => r.hash), reqs.map((r) => r.region), reqs.map((r) => r.masked), DAY_MS - 60_000, now - 1_000, limit],
  );
}

/** Per limit: ms and reply bytes per batch, today's function and (SQL_BENCH_BASELINE) the baseline's, interleaved. */
async function limitCases(): Promise<void> {
  const baseline = BASELINE ? baselineDecide(BASELINE) : undefined;
  console.log(
    `\n${BATCHES} batches of ${LIMIT_NUMBERS} decisions over ${LIMIT_NUMBERS} numbers with long logs, one rule of N a day (one connection, loopback):`,
  );
  console.log('limit  function            median ms  p95 ms  reply bytes/batch  allowed');
  for (const limit of LIMITS) {
    const p = limitPolicy(limit);
    const dp = decisionPolicy(p);
    const variants = [{ label: 'today' }, ...(baseline ? [{ label: `@${BASELINE}`, sql: baseline }] : [])];
    const clients: pg.Client[] = [];
    for (const [i, v] of variants.entries()) {
      const name = `bench_limit_${limit}_${i}`;
      await adminQuery(server.url, `CREATE DATABASE ${name}`);
      const pool = createPool({ url: databaseUrl(server.url, name), max: 1 });
      await migrate(pool);
      if ('sql' in v && v.sql) await installBaseline(pool, v.sql);
      await fillLogs(pool, limit);
      await pool.end();
      const client = new pg.Client({ connectionString: databaseUrl(server.url, name) });
      await client.connect();
      clients.push(client);
    }
    const stats = variants.map(() => ({ ms: [] as number[], bytes: 0, allowed: 0, decisions: 0 }));
    const reqs = Array.from({ length: LIMIT_NUMBERS }, (_, i) => request(p, i));
    for (let b = -WARMUP_BATCHES; b < BATCHES; b++) {
      // Same batches in the same order on each database: their states stay alike.
      for (let j = 0; j < clients.length; j++) {
        const i = (j + b + WARMUP_BATCHES) % clients.length;
        const stream = (clients[i] as unknown as { connection: { stream: { bytesRead: number } } }).connection.stream;
        const bytes0 = stream.bytesRead;
        const t0 = process.hrtime.bigint();
        const res = await clients[i]!.query<{ r_allowed: boolean[] }>({ ...decideQuery(reqs, dp), name: 'limit_decide' });
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (b < 0) continue;
        stats[i]!.ms.push(ms);
        stats[i]!.bytes += stream.bytesRead - bytes0;
        const allowed = res.rows[0]!.r_allowed;
        stats[i]!.allowed += allowed.filter((a) => a).length;
        stats[i]!.decisions += allowed.length;
      }
    }
    for (const [i, st] of stats.entries()) {
      const ms = [...st.ms].sort((a, b) => a - b);
      console.log(
        `${String(limit).padStart(5)}  ${variants[i]!.label.padEnd(18)} ${quantile(ms, 0.5).toFixed(1).padStart(9)} ${quantile(ms, 0.95).toFixed(1).padStart(7)} ${Math.round(
          st.bytes / st.ms.length,
        )
          .toString()
          .padStart(18)}  ${((100 * st.allowed) / st.decisions).toFixed(0).padStart(6)}%`,
      );
    }
    await Promise.all(clients.map((c) => c.end()));
    for (let i = 0; i < variants.length; i++) await adminQuery(server.url, `DROP DATABASE bench_limit_${limit}_${i}`);
  }
}

try {
  if (process.env.SQL_BENCH_ONLY !== 'limits') await policyCases();
  if (process.env.SQL_BENCH_ONLY !== 'policy') await limitCases();
} finally {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
