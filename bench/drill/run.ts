// `npm run drill`: the fraud drill (issue #19). One simulated day of legitimate traffic with four
// attacks mixed in (traffic.ts), decided by the real decision path at simulated time (harness.ts)
// on a throwaway embedded PostgreSQL, once per policy: the default (no policy applied) and
// docs/examples/policy.yaml. Prints the tables and the targets, writes drill.json in bench/results
// and the "Latest run" part of BENCHMARKS.md's *Fraud drill* section.
//
// DRILL_SEED (default 19) picks the traffic; DRILL_HOURS shortens the day (attacks after the end
// are left out); DRILL_POLICIES=default,example picks the policies; DRILL_MAX_SECONDS (default
// 180) bounds the whole run's wall time: past it the run stops with an error.
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import getPort, { portNumbers } from 'get-port';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { DEFAULT_IP_MAX, DEFAULT_IP_WINDOW_MS, DEFAULT_PHONE_MAX, DEFAULT_PHONE_WINDOW_MS } from '../../src/core/defaults.js';
import type { Policy } from '../../src/core/policy/types.js';
import { DAY_START_MS, runDrill, TICK_MS } from './harness.js';
import { figures, renderAttacks, renderTables, renderTargets, targets, type PolicyFigures } from './report.js';
import { DEFAULT_DURATION_MS, DEFAULT_LEGIT_SESSIONS_PER_HOUR, DEFAULT_SEED, LEGIT_COUNTRIES, LEGIT_SHAPE, simulate, type DrillTraffic } from './traffic.js';
import { CURRENCY, PREMIUM_RATE_PER_MINUTE, PRICES } from './prices.js';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/bench/drill
const ROOT = path.resolve(HERE, '..', '..', '..');
const DAY_MS = 86_400_000;
/** Days of outcome history before the drill's day, for conversion baselines (Authgear's 14-day form). */
const HISTORY_DAYS = 14;
const START_MARK = '<!-- drill:latest:start -->';
const END_MARK = '<!-- drill:latest:end -->';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

async function policies(): Promise<Array<{ name: string; policy: Policy }>> {
  const wanted = (process.env.DRILL_POLICIES ?? 'default,example').split(',').map((s) => s.trim());
  const out: Array<{ name: string; policy: Policy }> = [];
  if (wanted.includes('default')) {
    out.push({
      name: 'default',
      policy: defaultPolicy({ phoneMax: DEFAULT_PHONE_MAX, phoneWindowMs: DEFAULT_PHONE_WINDOW_MS, ipMax: DEFAULT_IP_MAX, ipWindowMs: DEFAULT_IP_WINDOW_MS }),
    });
  }
  if (wanted.includes('example')) {
    const file = path.join(ROOT, 'docs', 'examples', 'policy.yaml');
    const parsed = parsePolicyFile(await readFile(file, 'utf8'));
    if (!parsed.ok) throw new Error(`docs/examples/policy.yaml does not parse: ${parsed.problems.map((p) => `${p.line}:${p.column} ${p.message}`).join('; ')}`);
    out.push({ name: 'example', policy: parsed.policy });
  }
  return out;
}

/**
 * The 14 days before the drill: each country's converted calls per day, as the legitimate traffic
 * makes them (±10% per day), stored as outcomes so conversion baselines have a history. Written
 * straight into rate_limit_outcomes (only what a baseline reads: region, decided_at, outcome).
 */
async function seedHistory(pool: Pool, sessionsPerHour: number): Promise<number> {
  const total = Object.values(LEGIT_COUNTRIES).reduce((s, w) => s + w, 0);
  const callsPerSession = 1 + (1 - LEGIT_SHAPE.conversion) * LEGIT_SHAPE.retry[0] * (1 + (1 - LEGIT_SHAPE.conversion) * LEGIT_SHAPE.retry[1]);
  const regions: string[] = [];
  const days: number[] = [];
  const counts: number[] = [];
  let wobble = 1;
  for (const [country, weight] of Object.entries(LEGIT_COUNTRIES)) {
    for (let d = 1; d <= HISTORY_DAYS; d++) {
      wobble = (wobble * 48271) % 2147483647;
      const perDay = sessionsPerHour * 24 * (weight / total) * callsPerSession * LEGIT_SHAPE.conversion;
      regions.push(country);
      days.push(d);
      counts.push(Math.round(perDay * (0.9 + 0.2 * (wobble / 2147483647))));
    }
  }
  const { rowCount } = await pool.query(
    `INSERT INTO rate_limit_outcomes (decision_id, phone_hash, region, range_label, decided_at, outcome, duration_ms, source, recorded_at)
     SELECT 'history-' || x.r || '-' || x.d || '-' || g, md5(x.r || x.d || g), x.r, '+0',
            to_timestamp(($1::BIGINT - x.d * ${DAY_MS}::BIGINT + g * (${DAY_MS}::BIGINT / x.n)) / 1000.0), 'verified', NULL, 'ws',
            to_timestamp(($1::BIGINT - x.d * ${DAY_MS}::BIGINT + g * (${DAY_MS}::BIGINT / x.n) + 120000) / 1000.0)
       FROM unnest($2::TEXT[], $3::INT[], $4::INT[]) AS x(r, d, n), generate_series(1, x.n) AS g`,
    [DAY_START_MS, regions, days, counts],
  );
  return rowCount ?? 0;
}

async function updateBenchmarksMd(section: string): Promise<void> {
  const file = path.join(ROOT, 'BENCHMARKS.md');
  const text = await readFile(file, 'utf8');
  const start = text.indexOf(START_MARK);
  const end = text.indexOf(END_MARK);
  if (start === -1 || end === -1) {
    console.log(`BENCHMARKS.md has no ${START_MARK} … ${END_MARK} markers: not updated`);
    return;
  }
  await writeFile(file, `${text.slice(0, start + START_MARK.length)}\n${section}\n${text.slice(end)}`);
  console.log('updated BENCHMARKS.md (Fraud drill, latest run)');
}

function priceTable(): string {
  const rows = Object.entries(PRICES).map(([c, p]) => `${c} ${p.sms}/${p.voicePerMinute}`);
  const premium = Object.entries(PREMIUM_RATE_PER_MINUTE).map(([c, p]) => `${c} ${p}/min`);
  return `Prices (${CURRENCY}, SMS / voice per started minute, answered calls only; illustrative, bench/drill/prices.ts): ${rows.join(', ')}; premium-rate numbers ${premium.join(', ')}.`;
}

async function main(): Promise<void> {
  const seed = envInt('DRILL_SEED', DEFAULT_SEED);
  const durationMs = Math.min(DEFAULT_DURATION_MS, envInt('DRILL_HOURS', DEFAULT_DURATION_MS / 3_600_000) * 3_600_000);
  const sessionsPerHour = DEFAULT_LEGIT_SESSIONS_PER_HOUR;
  const wallStart = Date.now();
  const deadline = performance.now() + envInt('DRILL_MAX_SECONDS', 180) * 1000;
  const traffic: DrillTraffic = simulate({ seed, durationMs, legitSessionsPerHour: sessionsPerHour });
  console.log(
    `drill: seed ${seed}, ${durationMs / 3_600_000} h simulated, ${traffic.calls.length} calls (${traffic.calls.filter((c) => c.source === 'legit').length} legitimate)`,
  );
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'ratelimit-drill-'));
  let pg: EmbeddedServer | undefined;
  const pools: Pool[] = [];
  let all: PolicyFigures[] = [];
  try {
    pg = await startEmbeddedPostgres({
      dataDir: path.join(tmp, 'pg'),
      port: await getPort({ host: '127.0.0.1', port: portNumbers(41400, 41499) }),
      database: 'ratelimit_drill',
      // What is measured is which calls are allowed, not durability.
      fsync: false,
      extraConfig: { synchronous_commit: 'off' },
    });
    const server = pg;
    const admin = createPool({ url: server.url, max: 1, applicationName: 'drill admin' });
    pools.push(admin);
    // One database per policy, run side by side: each run waits on its statements most of the
    // time, so two at once take little longer than one.
    all = await Promise.all(
      (await policies()).map(async ({ name, policy }) => {
        await admin.query(`CREATE DATABASE "ratelimit_drill_${name}"`);
        const url = new URL(server.url);
        url.pathname = `/ratelimit_drill_${name}`;
        const pool = createPool({ url: url.toString(), max: 4, applicationName: `drill ${name}` });
        pools.push(pool);
        await migrate(pool);
        const history = await seedHistory(pool, sessionsPerHour);
        const run = await runDrill(pool, traffic, policy, deadline);
        const parts = Object.entries(run.partsMs)
          .map(([k, v]) => `${k} ${(v / 1000).toFixed(1)} s`)
          .join(', ');
        console.log(`  ${name}: ${run.statements} statements in ${(run.wallMs / 1000).toFixed(1)} s (${parts}; ${history} history outcomes seeded)`);
        return figures(name, traffic, run.results, run);
      }),
    );
  } finally {
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
    await pg?.stop().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  }
  const tables = renderTables(all);
  const goals = renderTargets(targets(all));
  const elapsedS = Math.round((Date.now() - wallStart) / 1000);
  console.log(`\n${tables}\n\nTargets (issue #19):\n${goals}\n(${elapsedS} s)`);
  const resultsDir = path.join(ROOT, 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  await writeFile(
    path.join(resultsDir, 'drill.json'),
    `${JSON.stringify({ date: new Date().toISOString(), seed, durationMs, tickMs: TICK_MS, figures: all }, null, 2)}\n`,
  );
  if (durationMs === DEFAULT_DURATION_MS && all.length === 2) {
    const section = [
      `Latest run: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, seed ${seed}, ${durationMs / 3_600_000} h simulated in ${elapsedS} s ` +
        `(${traffic.calls.length} calls, decided every ${TICK_MS / 1000} s of simulated time).`,
      '',
      'Attacks:',
      '',
      renderAttacks(),
      '',
      tables,
      '',
      'Targets (issue #19):',
      '',
      goals,
      '',
      priceTable(),
    ].join('\n');
    await updateBenchmarksMd(section);
  }
}

await main();
