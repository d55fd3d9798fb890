// src/daemon/conversion-state.ts against a real database: idle until an outcome is recorded within
// 7 days, engaged at once by an outcome this daemon records, baseline limits per region from the
// history of converted outcomes, and a database that cannot be read keeps the last state.
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ConversionPolicy, Policy } from '../../src/core/policy/types.js';
import { createPool } from '../../src/db/pool.js';
import { recordOutcomes, type OutcomeEvent } from '../../src/db/outcomes.js';
import { ConversionStateSource } from '../../src/daemon/conversion-state.js';
import { migratedTestDatabase } from '../helpers/fixture.js';
import { policy, rule } from '../helpers/policy.js';

const db = migratedTestDatabase({ max: 4 });
const logger = pino({ level: 'silent' });
const DAY = 86_400_000;
let seq = 0;
const sources: ConversionStateSource[] = [];

afterEach(() => {
  for (const s of sources.splice(0)) s.stop();
});

function conversion(floor: number): ConversionPolicy {
  return {
    answeredAtLeastMs: 10_000,
    pendingAfterMs: 900_000,
    prefix: undefined,
    country: {
      rules: [],
      baseline: { factor: 0.5, floor, historyMs: 14 * DAY, rule: { ...rule('conversion', floor, DAY), id: 'conversion:country:baseline' } },
    },
  };
}

function source(p: Policy, refreshMs = 50, pool = db.pool): { s: ConversionStateSource; policies: { current: { policy: Policy } } } {
  const policies = { current: { policy: p } };
  const s = new ConversionStateSource({ pool, policies, logger, refreshMs });
  sources.push(s);
  return { s, policies };
}

const converted = (region: string | undefined, decidedAtMs: number): OutcomeEvent => ({
  decisionId: `cs${seq++}`,
  hash: 'd'.repeat(64),
  region,
  range: '+4420794600',
  decidedAtMs,
  outcome: 'verified',
  durationMs: undefined,
  source: 'http',
  atMs: decidedAtMs + 1_000,
});

describe('the conversion state', () => {
  it('is idle with no outcome, engaged at once by one recorded here, and by one recorded elsewhere at the next read', async () => {
    const here = source(policy({ conversion: conversion(20) }), 60_000);
    await here.s.start();
    expect(here.s.current()).toEqual({ engaged: false, baselineLimits: new Map() });
    here.s.recorded();
    expect(here.s.current().engaged).toBe(true);
    // A read that finds nothing in the database (the outcome may still be in the spool) keeps it engaged.
    await here.s.refresh();
    expect(here.s.current().engaged).toBe(true);

    const elsewhere = source(policy({ conversion: conversion(20) }));
    await elsewhere.s.start();
    expect(elsewhere.s.current().engaged).toBe(false);
    // Another daemon records one: this one learns it at its next periodic read.
    await recordOutcomes(db.pool, [converted('GB', Date.now() - 60_000)]);
    await vi.waitFor(() => expect(elsewhere.s.current().engaged).toBe(true), { timeout: 5_000, interval: 20 });
  });

  it('computes the baseline per region from converted outcomes, and again for a new policy', async () => {
    const now = Date.now();
    const bin = Math.floor(now / DAY) * DAY;
    const rows: OutcomeEvent[] = [];
    // FR: 60 converted in one day-long bin (a bin that has fully passed), 10 in another.
    for (let i = 0; i < 60; i++) rows.push(converted('FR', bin - 2 * DAY + i));
    for (let i = 0; i < 10; i++) rows.push(converted('FR', bin - 3 * DAY + i));
    for (let i = 0; i < 3; i++) rows.push(converted(undefined, bin - 2 * DAY + i));
    await recordOutcomes(db.pool, rows);
    const { s, policies } = source(policy({ conversion: conversion(20) }));
    await s.start();
    const state = s.current();
    expect(state.engaged).toBe(true);
    // max(20, ceil(0.5 × 60)) = 30; ZZ: max(20, 2) = 20. GB from the first test: 1 converted, floor.
    expect(state.baselineLimits.get('FR')).toBe(30);
    expect(state.baselineLimits.get('ZZ')).toBe(20);
    expect(state.baselineLimits.get('GB')).toBe(20);
    // A policy with a higher floor: read again without waiting for the minute.
    policies.current = { policy: policy({ conversion: conversion(40) }) };
    s.current();
    await vi.waitFor(() => expect(s.current().baselineLimits.get('FR')).toBe(40), { timeout: 5_000, interval: 20 });
  });

  it('keeps the last state when the database cannot be read', async () => {
    const broken = createPool({ url: db.url, max: 1 });
    const { s } = source(policy({ conversion: conversion(20) }), 60_000, broken);
    await s.start();
    expect(s.current().engaged).toBe(true);
    await broken.end();
    await s.refresh();
    expect(s.current().engaged).toBe(true);
  });
});
