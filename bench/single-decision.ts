// What one lone decision costs (issue 22: at low rates each decision is its own statement):
// PostgreSQL CPU of the backend (from /proc) and this process's CPU per statement, for
// ratelimit_decide under each plan_cache_mode and for a bare one-row upsert, on one connection to
// a throwaway embedded server with 50k analysed rows. `npm run build && node dist/bench/single-decision.js`
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, chmod } from 'node:fs/promises';
import { startEmbeddedPostgres } from '../src/db/embedded/index.js';
import { createPool } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { decideQuery } from '../src/db/decisions.js';
import { decisionPolicy } from '../src/core/policy/decide.js';
import { defaultPolicy } from '../src/core/policy/default.js';
import { processCpuS } from '../bench/lib/proc.js';
import { createHash } from 'node:crypto';

const tmp = await mkdtemp(path.join(os.tmpdir(), 'ratelimit-single-'));
// The embedded server may run as another user, which must reach its data directory.
await chmod(tmp, 0o755);
const pg = await startEmbeddedPostgres({ dataDir: path.join(tmp, 'pg'), database: 'single', fsync: true });
const pool = createPool({ url: pg.url, max: 1, applicationName: 'single' });
await migrate(pool);
const policy = decisionPolicy(defaultPolicy({ phoneMax: 1000, phoneWindowMs: 3_600_000, ipMax: 1, ipWindowMs: 1000 }));
const h = (i: number) => createHash('sha256').update(String(i)).digest('hex');
await pool.query(
  `INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked) SELECT md5(g::text), 0, 'US', '+1415•••••71' FROM generate_series(1,50000) g`,
);
await pool.query('VACUUM ANALYZE phone_rate_limits');
const N = 1500;
async function run(label: string, setup: string | null, text?: (i: number) => { name: string; text: string; values: unknown[] }) {
  const c = await pool.connect();
  try {
    if (setup) await c.query(setup);
    const pid = (await c.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]!.p;
    // Fresh numbers each time, after 50 unmeasured statements (plpgsql's plan cache warm).
    let i0 = Math.floor(Math.random() * 1e6);
    const one = (i: number) => (text ? text(i) : decideQuery([{ hash: h(i), region: 'US', masked: '+1415•••••71', allowlisted: false, counters: [] }], policy));
    for (let i = 0; i < 50; i++) await c.query(one(i0++));
    const cpu0 = processCpuS(pid)!;
    const me0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < N; i++) await c.query(one(i0++));
    const cpu1 = processCpuS(pid)!;
    const me = process.cpuUsage(me0);
    console.log(
      `${label.padEnd(40)} PG ${(((cpu1 - cpu0) / N) * 1e6).toFixed(0)} µs/stmt  node ${((me.user + me.system) / N).toFixed(0)} µs/stmt  wall ${(((performance.now() - t0) * 1000) / N).toFixed(0)} µs`,
    );
  } finally {
    c.release(true);
  }
}
const upsert = (i: number) => ({
  name: 'up',
  text: `INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked) VALUES ($1, 0, 'US', 'x') ON CONFLICT (phone_hash) DO UPDATE SET window_start = 1`,
  values: [h(i)],
});
for (let round = 0; round < 2; round++) {
  await run('decide, plan_cache_mode auto', null);
  await run('decide, force_custom_plan', 'SET plan_cache_mode = force_custom_plan');
  await run('decide, force_generic_plan', 'SET plan_cache_mode = force_generic_plan');
  await run('bare upsert', null, upsert);
}
await pool.end();
await pg.stop();
