// The decision engine in-process against real PostgreSQL: group commit under a hot number,
// the deny cache and its invalidation, and the in-memory fallback's bookkeeping.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { lookupPhone, resetPhone } from '../../src/db/phones.js';
import { makeLogPolicy } from '../../src/core/policy/log.js';
import { hashPhone, maskPhone } from '../../src/core/phone.js';
import { DecisionEngine } from '../../src/daemon/engine/engine.js';
import { createMetrics } from '../../src/daemon/metrics.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { fixedPolicy } from '../../src/daemon/policy-source.js';
import { Spool } from '../../src/daemon/engine/spool.js';
import { createTestDatabase } from '../helpers/fixture.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const KEY = 'engine-test-key-0123456789abcdefghijkl';
const logger = pino({ level: 'silent' });
let db: { url: string; drop(): Promise<void> };
let pool: Pool;
let spoolDir: string;
const engines: DecisionEngine[] = [];
let spools = 0;
// Each engine its own spool scope, so none takes over another's.
const spool = () =>
  Spool.open({ dataDir: spoolDir, scope: { databaseUrl: `engine-test-${++spools}`, phoneKey: KEY }, instanceId: 'engine-test', maxBytes: 1 << 20, logger });

const subject = (e164: string) => ({ hash: hashPhone(e164, KEY), region: 'US', masked: maskPhone(e164), e164, type: undefined });
// The policy the daemon runs without a policy file: one number rule (and ip, unused here).
const numberPolicy = (max: number) => fixedPolicy(defaultPolicy({ phoneMax: max, phoneWindowMs: 3_600_000, ipMax: 1, ipWindowMs: 1_000 }));

beforeAll(async () => {
  db = await createTestDatabase();
  spoolDir = await mkdtemp(path.join(tmpdir(), 'ratelimit-engine-spool-'));
  pool = createPool({ url: db.url, max: 8 });
  await migrate(pool);
});
afterAll(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  await pool.end();
  await db.drop();
  await rm(spoolDir, { recursive: true, force: true });
});

async function engine(opts: { max: number; denyCache: boolean; maxBatch?: number }) {
  const metrics = createMetrics();
  const e = new DecisionEngine({
    spool: await spool(),
    pool,
    url: db.url,
    policies: numberPolicy(opts.max),
    logger,
    metrics,
    denyCache: opts.denyCache,
    maxBatch: opts.maxBatch ?? 256,
    maxInFlight: 2,
  });
  engines.push(e);
  return { e, metrics };
}

async function histogramCount(metrics: ReturnType<typeof createMetrics>, op: string): Promise<{ count: number; sum: number }> {
  const m = await metrics.batchSize.get();
  const count = m.values.find((v) => v.metricName === 'ratelimit_db_batch_size_count' && v.labels.op === op)?.value ?? 0;
  const sum = m.values.find((v) => v.metricName === 'ratelimit_db_batch_size_sum' && v.labels.op === op)?.value ?? 0;
  return { count, sum };
}

describe('DecisionEngine', () => {
  it('group-commits a burst on one hot number into large batches and allows exactly max', async () => {
    const { e, metrics } = await engine({ max: 25, denyCache: false });
    const s = subject('+14155550001');
    const results = await Promise.all(Array.from({ length: 2_000 }, () => e.consume(s)));
    expect(results.filter((r) => r.allowed)).toHaveLength(25);
    expect(results.every((r) => r.source === 'database')).toBe(true);
    const { count, sum } = await histogramCount(metrics, 'consume');
    expect(sum).toBe(2_000);
    // 2000 requests in far fewer statements: the burst was batched.
    expect(count).toBeLessThan(100);
    const { row } = await lookupPhone(pool, s.hash);
    expect(row).toMatchObject({ callCount: 25, deniedTotal: 1_975 });
    // Each allowed reply reports the count after its own call: 1..25, once each.
    expect(
      results
        .filter((r) => r.allowed)
        .map((r) => r.used)
        .sort((a, b) => a - b),
    ).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
  });

  it("decides one number's consumes in the order they arrived, even across statements in flight", async () => {
    const { e } = await engine({ max: 2, denyCache: false });
    for (let n = 0; n < 20; n++) {
      // A filler request first, so the number's requests span several statements.
      // Each pair in its own 1,000-number ranges: the default policy's sweep rule allows 10
      // distinct numbers per range per hour, and this test is about one number's order.
      const filler = e.consume(subject(`+1415${String(200 + n)}0001`));
      const s = subject(`+1415${String(300 + n)}0001`);
      const out = await Promise.all([e.consume(s), e.consume(s), e.consume(s), e.consume(s)]);
      await filler;
      expect(out.map((d) => d.allowed)).toEqual([true, true, false, false]);
      expect(out.map((d) => d.used)).toEqual([1, 2, 2, 2]);
    }
  });

  it('the deny cache answers at-limit numbers without the database, and the denials still reach it', async () => {
    const { e, metrics } = await engine({ max: 2, denyCache: true });
    const s = subject('+14155550002');
    for (let i = 0; i < 2; i++) expect((await e.consume(s)).allowed).toBe(true);
    const before = await histogramCount(metrics, 'consume');
    const denied = await Promise.all(Array.from({ length: 50 }, () => e.consume(s)));
    expect(denied.every((d) => !d.allowed && d.metricSource === 'cache' && d.source === 'database')).toBe(true);
    expect((await histogramCount(metrics, 'consume')).count).toBe(before.count);
    await expect.poll(async () => (await lookupPhone(pool, s.hash)).row, { timeout: 4_000, interval: 100 }).toMatchObject({ deniedTotal: 50, callCount: 2 });
  });

  it('a reset anywhere reaches the deny cache (LISTEN/NOTIFY)', async () => {
    const { e } = await engine({ max: 1, denyCache: true });
    const s = subject('+14155550003');
    expect((await e.consume(s)).allowed).toBe(true);
    expect((await e.consume(s)).metricSource).toBe('cache');
    await resetPhone(pool, s.hash, 'test', 'engine test', makeLogPolicy([{ id: 'phone', limit: 1, windowMs: 3_600_000 }]));
    await expect.poll(async () => (await e.check(s)).allowed, { timeout: 5_000, interval: 100 }).toBe(true);
    expect((await e.consume(s)).allowed).toBe(true);
  });

  it('answers from memory when the database cannot be reached, starting from what it last saw', async () => {
    const metrics = createMetrics();
    const dead = createPool({ url: 'postgres://nobody:x@127.0.0.1:1/none', max: 1, connectTimeoutMs: 500 });
    const e = new DecisionEngine({
      spool: await spool(),
      pool: dead,
      policies: numberPolicy(2),
      logger,
      metrics,
      denyCache: false,
      probeInitialDelayMs: 60_000,
    });
    engines.push(e);
    try {
      const s = subject('+14155550004');
      const a = await e.consume(s);
      expect(a).toMatchObject({ allowed: true, source: 'memory', used: 1 });
      expect(e.mode).toBe('memory');
      const b = await e.consume(s);
      const c = await e.consume(s);
      expect([b.allowed, c.allowed]).toEqual([true, false]);
      expect(e.pendingWrites).toBe(3);
      const check = await e.check(s);
      expect(check).toMatchObject({ allowed: false, source: 'memory', used: 2 });
      expect(e.pendingWrites).toBe(3);
    } finally {
      await e.stop();
      await dead.end();
    }
  });
});
