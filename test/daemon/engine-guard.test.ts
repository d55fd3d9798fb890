// The decision engine in-process against real PostgreSQL with #19's groups: a sweep through a
// range is denied, then its range blocked (auto:block, the sweep reason, retry until the block
// ends), safe numbers pass, conversion rules count only once engaged; browsers see only
// allowed, reason, rule and a minute-rounded retry.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { hashPhone, maskPhone } from '../../src/core/phone.js';
import { DecisionEngine } from '../../src/daemon/engine/engine.js';
import { createMetrics } from '../../src/daemon/metrics.js';
import { fixedPolicy } from '../../src/daemon/policy-source.js';
import { Spool } from '../../src/daemon/engine/spool.js';
import { browserDecisionReply } from '../../src/protocol/replies.js';
import type { ConversionState } from '../../src/core/policy/counters.js';
import type { Policy } from '../../src/core/policy/types.js';
import { createTestDatabase } from '../helpers/fixture.js';
import { policy as makePolicy, rule } from '../helpers/policy.js';

const KEY = 'engine-guard-test-key-0123456789abcdef';
const logger = pino({ level: 'silent' });
const HOUR_MS = 3_600_000;
let db: { url: string; drop(): Promise<void> };
let pool: Pool;
let spoolDir: string;
const engines: DecisionEngine[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  spoolDir = await mkdtemp(path.join(tmpdir(), 'ratelimit-engine-guard-spool-'));
  pool = createPool({ url: db.url, max: 4 });
  await migrate(pool);
});
afterAll(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  await pool.end();
  await db.drop();
  await rm(spoolDir, { recursive: true, force: true });
});

const subject = (e164: string) => ({ hash: hashPhone(e164, KEY), region: 'US', masked: maskPhone(e164), e164, type: undefined });

async function engine(policy: Policy, conversion: { current: ConversionState }) {
  const spool = await Spool.open({
    dataDir: spoolDir,
    scope: { databaseUrl: `engine-guard-${engines.length}`, phoneKey: KEY },
    instanceId: 'engine-guard',
    maxBytes: 1 << 20,
    logger,
  });
  const e = new DecisionEngine({
    spool,
    pool,
    url: db.url,
    policies: fixedPolicy(policy),
    logger,
    metrics: createMetrics(),
    denyCache: true,
    conversionState: () => conversion.current,
  });
  engines.push(e);
  return e;
}

describe('DecisionEngine with sweep, conversion, blocks and safe', () => {
  it('denies a sweep, blocks the range with escalating blocks, and lets safe numbers through', async () => {
    const sweep = rule('sweep', 3, HOUR_MS, false, '', 'prefix');
    const unconverted = rule('conversion', 2, HOUR_MS, false, '', 'prefix');
    const p = makePolicy({
      number: [rule('number', 5, HOUR_MS)],
      conversion: { answeredAtLeastMs: 10_000, pendingAfterMs: 900_000, prefix: { digits: 3, rules: [unconverted] }, country: undefined },
      sweep: { digits: 3, rules: [sweep] },
      blocks: { escalateMs: [300_000, HOUR_MS, 12 * HOUR_MS], escalate: ['5m', '1h', '12h'], decayMs: 24 * HOUR_MS },
      safe: { prefixes: ['+1415555099'] },
    });
    const conversion = { current: { engaged: false, baselineLimits: new Map() } as ConversionState };
    const e = await engine(p, conversion);
    // Three numbers of +1415555 2xx: allowed (conversion rules idle: they count nothing).
    for (const n of ['+14155552001', '+14155552002', '+14155552003']) expect((await e.consume(subject(n))).allowed).toBe(true);
    // A number already counted is not a new one.
    expect((await e.consume(subject('+14155552001'))).allowed).toBe(true);
    const fourth = await e.consume(subject('+14155552004'));
    expect(fourth).toMatchObject({ allowed: false, rule: sweep.id, reason: 'sweep_rate_limit_exceeded', source: 'database' });
    // The range is now blocked for 5 minutes, numbers already counted included.
    const blocked = await e.consume(subject('+14155552002'));
    expect(blocked).toMatchObject({ allowed: false, rule: 'auto:block', reason: 'sweep_rate_limit_exceeded', limit: 3 });
    expect(blocked.retryAfterMs).toBeGreaterThan(299_000);
    expect(blocked.retryAfterMs).toBeLessThanOrEqual(300_000);
    // A check says the same, and a browser sees only allowed, reason, rule and whole minutes. A
    // number the sweep does not count yet waits for the sweep's own window too (3 of 3 for the
    // hour), not just for the block's end: a call then would still be denied.
    const check = await e.check(subject('+14155552005'));
    expect(check).toMatchObject({ allowed: false, rule: 'auto:block', reason: 'sweep_rate_limit_exceeded' });
    const reply = browserDecisionReply(undefined, '+14155552005', 'US', check, false);
    expect(reply).toEqual({
      type: 'rate_limit_status',
      id: undefined,
      phoneNumber: '+14155552005',
      allowed: false,
      reason: 'sweep_rate_limit_exceeded',
      rule: 'auto:block',
      retryAfterMs: HOUR_MS,
      region: 'US',
      source: 'database',
    });
    // The safe number in the same range is neither counted nor blocked.
    expect((await e.consume(subject('+14155550991'))).allowed).toBe(true);
    const { rows } = await pool.query<{ blocked_until: string; block_level: number }>(
      `SELECT blocked_until, block_level FROM rate_limit_counters WHERE rule_id = $1 AND key = '+14155552'`,
      [sweep.id],
    );
    expect(rows).toMatchObject([{ block_level: 1 }]);

    // Conversion rules engage once outcomes are reported: two unconverted calls per range.
    conversion.current = { engaged: true, baselineLimits: new Map() };
    expect((await e.consume(subject('+14155553001'))).allowed).toBe(true);
    expect((await e.consume(subject('+14155553001'))).allowed).toBe(true);
    expect(await e.consume(subject('+14155553001'))).toMatchObject({ allowed: false, rule: unconverted.id, reason: 'conversion_rate_limit_exceeded' });
    expect(await e.consume(subject('+14155553001'))).toMatchObject({ allowed: false, rule: 'auto:block', reason: 'conversion_rate_limit_exceeded' });
  });
});
