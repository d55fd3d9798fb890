// Outcomes (migration 018, docs/protocol.md *Outcomes*): storing one per decision id, reading a
// number's recent ones. Plain statements, no SQL function: each is one INSERT or SELECT.
import type { Pool } from './pool.js';
import type { Outcome, OutcomeSource } from '../protocol/wire.js';

/** An outcome on its way to the table (in the write-behind queue and the spool while the database is down). */
export interface OutcomeEvent {
  decisionId: string;
  hash: string;
  region: string | undefined;
  /** The 1,000-number range (src/core/decision-id.ts rangeLabel). */
  range: string;
  decidedAtMs: number;
  outcome: Outcome;
  durationMs: number | undefined;
  source: OutcomeSource;
  /** When it was reported (this daemon's reading of the database clock). */
  atMs: number;
}

export type RecordResult = { stored: 'new' } | { stored: 'duplicate' } | { stored: 'conflict'; existing: Outcome };

// One statement: the insert, and what was there before it when it was not inserted. Both read
// the statement's snapshot, so a row committed by a concurrent insert after it began is seen by
// neither; recordOutcome then asks again.
const RECORD_SQL = `
WITH ins AS (
  INSERT INTO rate_limit_outcomes (decision_id, phone_hash, region, range_label, decided_at, outcome, duration_ms, source, recorded_at)
  VALUES ($1, $2, $3, $4, to_timestamp($5::BIGINT / 1000.0), $6, $7, $8, to_timestamp($9::BIGINT / 1000.0))
  ON CONFLICT (decision_id) DO NOTHING
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM ins) AS inserted,
       (SELECT outcome FROM rate_limit_outcomes WHERE decision_id = $1) AS existing`;

/** Stores one outcome unless its decision has one already: then says whether it was the same. */
export async function recordOutcome(pool: Pool, e: OutcomeEvent): Promise<RecordResult> {
  const { rows } = await pool.query<{ inserted: boolean; existing: Outcome | null }>(RECORD_SQL, [
    e.decisionId,
    e.hash,
    e.region ?? null,
    e.range,
    e.decidedAtMs,
    e.outcome,
    e.durationMs ?? null,
    e.source,
    e.atMs,
  ]);
  let { inserted, existing } = rows[0]!;
  if (!inserted && existing === null) {
    const again = await pool.query<{ outcome: Outcome }>('SELECT outcome FROM rate_limit_outcomes WHERE decision_id = $1', [e.decisionId]);
    existing = again.rows[0]?.outcome ?? null;
  }
  if (inserted || existing === null) return { stored: 'new' };
  return existing === e.outcome ? { stored: 'duplicate' } : { stored: 'conflict', existing };
}

/**
 * Stores outcomes decided while the database was away (the write-behind's replay), in one
 * statement. Idempotent: a decision that has an outcome keeps it (the first reported wins), so a
 * spool replayed twice counts each outcome once. Returns how many were not stored for that reason.
 */
export async function recordOutcomes(pool: Pool, events: readonly OutcomeEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  const { rowCount } = await pool.query(
    `INSERT INTO rate_limit_outcomes (decision_id, phone_hash, region, range_label, decided_at, outcome, duration_ms, source, recorded_at)
     SELECT d, h, r, g, to_timestamp(t / 1000.0), o, u, s, to_timestamp(a / 1000.0)
       FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[], $7::INTEGER[], $8::TEXT[], $9::BIGINT[])
            AS x(d, h, r, g, t, o, u, s, a)
     ON CONFLICT (decision_id) DO NOTHING`,
    [
      events.map((e) => e.decisionId),
      events.map((e) => e.hash),
      events.map((e) => e.region ?? null),
      events.map((e) => e.range),
      events.map((e) => e.decidedAtMs),
      events.map((e) => e.outcome),
      events.map((e) => e.durationMs ?? null),
      events.map((e) => e.source),
      events.map((e) => e.atMs),
    ],
  );
  return events.length - (rowCount ?? 0);
}

export interface StoredOutcome {
  decidedAtMs: number;
  recordedAtMs: number;
  outcome: Outcome;
  durationMs: number | null;
  source: OutcomeSource;
}

/** A number's most recent outcomes (newest first), under any of its hashes (a key rotation gives two). */
export async function recentOutcomes(pool: Pool, hashes: readonly string[], limit = 10): Promise<StoredOutcome[]> {
  const { rows } = await pool.query<{ decided_ms: string; recorded_ms: string; outcome: Outcome; duration_ms: number | null; source: OutcomeSource }>(
    `SELECT (extract(epoch FROM decided_at) * 1000)::BIGINT AS decided_ms, (extract(epoch FROM recorded_at) * 1000)::BIGINT AS recorded_ms,
            outcome, duration_ms, source
       FROM rate_limit_outcomes WHERE phone_hash = ANY($1::TEXT[]) ORDER BY decided_at DESC LIMIT $2`,
    [hashes, limit],
  );
  return rows.map((r) => ({
    decidedAtMs: Number(r.decided_ms),
    recordedAtMs: Number(r.recorded_ms),
    outcome: r.outcome,
    durationMs: r.duration_ms,
    source: r.source,
  }));
}
