// The per-minute rollup of the fleet's decisions (migration 009): every daemon's heartbeat adds
// what it decided since its last beat, so `ratelimit stats` can say "denials in the last window,
// by reason", IP denials included, even for daemons that are gone.
import type { Pool } from './pool.js';

/** Denials are kept under their reason with rule ''; shadow denials under this reason and their rule id. */
export const SHADOW_REASON = 'shadow';
/** Consumes a block entry denied, under this reason and the entry (`prefix:+4470`, `number:<hash>`): `ratelimit list`'s hits. */
export const LIST_HIT_REASON = 'list_hit';
/** The rollup only answers "the last window"; a day covers every window worth showing. */
export const DECISION_COUNTS_RETENTION_MS = 24 * 3_600_000;

export interface DecisionCountDelta {
  reason: string;
  rule: string;
  n: number;
}

/** One statement for any number of (reason, rule) deltas, all counted in the database's current minute. */
export async function addDecisionCounts(pool: Pool, deltas: readonly DecisionCountDelta[]): Promise<void> {
  const rows = deltas.filter((d) => d.n > 0);
  if (rows.length === 0) return;
  await pool.query({
    name: 'ratelimit_add_decision_counts',
    text: `INSERT INTO rate_limit_decision_counts AS c (minute, reason, rule, n)
           SELECT date_trunc('minute', NOW()), d.reason, d.rule, d.n
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d(reason, rule, n)
           ON CONFLICT (minute, reason, rule) DO UPDATE SET n = c.n + EXCLUDED.n`,
    values: [rows.map((d) => d.reason), rows.map((d) => d.rule), rows.map((d) => Math.round(d.n))],
  });
}

/** Consumes each block entry denied since `sinceMs` ago (the rollup keeps a day), by `targetType:target`. */
export async function readListHits(pool: Pool, sinceMs: number = DECISION_COUNTS_RETENTION_MS): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ rule: string; n: string }>({
    name: 'ratelimit_read_list_hits',
    text: `SELECT rule, sum(n)::text AS n FROM rate_limit_decision_counts
            WHERE reason = $1 AND minute > NOW() - make_interval(secs => $2::float8 / 1000) - interval '1 minute'
            GROUP BY rule`,
    values: [LIST_HIT_REASON, Math.min(sinceMs, DECISION_COUNTS_RETENTION_MS)],
  });
  return new Map(rows.map((r) => [r.rule, Number(r.n)]));
}

/** Deletes minutes older than `olderThanMs`; returns how many rows went. */
export async function pruneDecisionCounts(pool: Pool, olderThanMs: number = DECISION_COUNTS_RETENTION_MS): Promise<number> {
  const { rowCount } = await pool.query(`DELETE FROM rate_limit_decision_counts WHERE minute < NOW() - make_interval(secs => $1::float8 / 1000)`, [
    olderThanMs,
  ]);
  return rowCount ?? 0;
}

export interface DecisionCounts {
  /** reason -> denials in the window, every daemon together. */
  deniedByReason: Record<string, number>;
  /** shadow rule id -> consumes it would have denied in the window. */
  shadowByRule: Record<string, number>;
}

/**
 * Sums the minutes that overlap the window ending now. Whole minutes: the oldest one may hold
 * up to a minute from before the window, which a per-minute rollup cannot tell apart.
 */
export async function readDecisionCounts(pool: Pool, windowMs: number): Promise<DecisionCounts> {
  const { rows } = await pool.query<{ reason: string; rule: string; n: string }>({
    name: 'ratelimit_read_decision_counts',
    text: `SELECT reason, rule, sum(n)::text AS n FROM rate_limit_decision_counts
            WHERE minute > date_trunc('minute', NOW() - make_interval(secs => $1::float8 / 1000)) - interval '1 minute'
            GROUP BY reason, rule ORDER BY sum(n) DESC, reason, rule`,
    values: [Math.min(windowMs, DECISION_COUNTS_RETENTION_MS)],
  });
  const out: DecisionCounts = { deniedByReason: {}, shadowByRule: {} };
  for (const r of rows) {
    // Already counted under number_blocked: these only say which entry denied.
    if (r.reason === LIST_HIT_REASON) continue;
    if (r.reason === SHADOW_REASON) out.shadowByRule[r.rule] = (out.shadowByRule[r.rule] ?? 0) + Number(r.n);
    else out.deniedByReason[r.reason] = (out.deniedByReason[r.reason] ?? 0) + Number(r.n);
  }
  return out;
}
