// `status` lists the counters a daemon would check now: conversion rules only once outcomes
// engaged them (with the region's baseline), and neither conversion nor sweep for a safe number.

import { describe, expect, it } from 'vitest';
import { statusCommand } from '../../src/cli/status-report.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { hashPhone } from '../../src/core/phone.js';
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

describe('status of a safe number', () => {
  it('is not denied by a block_after block, as the daemon decides it', async () => {
    const parsed = parsePolicyFile(
      ['number: {limits: [{limit: 2, window: 1h}], block_after: {denials: 3, within: 1h, for: 1h}}', "safe: {prefixes: ['+1415555']}", ''].join('\n'),
    );
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    const blockedRow = async (phone: string) =>
      db.pool.query(
        `INSERT INTO phone_rate_limits (phone_hash, region, phone_masked, calls, call_count, window_start, blocked_until, block_level)
         VALUES ($1, 'US', $2, '{}', 0, 0, (extract(epoch from now()) * 1000)::bigint + 3600000, 1)`,
        [hashPhone(phone, TEST_KEY), `${phone.slice(0, -3)}•••`],
      );
    await blockedRow('+14155553671');
    await blockedRow('+14165553671');
    const safe = await statusCommand(db.pool, TEST_KEY, parsed.policy, '+14155553671');
    expect(safe.allowed).toBe(true);
    const other = await statusCommand(db.pool, TEST_KEY, parsed.policy, '+14165553671');
    expect(other).toMatchObject({ allowed: false, rule: 'number:block_after' });
  });
});
