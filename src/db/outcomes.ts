// Outcomes (migration 018, docs/protocol.md *Outcomes*): storing one per decision id, taking its
// call back from the conversion counters when it converted (src/core/policy/conversion.ts),
// reading a number's recent ones, and what the conversion rules learn from them (engaged, the
// baseline per region). Plain statements, no SQL function: each step is one short statement.
import type { Pool, PoolClient } from './pool.js';
import type { Outcome, OutcomeSource } from '../protocol/wire.js';
import { CONVERSION_ENGAGED_WITHIN_MS, UNKNOWN_REGION, type AggregateCounter, type ConversionPolicy } from '../core/policy/types.js';
import { NOW_MS } from './clock.js';
import { withTransaction } from './transaction.js';
import { baselineLimit } from '../core/policy/conversion.js';
import type { ConversionState } from '../core/policy/counters.js';

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
  /** When it was reported (this daemon's reading of the database clock); kept in the spool. */
  atMs: number;
  /**
   * The `unconverted` counters its call is taken back from when it is stored for the first time
   * (takeBackCounters in src/core/policy/conversion.ts, under the policy in force when it was
   * reported, with atMs as the report time); empty when it did not convert or came after
   * pending_after. Absent in spools written before take-backs: nothing is taken back for those.
   */
  takeBack?: readonly AggregateCounter[];
}

export type RecordResult = { stored: 'new' } | { stored: 'duplicate' } | { stored: 'conflict'; existing: Outcome };

/**
 * A call is taken back only if its decision counted it: conversion counters count only while the
 * rules are engaged (an outcome recorded within CONVERSION_ENGAGED_WITHIN_MS), which a daemon
 * learns when it records one or, from other daemons' outcomes, at its next refresh
 * (src/daemon/conversion-state.ts, at most a minute apart). So the outcome that engages the rules,
 * and any whose decision came within this margin after the first outcome, take nothing back:
 * their calls may never have been counted, and taking back another call instead would let a range
 * past its budget. Counting a converted call as unconverted errs the safe way.
 */
export const ENGAGED_MARGIN_MS = 2 * 60_000;

const INSERT_SQL = `
INSERT INTO rate_limit_outcomes (decision_id, phone_hash, region, range_label, decided_at, outcome, duration_ms, source, recorded_at)
VALUES ($1, $2, $3, $4, to_timestamp($5::BIGINT / 1000.0), $6, $7, $8, to_timestamp($9::BIGINT / 1000.0))
ON CONFLICT (decision_id) DO NOTHING
RETURNING 1`;

// $1 rule ids, $2 keys, $3 the decision instant. Locks the counters to take back from, in the
// global (rule_id, key) order every path locks counters in, and only when the rules were engaged
// at the decision (ENGAGED_MARGIN_MS; migration 020's index). A counter that does not exist has
// nothing to take back.
const LOCK_SQL = `
SELECT c.rule_id FROM rate_limit_counters AS c
 WHERE (c.rule_id, c.key) IN (SELECT r, k FROM unnest($1::TEXT[], $2::TEXT[]) AS t(r, k))
   -- The latest outcome recorded by then, one step down migration 020's index whatever the plan.
   AND (SELECT max(o.recorded_at) FROM rate_limit_outcomes AS o WHERE o.recorded_at <= to_timestamp(($3::BIGINT - ${ENGAGED_MARGIN_MS}) / 1000.0))
       > to_timestamp(($3::BIGINT - ${CONVERSION_ENGAGED_WITHIN_MS}) / 1000.0)
 ORDER BY c.rule_id, c.key
   FOR UPDATE OF c`;

/**
 * removeCall (src/core/policy/aggregate.ts) on each counter: $1 rule ids, $2 keys, $3 their
 * windows (ms), $4 the call's instant, $5 now (NULL: the database clock; tests give one). The
 * counter's own time is the later of now and its newest bucket; a call already out of the window
 * changes nothing; else the first bucket whose newest call is not before the call loses one,
 * unless it is at 0 already. test/db/outcome-takeback.test.ts holds this to removeCall.
 */
const TAKE_BACK_SQL = `
WITH t AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS t(rule_id, key, window_ms)),
x AS (
  SELECT c.rule_id, c.key,
         (SELECT min(v.o) FROM unnest(c.bucket_ts) WITH ORDINALITY AS v(ts, o) WHERE v.ts >= $4::BIGINT)::INTEGER AS i
    FROM rate_limit_counters AS c JOIN t ON c.rule_id = t.rule_id AND c.key = t.key
   WHERE $4::BIGINT > GREATEST(c.bucket_ts[cardinality(c.bucket_ts)], COALESCE($5::BIGINT, ${NOW_MS})) - t.window_ms
)
UPDATE rate_limit_counters AS c SET bucket_n[x.i] = c.bucket_n[x.i] - 1
  FROM x
 WHERE c.rule_id = x.rule_id AND c.key = x.key AND c.bucket_n[x.i] > 0
RETURNING c.rule_id`;

/**
 * removeCall on the stored counters, without the engagement check or locks of its own: the
 * caller holds the rows (takeBack), or is a test holding this to the model. Returns how many
 * counters lost a call.
 */
export async function removeCallInDatabase(
  client: Pick<PoolClient, 'query'>,
  counters: readonly AggregateCounter[],
  callAtMs: number,
  nowMs?: number,
): Promise<number> {
  if (counters.length === 0) return 0;
  const { rowCount } = await client.query(TAKE_BACK_SQL, [
    counters.map((c) => c.rule.id),
    counters.map((c) => c.key),
    counters.map((c) => c.rule.windowMs),
    callAtMs,
    nowMs ?? null,
  ]);
  return rowCount ?? 0;
}

/**
 * Takes the call of one newly stored outcome back from its counters, inside the transaction that
 * stored it (so a repeat, which stores nothing, takes nothing back), at the database clock.
 * Returns how many counters lost a call.
 */
async function takeBack(client: PoolClient, counters: readonly AggregateCounter[], callAtMs: number, nowMs: number | undefined): Promise<number> {
  if (counters.length === 0) return 0;
  const locked = await client.query(LOCK_SQL, [counters.map((c) => c.rule.id), counters.map((c) => c.key), callAtMs]);
  if (locked.rowCount === 0) return 0;
  return removeCallInDatabase(client, counters, callAtMs, nowMs);
}

export interface RecordOptions {
  /** Replaces the database clock for the take-back, ms since epoch; for tests only. */
  nowMs?: number;
}

const insertParams = (e: OutcomeEvent) => [e.decisionId, e.hash, e.region ?? null, e.range, e.decidedAtMs, e.outcome, e.durationMs ?? null, e.source, e.atMs];

/**
 * Stores one outcome unless its decision has one already (then says whether it was the same),
 * and, when stored, takes its call back from e.takeBack in the same transaction.
 */
export async function recordOutcome(pool: Pool, e: OutcomeEvent, opts: RecordOptions = {}): Promise<RecordResult> {
  return withTransaction(pool, async (client): Promise<RecordResult> => {
    const ins = await client.query(INSERT_SQL, insertParams(e));
    if (ins.rowCount === 1) {
      await takeBack(client, e.takeBack ?? [], e.decidedAtMs, opts.nowMs);
      return { stored: 'new' };
    }
    // A statement of its own, so it sees the row a concurrent insert committed while ours waited.
    const { rows } = await client.query<{ outcome: Outcome }>('SELECT outcome FROM rate_limit_outcomes WHERE decision_id = $1', [e.decisionId]);
    const existing = rows[0]?.outcome;
    if (existing === undefined) return { stored: 'new' };
    return existing === e.outcome ? { stored: 'duplicate' } : { stored: 'conflict', existing };
  });
}

/**
 * Stores outcomes reported while the database was away (the write-behind's replay). Idempotent: a
 * decision that has an outcome keeps it (the first reported wins), and only an outcome stored now
 * takes its call back, so a spool replayed twice counts each outcome once and takes each call
 * back once. Outcomes that take nothing back go in one statement; each that does goes in a
 * transaction of its own, like recordOutcome: a batch in one transaction would hold busy counters
 * (a country's) locked for the whole batch, and decisions would queue behind it. Returns how many
 * were not stored because their decision had one.
 */
export async function recordOutcomes(pool: Pool, events: readonly OutcomeEvent[], opts: RecordOptions = {}): Promise<number> {
  let notStored = 0;
  // In queue order (the first reported stands): runs of outcomes without a take-back, one
  // statement each, between those with one.
  for (let i = 0; i < events.length;) {
    if ((events[i]!.takeBack?.length ?? 0) > 0) {
      if ((await recordOutcome(pool, events[i]!, opts)).stored !== 'new') notStored++;
      i++;
      continue;
    }
    let j = i;
    while (j < events.length && (events[j]!.takeBack?.length ?? 0) === 0) j++;
    notStored += await insertPlain(pool, events.slice(i, j));
    i = j;
  }
  return notStored;
}

/** Outcomes that take nothing back, in one statement; returns how many were not stored. */
async function insertPlain(pool: Pool, plain: readonly OutcomeEvent[]): Promise<number> {
  const { rowCount } = await pool.query(
    `INSERT INTO rate_limit_outcomes (decision_id, phone_hash, region, range_label, decided_at, outcome, duration_ms, source, recorded_at)
     SELECT d, h, r, g, to_timestamp(t / 1000.0), o, u, s, to_timestamp(a / 1000.0)
       FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[], $7::INTEGER[], $8::TEXT[], $9::BIGINT[])
            AS x(d, h, r, g, t, o, u, s, a)
      -- One order for the rows a statement inserts, so two replays never wait on each other in a circle.
      ORDER BY d
     ON CONFLICT (decision_id) DO NOTHING`,
    [
      plain.map((e) => e.decisionId),
      plain.map((e) => e.hash),
      plain.map((e) => e.region ?? null),
      plain.map((e) => e.range),
      plain.map((e) => e.decidedAtMs),
      plain.map((e) => e.outcome),
      plain.map((e) => e.durationMs ?? null),
      plain.map((e) => e.source),
      plain.map((e) => e.atMs),
    ],
  );
  return plain.length - (rowCount ?? 0);
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

// ---- What the conversion rules learn from outcomes (src/daemon/conversion-state.ts, the CLI) ----

const DAY_MS = 86_400_000;
const REPORT_SKEW_MS = 5 * 60_000;

/** What `status`, `top` and `stats` say when a policy has conversion rules and they are idle. */
export const CONVERSION_IDLE_MESSAGE = `conversion rules idle: no outcomes reported in the last ${CONVERSION_ENGAGED_WITHIN_MS / DAY_MS} days`;

/** True when the database holds an outcome recorded within CONVERSION_ENGAGED_WITHIN_MS (before `nowMs`, for tests). */
export async function conversionEngaged(pool: Pick<Pool, 'query'>, nowMs?: number): Promise<boolean> {
  const { rows } = await pool.query<{ engaged: boolean }>(
    // The latest outcome: one step down migration 020's index, also when none is recent (an
    // EXISTS over a range was planned as a sequential scan, the whole table when none matched).
    // A report's time is its daemon's reading of this clock, which may run a little ahead.
    `WITH clock AS (SELECT COALESCE($1::BIGINT, ${NOW_MS}) AS now_ms)
     SELECT COALESCE((SELECT max(recorded_at) FROM rate_limit_outcomes WHERE recorded_at <= to_timestamp((now_ms + ${REPORT_SKEW_MS}) / 1000.0))
                     > to_timestamp((now_ms - ${CONVERSION_ENGAGED_WITHIN_MS}) / 1000.0), false) AS engaged
       FROM clock`,
    [nowMs ?? null],
  );
  return rows[0]!.engaged;
}

/**
 * Per region (UNKNOWN_REGION for numbers without one), the most converted calls decided in one
 * `windowMs`-long bin (bins aligned to the epoch) over the last `historyMs`: the input of the
 * baseline's limit (baselineLimit in src/core/policy/conversion.ts). Regions without a converted
 * call are absent. One index-only scan of migration 018's (region, decided_at) index, which
 * carries outcome and duration.
 */
export async function mostConvertedPerRegion(
  pool: Pick<Pool, 'query'>,
  q: { windowMs: number; historyMs: number; answeredAtLeastMs: number; nowMs?: number },
): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ region: string; most: number }>(
    `SELECT region, max(n)::INTEGER AS most FROM (
       SELECT COALESCE(region, '${UNKNOWN_REGION}') AS region, floor(extract(epoch FROM decided_at) * 1000 / $1::BIGINT) AS bin, count(*) AS n
         FROM rate_limit_outcomes
        WHERE decided_at > to_timestamp((COALESCE($4::BIGINT, ${NOW_MS}) - $2::BIGINT) / 1000.0)
          AND (outcome = 'verified' OR (outcome = 'answered' AND duration_ms >= $3::BIGINT))
        GROUP BY 1, 2) AS bins
      GROUP BY region`,
    [q.windowMs, q.historyMs, q.answeredAtLeastMs, q.nowMs ?? null],
  );
  return new Map(rows.map((r) => [r.region, r.most]));
}

/**
 * conversion.country.baseline's limit per region (regions with no converted call are absent: they
 * get the floor), from the outcomes of its history: what the daemon (src/daemon/conversion-state.ts)
 * re-reads now and then and the admin commands read once per run.
 */
export async function readBaselineLimits(pool: Pick<Pool, 'query'>, conversion: ConversionPolicy): Promise<Map<string, number>> {
  const limits = new Map<string, number>();
  const baseline = conversion.country?.baseline;
  if (!baseline) return limits;
  const most = await mostConvertedPerRegion(pool, {
    windowMs: baseline.rule.windowMs,
    historyMs: baseline.historyMs,
    answeredAtLeastMs: conversion.answeredAtLeastMs,
  });
  for (const [region, n] of most) limits.set(region, baselineLimit(baseline, n));
  return limits;
}

/**
 * The conversion rules' state as a daemon would hold it after a fresh read (src/daemon/conversion-state.ts
 * keeps it between reads): for the admin commands, which read it once per run.
 */
export async function readConversionState(pool: Pick<Pool, 'query'>, conversion: ConversionPolicy | undefined): Promise<ConversionState> {
  if (!conversion) return { engaged: false, baselineLimits: new Map() };
  const engaged = await conversionEngaged(pool);
  return { engaged, baselineLimits: engaged ? await readBaselineLimits(pool, conversion) : new Map() };
}
