// Aggregate rules' usage for `ratelimit stats` and `top`: the busiest keys of each prefix,
// country and global rule (rate_limit_counters, migration 006), counted in the rule's window
// the way the decisions count them (src/core/policy/aggregate.ts `used`: a bucket counts while
// its newest call is inside the window).
import type { Pool } from './pool.js';

const NOW_MS = `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;

export interface AggregateRuleRef {
  id: string;
  limit: number;
  windowMs: number;
}

export interface AggregateUsageRow {
  ruleId: string;
  /** `+1415555`, a region, or `*`. */
  key: string;
  used: number;
}

/**
 * The `perRule` keys of each rule closest to their limit (then busiest), skipping keys with
 * nothing in the window. One statement; counters touched outside the window are not read.
 */
export async function readAggregateUsage(pool: Pool, rules: readonly AggregateRuleRef[], perRule: number): Promise<{ nowMs: number; rows: AggregateUsageRow[] }> {
  const { rows } = await pool.query<{ now_ms: number; rule_id: string | null; key: string; used: number }>({
    name: 'ratelimit_aggregate_usage',
    text: `WITH n AS (SELECT ${NOW_MS} AS now_ms),
           r AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) AS r(rule_id, lim, window_ms)),
           u AS (
             SELECT c.rule_id, c.key, r.lim,
                    (SELECT COALESCE(sum(b.n), 0) FROM unnest(c.bucket_ts, c.bucket_n) AS b(ts, n)
                      WHERE b.ts > n.now_ms - r.window_ms)::int AS used
               FROM r JOIN rate_limit_counters AS c ON c.rule_id = r.rule_id, n
              WHERE c.last_at > n.now_ms - r.window_ms
           ),
           ranked AS (
             SELECT u.*, row_number() OVER (PARTITION BY rule_id ORDER BY used::float8 / lim DESC, key) AS rank
               FROM u WHERE used > 0
           )
           SELECT n.now_ms, ranked.rule_id, ranked.key, ranked.used
             FROM n LEFT JOIN ranked ON ranked.rank <= $4
            ORDER BY ranked.rule_id, ranked.rank`,
    values: [rules.map((r) => r.id), rules.map((r) => r.limit), rules.map((r) => r.windowMs), perRule],
  });
  return {
    nowMs: rows[0]!.now_ms,
    rows: rows.filter((r) => r.rule_id !== null).map((r) => ({ ruleId: r.rule_id!, key: r.key, used: r.used })),
  };
}
