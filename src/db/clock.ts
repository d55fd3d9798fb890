// The database's clock in ms since the epoch, as SQL: every timestamp the daemons compare is the
// database's, so instances with skewed clocks still share one notion of "now".

/** The clock read as SQL text: `clock_timestamp()` (the instant), or `now()` (the transaction's start). */
function msSinceEpoch(clock: 'clock_timestamp()' | 'now()'): string {
  return `(extract(epoch FROM ${clock}) * 1000)::bigint`;
}

/** Now, to the ms: what decisions, peeks and lookups read (also given to src/db/functions as {{NOW_MS}}). */
export const NOW_MS = msSinceEpoch('clock_timestamp()');

/**
 * The transaction's start instead: a stable value the planner may read while planning. The
 * active-number readers (src/db/active-numbers.ts) use it: with the volatile clock (even through a
 * CTE) the planner guessed a third of the table as matching the epoch range, and read it all.
 */
export const STABLE_NOW_MS = msSinceEpoch('now()');
