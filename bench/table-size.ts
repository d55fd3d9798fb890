// Issue #12 parts 2 and 4: how `stats --json`, `top --once` and `status` grow with the number of
// numbers ever seen (100k, 1M, 10M rows), through the real binary (node start-up included), and
// what the active-number set (migration 011) costs the decisions. Run by `npm run bench` (scenario
// names "size …"; BENCH_ONLY=size runs only these) or alone: `node dist/bench/table-size.js`.
//
// Each table is built once by generate_series in batches, time-bounded (BENCH_BUILD_SECONDS per
// size, default 1200), and kept in a cache dir under os.tmpdir() (BENCH_CACHE_DIR) with its own
// embedded PostgreSQL, so later runs reuse it (and a build cut short resumes). Shape: every size
// has the same 10k numbers active in the last hour (1k of them at their limit of 2/h, 500 with
// denials) and the rest last seen 2 to 30 days ago, so what grows is only history.
// Over 350 lines: building, timing, the decision comparison and the report share one set of
// constants (sizes, the active shape, the cache layout); split, they would drift apart.
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedPostgres, type EmbeddedServer } from '../src/db/embedded/index.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { decideBatch, type DecideRequest } from '../src/db/decisions.js';
import { decisionPolicy } from '../src/core/policy/decide.js';
import { defaultPolicy } from '../src/core/policy/default.js';
import { median } from './lib/stats.js';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const ROOT = path.resolve(HERE, '..', '..');
const BIN = path.join(ROOT, 'bin', 'ratelimit.js');

const envNumber = (name: string, fallback: number): number => {
  const raw = process.env[name];
  const n = raw === undefined || raw.trim() === '' ? fallback : Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return n;
};

export const SIZES = [100_000, 1_000_000, 10_000_000] as const;
const ACTIVE = 10_000;
const AT_LIMIT = 1_000;
const DENIED = 500;
const BATCH_ROWS = 500_000;
const BUILD_SECONDS = envNumber('BENCH_BUILD_SECONDS', 1200);
const CLI_RUNS = Math.round(envNumber('BENCH_CLI_RUNS', 5));
const LEGACY_RUNS = Math.round(envNumber('BENCH_LEGACY_RUNS', 2));
const DECIDE_SECONDS = envNumber('BENCH_DECIDE_SECONDS', 8);
const CACHE_DIR = process.env.BENCH_CACHE_DIR ?? path.join(os.tmpdir(), 'ratelimit-bench-cache');
// Bump when the shape of the built rows changes: the cache is then rebuilt.
const SHAPE_VERSION = 1;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
// Distinct history numbers per cold round: four rounds stay within the 1M table's 990k.
const COLD_PER_ROUND = 240_000;
const PHONE_KEY = 'bench-phone-key-0123456789abcdefghijklmnopqrstuvwxyz';

const label = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}M` : `${n / 1_000}k`);
export const sizeScenarioNames = (): string[] => [
  ...SIZES.flatMap((n) => [`size ${label(n)} stats`, `size ${label(n)} top`, `size ${label(n)} status`]),
  'size decide trigger',
];

interface Marker {
  shape: number;
  rowsBuilt: number;
  complete: boolean;
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

async function readMarker(file: string): Promise<Marker | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Marker;
  } catch {
    return undefined;
  }
}

/** Starts (or attaches to) the size's cached server and builds what is missing, within the time bound. */
async function openSize(rows: number, log: (s: string) => void): Promise<{ pg: EmbeddedServer; pool: Pool; complete: boolean; buildS: number }> {
  const dir = path.join(CACHE_DIR, `table-${label(rows)}`);
  const markerFile = path.join(dir, 'built.json');
  let marker = await readMarker(markerFile);
  if (marker && marker.shape !== SHAPE_VERSION) {
    await rm(dir, { recursive: true, force: true });
    marker = undefined;
  }
  await mkdir(dir, { recursive: true });
  // Reads are what is timed here, so the build may skip fsync's cost.
  const pg = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), database: 'ratelimit_size', fsync: false, extraConfig: { max_wal_size: '4GB' } });
  const pool = createPool({ url: pg.url, max: 4, applicationName: 'bench size' });
  await migrate(pool);
  let built = marker?.rowsBuilt ?? 0;
  const started = Date.now();
  if (!marker?.complete) {
    // History rows are beyond the active set's retention: the insert trigger would only add rows
    // that pruning removes.
    await pool.query('ALTER TABLE phone_rate_limits DISABLE TRIGGER phone_rate_limits_mark_active_insert');
    const historyRows = rows - ACTIVE;
    while (built < historyRows && Date.now() - started < BUILD_SECONDS * 1000) {
      const to = Math.min(historyRows, built + BATCH_ROWS);
      await pool.query(
        `INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked, calls, call_count, last_call_at, denied_total)
         SELECT encode(sha256(('history-' || g)::bytea), 'hex'), 0, (ARRAY['US','GB','DE','FR','IN'])[1 + g % 5],
                '+1415•••••' || lpad((g % 100)::text, 2, '0'), ARRAY[t - ${HOUR}, t]::bigint[], 0, t, 0
           FROM generate_series($1::bigint, $2::bigint) AS g,
                LATERAL (SELECT (extract(epoch FROM now()) * 1000)::bigint - ${2 * DAY} - (g * 7919) % ${28 * DAY} AS t) AS o
         ON CONFLICT DO NOTHING`,
        [built + 1, to],
      );
      built = to;
      await writeFile(markerFile, JSON.stringify({ shape: SHAPE_VERSION, rowsBuilt: built, complete: false } satisfies Marker));
      log(
        `    built ${built.toLocaleString('en-US')} of ${historyRows.toLocaleString('en-US')} history rows (${Math.round((Date.now() - started) / 1000)} s, load ${loadAverage()})`,
      );
    }
    await pool.query('ALTER TABLE phone_rate_limits ENABLE TRIGGER phone_rate_limits_mark_active_insert');
    if (built >= historyRows) {
      await pool.query('VACUUM ANALYZE phone_rate_limits');
      await pool.query('CHECKPOINT');
      await writeFile(markerFile, JSON.stringify({ shape: SHAPE_VERSION, rowsBuilt: built, complete: true } satisfies Marker));
      marker = { shape: SHAPE_VERSION, rowsBuilt: built, complete: true };
    }
  }
  await refreshActive(pool);
  return { pg, pool, complete: marker?.complete === true, buildS: (Date.now() - started) / 1000 };
}

/**
 * The same 10k numbers active in the last hour on every run (relative to now, so a cached table
 * stays current), written through the trigger like the daemons' decisions.
 */
async function refreshActive(pool: Pool): Promise<void> {
  await pool.query(
    `INSERT INTO phone_rate_limits AS p (phone_hash, window_start, region, phone_masked, calls, call_count, last_call_at,
                                         denied_total, denied_in_window, denied_window_start, last_denied_at)
     SELECT encode(sha256(('active-' || g)::bytea), 'hex'), 0, (ARRAY['US','GB','DE','FR','IN'])[1 + g % 5],
            '+1415•••••' || lpad((g % 100)::text, 2, '0'),
            CASE WHEN g <= $2 THEN ARRAY[n - 600000 - g, n - g] ELSE ARRAY[n - g * 300] END::bigint[], 1, n - g,
            CASE WHEN g <= $3 THEN 3 ELSE 0 END, CASE WHEN g <= $3 THEN 3 ELSE 0 END,
            CASE WHEN g <= $3 THEN n - g - 60000 ELSE 0 END, CASE WHEN g <= $3 THEN n - g ELSE NULL END
       FROM generate_series(1, $1::bigint) AS g, LATERAL (SELECT (extract(epoch FROM now()) * 1000)::bigint AS n) AS c
     ON CONFLICT (phone_hash) DO UPDATE SET calls = EXCLUDED.calls, last_call_at = EXCLUDED.last_call_at,
       denied_in_window = EXCLUDED.denied_in_window, denied_window_start = EXCLUDED.denied_window_start,
       last_denied_at = EXCLUDED.last_denied_at`,
    [ACTIVE, AT_LIMIT, DENIED],
  );
}

function runCli(url: string, args: string[]): Promise<{ ms: number; code: number; stderr: string }> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          DATABASE_URL: url,
          PHONE_ENCRYPTION_KEY: PHONE_KEY,
          RATELIMIT_CLI_TIMEOUT: '120s',
          COLUMNS: '120',
        },
        timeout: 180_000,
        maxBuffer: 16 << 20,
      },
      (err, _stdout, stderr) => resolve({ ms: performance.now() - started, code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr }),
    );
  });
}

// The queries `stats` and `top` ran before 011 (sequential scans with per-row subqueries), timed
// on the same tables for a same-machine, same-load comparison.
const LEGACY_STATS = `WITH n AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms),
  per_row AS (
    SELECT COALESCE(p.region, 'unknown') AS region,
           (SELECT count(*) FROM unnest(p.calls) AS t WHERE t > n.now_ms - 3600000) AS calls,
           CASE WHEN p.denied_window_start > n.now_ms - 3600000 THEN p.denied_in_window ELSE 0 END AS denials,
           EXISTS (SELECT 1 FROM unnest('{2}'::int[], '{3600000}'::bigint[]) AS r(m, w)
                    WHERE cardinality(p.calls) >= r.m AND p.calls[cardinality(p.calls) - r.m + 1] > n.now_ms - r.w) AS at_limit
      FROM phone_rate_limits AS p, n)
  SELECT region, count(*), count(*) FILTER (WHERE at_limit), sum(calls), sum(denials) FROM per_row GROUP BY region`;
const LEGACY_HOT = `WITH n AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms)
  SELECT p.phone_hash, CASE WHEN p.denied_window_start > n.now_ms - 3600000 THEN p.denied_in_window ELSE 0 END AS denials,
         (SELECT count(*) FROM unnest(p.calls) AS t WHERE t > n.now_ms - 3600000) AS used,
         GREATEST(COALESCE(p.last_call_at, 0), COALESCE(p.last_denied_at, 0)) AS last_activity
    FROM phone_rate_limits AS p, n
   WHERE p.last_call_at > n.now_ms - 3600000 OR p.last_denied_at > n.now_ms - 3600000
   ORDER BY denials DESC, used DESC, last_activity DESC LIMIT 50`;

async function timeSql(pool: Pool, sql: string, runs: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await pool.query(sql);
    times.push(performance.now() - started);
  }
  return median(times);
}

export interface SizeRow {
  name: string;
  rows: number;
  tableMb: number;
  medianMs: number;
  minMs: number;
  legacySqlMs: number | null;
  load: string;
}

/** Decisions/s on existing rows with the active-set trigger on and off, warm and cold numbers. */
export interface DecideRow {
  name: string;
  triggerOn: number;
  triggerOff: number;
  hotShareOn: number;
  hotShareOff: number;
  load: string;
}

async function decideRate(pool: Pool, hashesFor: (batch: number) => string[], seconds: number): Promise<number> {
  const policy = decisionPolicy(defaultPolicy({ phoneMax: 2, phoneWindowMs: HOUR, ipMax: 100, ipWindowMs: HOUR }));
  const deadline = performance.now() + seconds * 1000;
  let decisions = 0;
  let batch = 0;
  const started = performance.now();
  // Four concurrent batchers, like a daemon's group commit under load.
  await Promise.all(
    [0, 1, 2, 3].map(async () => {
      while (performance.now() < deadline) {
        const reqs: DecideRequest[] = hashesFor(batch++).map((hash) => ({ hash, region: 'US', masked: '+1415•••••00', allowlisted: false, counters: [] }));
        await decideBatch(pool, reqs, policy);
        decisions += reqs.length;
      }
    }),
  );
  return decisions / ((performance.now() - started) / 1000);
}

async function hotShare(pool: Pool, before: { upd: number; hot: number }): Promise<number> {
  const { rows } = await pool.query<{ upd: number; hot: number }>(
    `SELECT n_tup_upd::float8 AS upd, n_tup_hot_upd::float8 AS hot FROM pg_stat_user_tables WHERE relname = 'phone_rate_limits'`,
  );
  const d = rows[0]!.upd - before.upd;
  return d > 0 ? (rows[0]!.hot - before.hot) / d : NaN;
}

async function statCounters(pool: Pool): Promise<{ upd: number; hot: number }> {
  await pool.query('SELECT pg_stat_force_next_flush()').catch(() => undefined);
  const { rows } = await pool.query<{ upd: number; hot: number }>(
    `SELECT n_tup_upd::float8 AS upd, n_tup_hot_upd::float8 AS hot FROM pg_stat_user_tables WHERE relname = 'phone_rate_limits'`,
  );
  return rows[0]!;
}

/**
 * Warm: 256-number batches over the 10k active numbers (already marked in this epoch: the
 * trigger's WHEN is all they pay). Cold: each batch takes 256 history numbers never decided in
 * this epoch, so every decision also inserts its number into the active set (the worst case:
 * 1M distinct numbers in ten minutes).
 */
async function measureDecide(pool: Pool, log: (s: string) => void): Promise<DecideRow[]> {
  const { rows: hashRows } = await pool.query<{ h: string }>(
    `SELECT encode(sha256(('active-' || g)::bytea), 'hex') AS h FROM generate_series(1, ${ACTIVE}) AS g`,
  );
  const activeHashes = hashRows.map((r) => r.h);
  const warm = (batch: number) => Array.from({ length: 256 }, (_, i) => activeHashes[((batch * 256 + i) * 7) % ACTIVE]!);
  let coldOffset = 1;
  const coldBatch = async (): Promise<string[][]> => {
    const { rows } = await pool.query<{ h: string }>(
      `SELECT encode(sha256(('history-' || g)::bytea), 'hex') AS h FROM generate_series($1::bigint, $2::bigint) AS g`,
      [coldOffset, coldOffset + COLD_PER_ROUND - 1],
    );
    // Earlier runs may have decided these numbers: make them history again (trigger off, so the
    // active set does not learn of it), or they would not be cold.
    await pool.query('ALTER TABLE phone_rate_limits DISABLE TRIGGER phone_rate_limits_mark_active');
    await pool.query(
      `UPDATE phone_rate_limits SET last_call_at = last_call_at - ${30 * DAY}, calls = ARRAY[last_call_at - ${30 * DAY} - ${HOUR}, last_call_at - ${30 * DAY}]::bigint[],
              last_denied_at = NULL, denied_in_window = 0, denied_window_start = 0
        WHERE phone_hash = ANY($1::text[]) AND last_call_at > (extract(epoch FROM now()) * 1000)::bigint - ${2 * DAY}`,
      [rows.map((r) => r.h)],
    );
    coldOffset += COLD_PER_ROUND;
    const out: string[][] = [];
    for (let i = 0; i < rows.length; i += 256) out.push(rows.slice(i, i + 256).map((r) => r.h));
    return out;
  };
  const results: DecideRow[] = [];
  for (const kind of ['warm', 'cold'] as const) {
    const rates: Record<'on' | 'off', number[]> = { on: [], off: [] };
    const hot: Record<'on' | 'off', number[]> = { on: [], off: [] };
    // Alternate on/off twice, so a change in the machine's load hits both alike.
    for (const round of [0, 1]) {
      for (const mode of round === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
        await pool.query(`ALTER TABLE phone_rate_limits ${mode === 'on' ? 'ENABLE' : 'DISABLE'} TRIGGER phone_rate_limits_mark_active`);
        const batches = kind === 'cold' ? await coldBatch() : [];
        const before = await statCounters(pool);
        const rate = await decideRate(pool, kind === 'warm' ? warm : (b) => batches[b % batches.length]!, DECIDE_SECONDS);
        rates[mode].push(rate);
        hot[mode].push(await hotShare(pool, before));
        log(`  size decide ${kind} trigger ${mode}: ${Math.round(rate)}/s (load ${loadAverage()})`);
      }
    }
    await pool.query('ALTER TABLE phone_rate_limits ENABLE TRIGGER phone_rate_limits_mark_active');
    results.push({
      name: `size decide ${kind}`,
      triggerOn: median(rates.on),
      triggerOff: median(rates.off),
      hotShareOn: median(hot.on),
      hotShareOff: median(hot.off),
      load: loadAverage(),
    });
  }
  return results;
}

export async function runTableSizes(only: RegExp | undefined, log: (s: string) => void = console.log): Promise<{ rows: SizeRow[]; decide: DecideRow[] }> {
  const out: SizeRow[] = [];
  let decide: DecideRow[] = [];
  const want = (name: string) => !only || only.test(name);
  for (const rows of SIZES) {
    const names = [`size ${label(rows)} stats`, `size ${label(rows)} top`, `size ${label(rows)} status`];
    const decideHere = rows === 1_000_000 && want('size decide trigger');
    if (!names.some(want) && !decideHere) continue;
    log(`  size ${label(rows)}: opening the cached table in ${CACHE_DIR} (load ${loadAverage()})`);
    const { pg, pool, complete, buildS } = await openSize(rows, log);
    try {
      if (!complete) {
        log(`  size ${label(rows)}: not fully built within BENCH_BUILD_SECONDS=${BUILD_SECONDS} (${Math.round(buildS)} s); the next run resumes it`);
        continue;
      }
      const { rows: sizeRows } = await pool.query<{ mb: number; n: number }>(
        `SELECT pg_total_relation_size('phone_rate_limits')::float8 / 1048576 AS mb, (SELECT count(*) FROM phone_rate_limits)::float8 AS n`,
      );
      const tableMb = sizeRows[0]!.mb;
      const commands: Array<[string, string[], string | null]> = [
        [names[0]!, ['stats', '--json'], LEGACY_STATS],
        [names[1]!, ['top', '--once'], LEGACY_HOT],
        [names[2]!, ['status', '+14155550100', '--json'], null],
      ];
      for (const [name, args, legacy] of commands) {
        if (!want(name)) continue;
        await runCli(pg.url, args); // warm the cache once, as an operator's second look would be
        const times: number[] = [];
        for (let i = 0; i < CLI_RUNS; i++) {
          const r = await runCli(pg.url, args);
          if (r.code !== 0) throw new Error(`${name}: ratelimit ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
          times.push(r.ms);
        }
        const legacySqlMs = legacy ? await timeSql(pool, legacy, LEGACY_RUNS) : null;
        const row: SizeRow = { name, rows: sizeRows[0]!.n, tableMb, medianMs: median(times), minMs: Math.min(...times), legacySqlMs, load: loadAverage() };
        out.push(row);
        log(
          `  ${name.padEnd(22)} ${row.medianMs.toFixed(0)} ms (min ${row.minMs.toFixed(0)})${legacySqlMs !== null ? `; the pre-011 query alone ${legacySqlMs.toFixed(0)} ms` : ''}; load ${row.load}`,
        );
      }
      if (decideHere) decide = await measureDecide(pool, log);
    } finally {
      await pool.end();
      await pg.stop();
    }
  }
  return { rows: out, decide };
}

export function renderSizeSection(result: { rows: SizeRow[]; decide: DecideRow[] }, date: string): string {
  const lines = [
    `Table-size run: ${date}. Wall time through \`bin/ratelimit.js\` (node start-up included), median of ${CLI_RUNS} after one warm-up; ` +
      `"pre-011 SQL" is the query the command ran before migration 011, alone, on the same table. Every size has the same ${ACTIVE.toLocaleString('en-US')} numbers active in the last hour. "load" is the 1/5/15-minute load average when the row was taken (2 cores, shared).`,
    '',
    '| scenario | rows | table MB | median ms | min ms | pre-011 SQL ms | load |',
    '|---|---:|---:|---:|---:|---:|---|',
    ...result.rows.map(
      (r) =>
        `| ${r.name} | ${r.rows.toLocaleString('en-US')} | ${r.tableMb.toFixed(0)} | ${r.medianMs.toFixed(0)} | ${r.minMs.toFixed(0)} | ${r.legacySqlMs === null ? '—' : r.legacySqlMs.toFixed(0)} | ${r.load} |`,
    ),
  ];
  if (result.decide.length > 0) {
    lines.push(
      '',
      'Decisions/s on the 1M table (256 per batch, 4 batches in flight, limit 2/h so logs stay short and every round costs the same), with the active-set trigger on and off (alternated, median of 2 each):',
      '',
      '| scenario | trigger on /s | trigger off /s | on/off | HOT updates on / off | load |',
      '|---|---:|---:|---:|---:|---|',
      ...result.decide.map(
        (d) =>
          `| ${d.name} | ${Math.round(d.triggerOn)} | ${Math.round(d.triggerOff)} | ${(d.triggerOn / d.triggerOff).toFixed(2)} | ${(d.hotShareOn * 100).toFixed(0)} % / ${(d.hotShareOff * 100).toFixed(0)} % | ${d.load} |`,
      ),
    );
  }
  return lines.join('\n');
}

const SIZE_START = '<!-- bench:size:start (written by `npm run bench`, scenarios "size …"; edits inside are overwritten) -->';
const SIZE_END = '<!-- bench:size:end -->';

export async function updateSizeSection(file: string, section: string): Promise<void> {
  const text = await readFile(file, 'utf8');
  const a = text.indexOf(SIZE_START);
  const b = text.indexOf(SIZE_END);
  const next =
    a >= 0 && b > a ? `${text.slice(0, a + SIZE_START.length)}\n${section}\n${text.slice(b)}` : `${text.trimEnd()}\n\n${SIZE_START}\n${section}\n${SIZE_END}\n`;
  await writeFile(file, next);
}

// Run alone: `node dist/bench/table-size.js` (BENCH_ONLY applies).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const only = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : undefined;
  const result = await runTableSizes(only);
  const resultsDir = path.join(ROOT, 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  await writeFile(path.join(resultsDir, 'table-size.json'), `${JSON.stringify({ date: new Date().toISOString(), load: loadAverage(), ...result }, null, 2)}\n`);
  const section = renderSizeSection(result, new Date().toISOString());
  console.log(`\n${section}`);
  if (!only) await updateSizeSection(path.join(ROOT, 'BENCHMARKS.md'), section);
}
