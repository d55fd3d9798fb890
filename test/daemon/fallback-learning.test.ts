// What the memory fallback knows of numbers comes from services only (docs/protocol.md,
// *WebSocket*): anyone can send browser or anonymous checks, and if those taught the fallback, a
// flood of them over other numbers would push a victim's state out of its bounded memory, so
// that during the next outage the victim's quota would start from zero. In-process, against
// real PostgreSQL, with the fallback's memory made small.

import { DecisionIds } from '../../src/core/decision-id.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ListIndex } from '../../src/core/lists.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { DecisionTally } from '../../src/daemon/tally.js';
import { Decider } from '../../src/daemon/decider.js';
import { DecisionEngine } from '../../src/daemon/engine/engine.js';
import { Spool } from '../../src/daemon/engine/spool.js';
import { IpRules } from '../../src/daemon/ip-rules.js';
import { createMetrics } from '../../src/daemon/metrics.js';
import { fixedPolicy } from '../../src/daemon/policy-source.js';
import type { Role } from '../../src/daemon/auth.js';
import { migratedTestDatabase } from '../helpers/fixture.js';

const KEY = 'fallback-learning-key-0123456789abcdef';
const logger = pino({ level: 'silent' });
const MEMORY_KEYS = 4;
const db = migratedTestDatabase({ max: 4 });
let spoolDir: string;
const engines: DecisionEngine[] = [];

beforeAll(async () => {
  spoolDir = await mkdtemp(path.join(tmpdir(), 'ratelimit-fallback-learning-'));
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  await rm(spoolDir, { recursive: true, force: true });
});

async function daemon(name: string): Promise<{
  engine: DecisionEngine;
  ask: (type: 'rate_limit_check' | 'rate_limit_consume', phoneNumber: string, role: Role) => Promise<Record<string, unknown>>;
}> {
  const policies = fixedPolicy(defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 1_000_000, ipWindowMs: 1_000 }));
  const metrics = createMetrics();
  const spool = await Spool.open({
    dataDir: spoolDir,
    scope: { databaseUrl: `fallback-learning-${name}`, phoneKey: KEY },
    instanceId: name,
    maxBytes: 1 << 20,
    logger,
  });
  const engine = new DecisionEngine({
    spool,
    pool: db.pool,
    policies,
    logger,
    metrics,
    denyCache: false,
    memoryKeys: MEMORY_KEYS,
    memoryCounters: MEMORY_KEYS,
    probeInitialDelayMs: 600_000,
  });
  engines.push(engine);
  const decider = new Decider({
    engine,
    policies: { ...policies, lists: new ListIndex([]) },
    ipRules: new IpRules(),
    metrics,
    tally: new DecisionTally(),
    logger,
    phoneKey: KEY,
    decisionIds: new DecisionIds(KEY),
  });
  return {
    engine,
    ask: async (type, phoneNumber, role) => (await decider.decide({ type, phoneNumber }, role, '127.0.0.1')) as unknown as Record<string, unknown>,
  };
}

const others = (first: number) => Array.from({ length: 3 * MEMORY_KEYS }, (_, i) => `+1415555${String(first + i).padStart(4, '0')}`);

describe('the fallback learns numbers from services only', () => {
  it('browser and anonymous checks of other numbers do not evict a victim the daemon saw consume', async () => {
    const { engine, ask } = await daemon('evict');
    const victim = '+14155550100';
    for (let i = 0; i < 2; i++) expect(await ask('rate_limit_consume', victim, 'service')).toMatchObject({ allowed: true, source: 'database' });
    // An attacker checks many other numbers, as a browser origin and as an anonymous client.
    for (const n of others(2000)) expect(await ask('rate_limit_check', n, 'browser')).toMatchObject({ allowed: true, source: 'database' });
    for (const n of others(3000)) expect(await ask('rate_limit_check', n, 'open')).toMatchObject({ allowed: true, source: 'database' });

    engine.startInMemory(new Error('outage for the test'));
    expect(engine.mode).toBe('memory');
    expect(await ask('rate_limit_check', victim, 'service')).toMatchObject({ allowed: false, source: 'memory', used: 2 });
    expect(await ask('rate_limit_consume', victim, 'service')).toMatchObject({ type: 'rate_limit_exceeded', source: 'memory' });
  });

  it('a service check still teaches it what another daemon counted', async () => {
    const other = await daemon('other');
    const { engine, ask } = await daemon('learner');
    const victim = '+14155550200';
    for (let i = 0; i < 2; i++) expect(await other.ask('rate_limit_consume', victim, 'service')).toMatchObject({ allowed: true });
    // A browser's check of the same number teaches nothing; the service's does.
    expect(await ask('rate_limit_check', victim, 'browser')).toMatchObject({ allowed: false, source: 'database' });
    const anonymous = '+14155550201';
    for (let i = 0; i < 2; i++) expect(await other.ask('rate_limit_consume', anonymous, 'service')).toMatchObject({ allowed: true });
    expect(await ask('rate_limit_check', anonymous, 'open')).toMatchObject({ allowed: false, source: 'database' });
    expect(await ask('rate_limit_check', victim, 'service')).toMatchObject({ allowed: false, source: 'database' });

    engine.startInMemory(new Error('outage for the test'));
    expect(await ask('rate_limit_check', victim, 'service')).toMatchObject({ allowed: false, source: 'memory', used: 2 });
    // Known only from an anonymous check: memory never learnt it (at most K×N per window in an outage).
    expect(await ask('rate_limit_check', anonymous, 'service')).toMatchObject({ allowed: true, source: 'memory', used: 0 });
  });
});
