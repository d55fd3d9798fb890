// One store-level run in its own process, so its CPU and peak RSS are its own and nothing (JIT
// state, GC heap, pool connections) carries over into the next run.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { RateLimiterPostgres, RateLimiterRes } from 'rate-limiter-flexible';
import { createPool } from '../src/db/pool.js';
import { defaultPolicy } from '../src/core/policy/default.js';
import { fixedPolicy } from '../src/daemon/policy-source.js';
import { DecisionEngine, type PhoneSubject } from '../src/daemon/engine/engine.js';
import { createMetrics } from '../src/daemon/metrics.js';
import { Spool } from '../src/daemon/engine/spool.js';
import { driveLanes, driveOpenLoop, emit, workerArgs } from './lib/child.js';
import { keySampler, type KeyDistribution } from './lib/keys.js';

export type StoreSystem = 'ours' | 'rlf' | 'upsert';

export interface StoreWorkerConfig {
  system: StoreSystem;
  dist: KeyDistribution;
  inflight: number;
  limit: number;
  windowMs: number;
  poolSize: number;
  warmupMs: number;
  measureMs: number;
  url: string;
  keysFile: string;
  /** Open loop at this many decisions a second instead of `inflight` lanes. */
  rate?: number;
}

export const RLF_TABLE = 'bench_rlf';
export const UPSERT_TABLE = 'bench_upsert';

const cfg = workerArgs<StoreWorkerConfig>();
const keys = JSON.parse(readFileSync(cfg.keysFile, 'utf8')) as PhoneSubject[];
const nextKey = keySampler(cfg.dist);
// No statement timeout: a slow decision must show up as latency, not as an error.
const pool = createPool({ url: cfg.url, max: cfg.poolSize, applicationName: `bench ${cfg.system}` });
// Open every connection before the clock starts, for all three systems alike.
await Promise.all(Array.from({ length: cfg.poolSize }, () => pool.connect())).then((cs) => cs.forEach((c) => c.release()));

let op: () => Promise<'allowed' | 'denied'>;
let close = async () => undefined as void;
if (cfg.system === 'ours') {
  // The daemon's decision path minus the network: group commit, one plpgsql statement per batch.
  // No LISTEN url, so no deny cache: every decision here is made by PostgreSQL.
  const spoolDir = mkdtempSync(path.join(tmpdir(), 'ratelimit-bench-spool-'));
  const engine = new DecisionEngine({
    spool: await Spool.open({
      dataDir: spoolDir,
      scope: { databaseUrl: cfg.url, phoneKey: 'bench' },
      instanceId: 'bench',
      maxBytes: 64 << 20,
      logger: pino({ level: 'silent' }),
    }),
    pool,
    policies: fixedPolicy(defaultPolicy({ phoneMax: cfg.limit, phoneWindowMs: cfg.windowMs, ipMax: 1, ipWindowMs: 1_000 })),
    logger: pino({ level: 'silent' }),
    metrics: createMetrics(),
    denyCache: false,
  });
  op = async () => ((await engine.consume(keys[nextKey()]!)).allowed ? 'allowed' : 'denied');
  close = async () => {
    await engine.stop();
    rmSync(spoolDir, { recursive: true, force: true });
  };
} else if (cfg.system === 'rlf') {
  const limiter = new RateLimiterPostgres({
    storeClient: pool,
    // Said, not guessed: rate-limiter-flexible tells a pool by its class name, and ours (src/db/pool.ts) is not "Pool".
    storeType: 'pool',
    tableName: RLF_TABLE,
    tableCreated: true,
    clearExpiredByTimeout: false,
    points: cfg.limit,
    duration: Math.round(cfg.windowMs / 1000),
  });
  op = async () => {
    try {
      await limiter.consume(keys[nextKey()]!.hash);
      return 'allowed';
    } catch (err) {
      // rate-limiter-flexible rejects with a RateLimiterRes when the key is over its points.
      if (err instanceof RateLimiterRes) return 'denied';
      throw err;
    }
  };
} else {
  op = async () => {
    await pool.query({
      name: 'bench_upsert',
      text: `INSERT INTO ${UPSERT_TABLE} (k, n) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET n = ${UPSERT_TABLE}.n + 1`,
      values: [keys[nextKey()]!.hash],
    });
    return 'allowed';
  };
}

const result = cfg.rate
  ? await driveOpenLoop({ ratePerS: cfg.rate, warmupMs: cfg.warmupMs, measureMs: cfg.measureMs, op })
  : await driveLanes({ lanes: cfg.inflight, warmupMs: cfg.warmupMs, measureMs: cfg.measureMs, op });
await close();
await pool.end();
emit({ event: 'result', result });
