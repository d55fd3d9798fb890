// src/db/outcomes.ts and the retention of outcomes (migration 018): one outcome per decision,
// whoever writes it first, however often it is written, and gone once past the id horizon.
import { describe, expect, it } from 'vitest';
import { DECISION_ID_HORIZON_MS } from '../../src/core/decision-id.js';
import { recentOutcomes, recordOutcome, recordOutcomes, type OutcomeEvent } from '../../src/db/outcomes.js';
import { pruneOnce } from '../../src/db/retention.js';
import { outcomeRetentionMs } from '../../src/core/policy/conversion.js';
import { policy, rule } from '../helpers/policy.js';
import { migratedTestDatabase } from '../helpers/fixture.js';

const db = migratedTestDatabase({ max: 8 });
const NOW = Date.UTC(2026, 11, 7, 12);
let seq = 0;

function event(over: Partial<OutcomeEvent> = {}): OutcomeEvent {
  seq++;
  return {
    decisionId: `d${seq}`,
    hash: 'a'.repeat(64),
    region: 'US',
    range: '+14155552',
    decidedAtMs: NOW - 60_000,
    outcome: 'answered',
    durationMs: 42_000,
    source: 'http',
    atMs: NOW,
    ...over,
  };
}

describe('outcomes in the database', () => {
  it('store one per decision: new, then duplicate, then conflict naming the stored one', async () => {
    const e = event();
    expect(await recordOutcome(db.pool, e)).toEqual({ stored: 'new' });
    expect(await recordOutcome(db.pool, e)).toEqual({ stored: 'duplicate' });
    expect(await recordOutcome(db.pool, { ...e, outcome: 'failed', durationMs: undefined })).toEqual({ stored: 'conflict', existing: 'answered' });
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM rate_limit_outcomes WHERE decision_id = $1', [e.decisionId]);
    expect(rows[0].n).toBe(1);
  });

  it('agree when many report one decision at once: one row, exactly one "new"', async () => {
    const e = event();
    const results = await Promise.all(Array.from({ length: 8 }, () => recordOutcome(db.pool, e)));
    expect(results.filter((r) => r.stored === 'new')).toHaveLength(1);
    expect(results.filter((r) => r.stored === 'duplicate')).toHaveLength(7);
  });

  it('replayed from a spool: idempotent, the first stored stands', async () => {
    const a = event({ hash: 'b'.repeat(64) });
    const b = event({ hash: 'b'.repeat(64), outcome: 'verified', durationMs: undefined, decidedAtMs: NOW - 30_000 });
    expect(await recordOutcomes(db.pool, [a, b])).toBe(0);
    expect(await recordOutcomes(db.pool, [a, { ...b, outcome: 'failed' }])).toBe(2);
    const recent = await recentOutcomes(db.pool, ['b'.repeat(64)]);
    expect(recent.map((r) => [r.outcome, r.durationMs, r.decidedAtMs])).toEqual([
      ['verified', null, NOW - 30_000],
      ['answered', 42_000, NOW - 60_000],
    ]);
  });

  it('are pruned once their decision is past the id horizon', async () => {
    const old = event({ decidedAtMs: NOW - DECISION_ID_HORIZON_MS - 1_000 });
    const young = event({ decidedAtMs: NOW - DECISION_ID_HORIZON_MS + 60_000 });
    await recordOutcomes(db.pool, [old, young]);
    // The policy's own horizon is shorter; the id horizon decides.
    const result = await pruneOnce(db.pool, { horizonMs: 3_600_000, auditRetentionMs: 90 * 86_400_000, nowMs: NOW, pauseMs: 0, wait: true });
    expect(result.counts.rate_limit_outcomes).toBeGreaterThanOrEqual(1);
    const { rows } = await db.pool.query<{ decision_id: string }>('SELECT decision_id FROM rate_limit_outcomes WHERE decision_id = ANY($1)', [
      [old.decisionId, young.decisionId],
    ]);
    expect(rows.map((r) => r.decision_id)).toEqual([young.decisionId]);
  });

  it('are kept for the conversion baseline’s history when it is longer than the id horizon', async () => {
    const DAY = 86_400_000;
    // The default policy's baseline: 14 days of history in 1-day bins.
    const baseline = { factor: 0.2, floor: 20, historyMs: 14 * DAY, rule: rule('conversion', 20, DAY) };
    const keepMs = outcomeRetentionMs(
      policy({ conversion: { answeredAtLeastMs: 10_000, pendingAfterMs: 900_000, prefix: undefined, country: { rules: [], baseline } } }),
    );
    expect(keepMs).toBe(15 * DAY);
    const inHistory = event({ decidedAtMs: NOW - 12 * DAY });
    const past = event({ decidedAtMs: NOW - 15 * DAY - 60_000 });
    await recordOutcomes(db.pool, [inHistory, past]);
    await pruneOnce(db.pool, { horizonMs: 3_600_000, outcomeRetentionMs: keepMs, auditRetentionMs: 90 * DAY, nowMs: NOW, pauseMs: 0, wait: true });
    const { rows } = await db.pool.query<{ decision_id: string }>('SELECT decision_id FROM rate_limit_outcomes WHERE decision_id = ANY($1)', [
      [inHistory.decisionId, past.decisionId],
    ]);
    expect(rows.map((r) => r.decision_id)).toEqual([inHistory.decisionId]);
  });
});
