// The guard's gauges (issue #19): automatic blocks by level and target, conversion and sweep usage
// per rule, idle conversion rules; read from the database when scraped, never a number, a range
// or a country in a label. In process under a policy with conversion and sweep rules, and through
// a real daemon's /metrics (its default policy).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migratedTestDatabase } from '../helpers/fixture.js';
import { dbNowMs, guardPolicy, seedCounter, seedNumberBlock, seedOutcomes } from '../helpers/guard.js';
import { createMetrics } from '../../src/daemon/metrics.js';
import { readGuardReadings } from '../../src/db/guard-stats.js';
import { assertBuilt, httpRequest, startDaemon, stopAll, type DaemonProcess } from '../helpers/fixture.js';

const db = migratedTestDatabase({ max: 4 });

function sample(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

beforeAll(async () => {
  const now = await dbNowMs(db.pool);
  await seedCounter(db.pool, { ruleId: 'sweep:prefix:1h', key: '+447700900', calls: 10, atMs: now - 60_000, blockedUntil: now + 3_600_000, blockLevel: 2 });
  await seedCounter(db.pool, { ruleId: 'sweep:prefix:1h', key: '+447700901', calls: 10, atMs: now - 60_000, blockedUntil: now + 300_000, blockLevel: 1 });
  await seedCounter(db.pool, { ruleId: 'sweep:prefix:1h', key: '+14155552', calls: 4, atMs: now - 60_000 });
  await seedCounter(db.pool, { ruleId: 'conversion:prefix:1h', key: '+447700900', calls: 3, atMs: now - 60_000 });
  // Outside its window: not counted.
  await seedCounter(db.pool, { ruleId: 'conversion:prefix:1h', key: '+447700902', calls: 5, atMs: now - 2 * 3_600_000 });
  await seedNumberBlock(db.pool, { hash: 'a'.repeat(64), masked: '+447700900•••', region: 'GB', blockedUntil: now + 60_000, level: 3 });
});

describe('guard gauges', () => {
  it('report blocks by level and target, usage per rule and idle conversion rules, with no range in any label', async () => {
    const metrics = createMetrics();
    metrics.watchGuard(() => readGuardReadings(db.pool, guardPolicy()));
    const text = await metrics.registry.metrics();
    expect(sample(text, 'ratelimit_auto_blocks').sort()).toEqual([
      'ratelimit_auto_blocks{level="1",target="number"} 0',
      'ratelimit_auto_blocks{level="1",target="range"} 1',
      'ratelimit_auto_blocks{level="2",target="range"} 1',
      'ratelimit_auto_blocks{level="3",target="number"} 1',
    ]);
    expect(sample(text, 'ratelimit_rule_usage_ratio')).toEqual(
      expect.arrayContaining(['ratelimit_rule_usage_ratio{rule="sweep:prefix:1h"} 1', 'ratelimit_rule_usage_ratio{rule="conversion:prefix:1h"} 0.6']),
    );
    expect(sample(text, 'ratelimit_rule_keys_at_limit')).toEqual(
      expect.arrayContaining(['ratelimit_rule_keys_at_limit{rule="sweep:prefix:1h"} 2', 'ratelimit_rule_keys_at_limit{rule="conversion:prefix:1h"} 0']),
    );
    // No outcome at all: the policy's conversion rules are idle.
    expect(sample(text, 'ratelimit_conversion_idle')).toEqual(['ratelimit_conversion_idle 1']);
    for (const name of ['ratelimit_auto_blocks', 'ratelimit_rule_usage_ratio', 'ratelimit_rule_keys_at_limit']) {
      for (const line of sample(text, name)) expect(line).not.toMatch(/\+|"[A-Z]{2}"/);
    }

    // Within GUARD_READ_INTERVAL_MS a scrape does not read again; a new watch does.
    await seedOutcomes(db.pool, { region: 'GB', range: '+447700900', outcome: 'verified', count: 1, agoMs: 60_000 });
    expect(sample(await metrics.registry.metrics(), 'ratelimit_conversion_idle')).toEqual(['ratelimit_conversion_idle 1']);
    metrics.watchGuard(() => readGuardReadings(db.pool, guardPolicy()));
    expect(sample(await metrics.registry.metrics(), 'ratelimit_conversion_idle')).toEqual(['ratelimit_conversion_idle 0']);
  });

  it('keep the last reading when the database fails, and the scrape still answers', async () => {
    const metrics = createMetrics();
    metrics.watchGuard(() => readGuardReadings(db.pool, guardPolicy()));
    await metrics.registry.metrics();
    metrics.watchGuard(() => Promise.reject(new Error('connection refused')));
    const text = await metrics.registry.metrics();
    expect(sample(text, 'ratelimit_auto_blocks')).toContain('ratelimit_auto_blocks{level="2",target="range"} 1');
  });

  it('are read from a hanging database for at most a second per scrape', async () => {
    const metrics = createMetrics();
    metrics.watchGuard(() => new Promise(() => undefined));
    // Resolves (the scrape answers) although the reading never does; no timing asserted.
    expect(await metrics.registry.metrics()).toContain('ratelimit_conversion_idle');
  });
});

describe("a daemon's /metrics", () => {
  let daemon: DaemonProcess | undefined;
  afterAll(async () => {
    if (daemon) await stopAll([daemon]);
  });

  it('carries the guard gauges', async () => {
    assertBuilt();
    daemon = await startDaemon({ databaseUrl: db.url, env: {} });
    const res = await httpRequest(`${daemon.url}/metrics`);
    expect(res.status).toBe(200);
    expect(sample(res.text, 'ratelimit_auto_blocks')).toEqual(expect.arrayContaining(['ratelimit_auto_blocks{level="3",target="number"} 1']));
    expect(res.text).toContain('# TYPE ratelimit_rule_usage_ratio gauge');
    expect(sample(res.text, 'ratelimit_conversion_idle')).toEqual(['ratelimit_conversion_idle 0']);
  });
});
