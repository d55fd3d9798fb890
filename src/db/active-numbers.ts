// The active-number set (migrations 011, 013, 023): which numbers had activity (a call or a denial)
// in which 10-minute epoch, written by statement triggers (src/db/functions/mark_active.sql: one
// set-based insert per statement) only for numbers whose activity enters a new epoch. `stats`
// and `top` read the numbers of a window through it instead of scanning every number ever seen.
import type { Pool } from './pool.js';
import { STABLE_NOW_MS } from './clock.js';

/** The epoch length; src/db/functions/active_epoch_ms.sql gets it as {{ACTIVE_EPOCH_MS}}. */
export const ACTIVE_EPOCH_MS = 600_000;
/**
 * Epochs older than this are pruned. Readers of a longer window fall back to scanning the whole
 * table (correct, slower): a day covers the default windows, and the set stays small.
 */
export const ACTIVE_RETENTION_MS = 25 * 3_600_000;
/** The longest window the set answers for: one epoch is kept beyond it for the rounding. */
export const ACTIVE_MAX_WINDOW_MS = ACTIVE_RETENTION_MS - ACTIVE_EPOCH_MS;

// The readers' clock is STABLE_NOW_MS (src/db/clock.ts): now(), which the planner can read, so
// an epoch bound is an index condition.
export { STABLE_NOW_MS };

/** A number's latest activity, for a query over `phone_rate_limits AS p`. */
export const ACTIVITY_SQL = `GREATEST(COALESCE(p.last_call_at, 0), COALESCE(p.last_denied_at, 0))`;

/**
 * A FROM item naming every number active after `sinceSql` (an SQL expression in ms) as
 * `p`, with its whole row: through the active set when `windowMs` fits in its retention, else
 * the whole table. Either way only rows active after `sinceSql` come out.
 */
export function activeRowsSql(sinceSql: string, windowMs: number): string {
  if (windowMs > ACTIVE_MAX_WINDOW_MS) {
    return `(SELECT p.* FROM phone_rate_limits AS p WHERE ${ACTIVITY_SQL} > ${sinceSql}) AS p`;
  }
  // Each number's row is fetched by a correlated subquery, i.e. one primary-key probe per active
  // number whatever the planner estimates: a join could turn into a scan of the whole table,
  // the very cost this set exists to avoid. OFFSET 0 keeps the row fetched once, not per column.
  return `(SELECT (s.r).* FROM (
             SELECT (SELECT p FROM phone_rate_limits AS p WHERE p.phone_hash = a.phone_hash) AS r
               FROM (SELECT DISTINCT a.phone_hash FROM rate_limit_active AS a
                      WHERE a.epoch >= (${sinceSql}) / ratelimit_active_epoch_ms()) AS a
             OFFSET 0) AS s
           WHERE GREATEST(COALESCE((s.r).last_call_at, 0), COALESCE((s.r).last_denied_at, 0)) > ${sinceSql}) AS p`;
}

// Deleted per statement, so a prune fits the daemon's statement timeout however much is due;
// a call takes at most PRUNE_SLICES slices (the next heartbeat's cleanup goes on).
const PRUNE_SLICE_ROWS = 20_000;
const PRUNE_SLICES = 10;

/** Deletes epochs no reader needs any more, oldest first, in bounded slices; returns how many rows went. */
export async function pruneActiveNumbers(pool: Pool, retentionMs: number = ACTIVE_RETENTION_MS): Promise<number> {
  let total = 0;
  for (let i = 0; i < PRUNE_SLICES; i++) {
    const { rowCount } = await pool.query({
      name: 'ratelimit_prune_active',
      // By ctid: the set has no key (migration 013), and an entry is an immutable fact, so the
      // row found is the row deleted.
      text: `DELETE FROM rate_limit_active WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM rate_limit_active
                WHERE epoch < (${STABLE_NOW_MS} - $1::bigint) / ratelimit_active_epoch_ms()
                ORDER BY epoch LIMIT $2))`,
      values: [retentionMs, PRUNE_SLICE_ROWS],
    });
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < PRUNE_SLICE_ROWS) break;
  }
  return total;
}
