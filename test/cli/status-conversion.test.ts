// `status` lists the counters a daemon would check now: conversion rules only once outcomes
// engaged them (with the region's baseline), and neither conversion nor sweep for a safe number.

import { describe, expect, it } from 'vitest';
import { statusCommand } from '../../src/cli/status-report.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { migratedTestDatabase, TEST_KEY } from '../helpers/fixture.js';
import { seedOutcomes } from '../helpers/guard.js';

const db = migratedTestDatabase({ max: 2 });
const fallback = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 3_600_000 });
const ids = async (phone: string, policy = fallback) =>
  (await statusCommand(db.pool, TEST_KEY, policy, phone)).rules.map((r) => `${r.id} ${r.key ?? ''}`.trim());

describe('status and the conversion rules', () => {
  it('shows no conversion counter while idle, then the prefix, country and baseline ones once an outcome is reported', async () => {
    expect(await ids('+14155552671')).toEqual(['number:1h', 'sweep:prefix:1h +14155552']);
    // 30 converted US calls yesterday: the baseline is max(floor, factor × 30).
    await seedOutcomes(db.pool, { region: 'US', range: '+14155552', outcome: 'verified', count: 30, agoMs: 20 * 3_600_000 });
    const report = await statusCommand(db.pool, TEST_KEY, fallback, '+14155552671');
    expect(report.rules.map((r) => `${r.id} ${r.key ?? ''}`.trim())).toEqual([
      'number:1h',
      'conversion:prefix:1h +14155552',
      'conversion:country:baseline US',
      'sweep:prefix:1h +14155552',
    ]);
    const baseline = fallback.conversion!.country!.baseline!;
    expect(report.rules.find((r) => r.id === 'conversion:country:baseline')?.limit).toBe(Math.max(baseline.floor, Math.ceil(baseline.factor * 30)));
    expect(report.conversionIdle).toBe(false);
  });

  it('shows neither conversion nor sweep counters for a number under a safe prefix', async () => {
    const parsed = parsePolicyFile(
      [
        'number: {limits: [{limit: 2, window: 1h}]}',
        'sweep: {prefix: {digits: 3, distinct: [{limit: 10, window: 1h}]}}',
        "safe: {prefixes: ['+1415555']}",
        '',
      ].join('\n'),
    );
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    expect(await ids('+14155552671', parsed.policy)).toEqual(['number:1h']);
    expect(await ids('+14165552671', parsed.policy)).toEqual(['number:1h', 'sweep:prefix:1h +14165552']);
  });
});
