// Early denials during an outage (issue 17): list, destination and ip denials are queued for the
// database without the spool. A flood of them while the database is away must neither grow
// memory without bound nor push out the allowed calls memory decided: they have their own bound,
// beyond which they are counted in ratelimit_denials_unrecorded_total and not kept.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultPolicy } from '../../../src/core/policy/default.js';
import { hashPhone, maskPhone } from '../../../src/core/phone.js';
import type { DecisionEvent } from '../../../src/db/decisions.js';
import { Spool } from '../../../src/daemon/engine/spool.js';
import { WriteBehind } from '../../../src/daemon/engine/write-behind.js';
import { createMetrics } from '../../../src/daemon/metrics.js';
import { fixedPolicy } from '../../../src/daemon/policy-source.js';
import { migratedTestDatabase } from '../../helpers/fixture.js';

const KEY = 'write-behind-test-key-0123456789abcdef';
const logger = pino({ level: 'silent' });
const db = migratedTestDatabase({ max: 2 });
let spoolDir: string;

beforeAll(async () => {
  spoolDir = await mkdtemp(path.join(tmpdir(), 'ratelimit-write-behind-'));
});
afterAll(async () => {
  await rm(spoolDir, { recursive: true, force: true });
});

const event = (e164: string, allowed: boolean, atMs = Date.now()): DecisionEvent => ({
  hash: hashPhone(e164, KEY),
  region: 'US',
  masked: maskPhone(e164),
  atMs,
  allowed,
  counters: [],
});

describe('WriteBehind: denials queued without the spool', () => {
  it('are bounded: past maxLooseDenials they are counted, not kept, and never displace allowed calls', async () => {
    const metrics = createMetrics();
    const spool = await Spool.open({
      dataDir: spoolDir,
      scope: { databaseUrl: 'write-behind-test', phoneKey: KEY },
      instanceId: 'wb-test',
      maxBytes: 1 << 20,
      logger,
    });
    const policy = fixedPolicy(defaultPolicy({ phoneMax: 5, phoneWindowMs: 3_600_000, ipMax: 5, ipWindowMs: 60_000 }));
    const maxLooseDenials = 1_000;
    const writes = new WriteBehind({
      pool: db.pool,
      policy: () => policy.current.decision,
      logger,
      metrics,
      maxPendingWrites: 5_000,
      maxLooseDenials,
      timed: (_op, _n, fn) => fn(),
      spool,
    });
    // Memory allowed three calls during the outage (durable, in the spool)...
    await writes.queueDurable([event('+14155550101', true), event('+14155550102', true), event('+14155550103', true)]);
    // ...then a flood of early denials, 20x the bound and past maxPendingWrites in all.
    for (let i = 0; i < maxLooseDenials * 20; i++) writes.queue(event('+14155550199', false));
    expect(writes.size).toBe(3 + maxLooseDenials);
    const unrecorded = (await metrics.registry.getSingleMetricAsString('ratelimit_denials_unrecorded_total')).match(/ (\d+)$/m)![1];
    expect(Number(unrecorded)).toBe(maxLooseDenials * 19);
    // The database comes back: everything kept is written, the allowed calls among it.
    await writes.flush();
    expect(writes.size).toBe(0);
    const { rows } = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM phone_rate_limits WHERE phone_hash = ANY($1) AND call_count > 0', [
      ['+14155550101', '+14155550102', '+14155550103'].map((n) => hashPhone(n, KEY)),
    ]);
    expect(Number(rows[0]!.n)).toBe(3);
    // Room again once written.
    writes.queue(event('+14155550199', false));
    expect(writes.size).toBe(1);
    await writes.flush();
    await spool.close();
  });
});
