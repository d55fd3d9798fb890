// What `ratelimit stats` and `top` read: the window's totals and regions, the hottest numbers
// (both through the active-number set of migration 011, so their cost follows the numbers active
// in the window, not every number ever seen), the numbers tracked (the planner's estimate on a
// big table, said so), and the aggregate rules' busiest keys (rate_limit_counters, 006), counted
// the way the decisions count them (src/core/policy/aggregate.ts `used`: a bucket counts while
// its newest call is inside the window).
import type { Pool } from './pool.js';
import type { LogPolicy } from '../core/policy/log.js';
import { ACTIVITY_SQL, activeRowsSql, STABLE_NOW_MS } from './active-numbers.js';

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
export async function readAggregateUsage(
  pool: Pool,
  rules: readonly AggregateRuleRef[],
  perRule: number,
): Promise<{ nowMs: number; rows: AggregateUsageRow[] }> {
  const { rows } = await pool.query<{ now_ms: number; rule_id: string | null; key: string; used: number }>({
    name: 'ratelimit_aggregate_usage',
    text: `WITH n AS (SELECT ${STABLE_NOW_MS} AS now_ms),
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

// Below this size the table is counted exactly (a few tens of ms); above it, the estimate.
const EXACT_COUNT_BELOW_BYTES = 64 * 1024 * 1024;

export interface TrackedCount {
  tracked: number;
  /** true: PostgreSQL's estimate (pg_class, scaled to the table's current size), not a count. */
  estimated: boolean;
}

/**
 * Numbers with a row. Counting 10M rows takes seconds, so a big table is estimated the way the
 * planner does: rows per page at the last ANALYZE times the pages it has now.
 */
export async function countTracked(pool: Pool): Promise<TrackedCount> {
  const { rows } = await pool.query<{ reltuples: number; relpages: number; bytes: number; block: number }>({
    name: 'ratelimit_tracked_estimate',
    text: `SELECT c.reltuples::float8 AS reltuples, c.relpages, pg_relation_size(c.oid)::float8 AS bytes,
                  current_setting('block_size')::int AS block
             FROM pg_class AS c WHERE c.oid = 'phone_rate_limits'::regclass`,
  });
  const r = rows[0]!;
  if (r.bytes >= EXACT_COUNT_BELOW_BYTES && r.reltuples >= 0 && r.relpages > 0) {
    return { tracked: Math.round((r.reltuples / r.relpages) * (r.bytes / r.block)), estimated: true };
  }
  const exact = await pool.query<{ n: number }>('SELECT count(*)::float8 AS n FROM phone_rate_limits');
  return { tracked: exact.rows[0]!.n, estimated: false };
}

export interface RegionStats {
  region: string;
  /** Numbers with a call or a denial in the window. */
  active: number;
  atLimit: number;
  calls: number;
  denials: number;
}

export interface Stats {
  nowMs: number;
  windowMs: number;
  tracked: number;
  trackedEstimated: boolean;
  active: number;
  atLimit: number;
  calls: number;
  denials: number;
  resets: number;
  regions: RegionStats[];
}

/** A number policy's rules as the parallel (max, window) arrays the SQL functions take. */
export function ruleArrays(policy: Pick<LogPolicy, 'rules'>): [number[], number[]] {
  return [policy.rules.map((r) => r.limit), policy.rules.map((r) => r.windowMs)];
}

/**
 * Totals over the primary rule's window. "At limit" means some rule would deny a call now, so it
 * looks at the numbers active within the longest rule's window. Denials are counted per number
 * over its current denial window (which starts at its first denial once the previous one
 * expired), so they approximate "the last window". Only numbers active in those windows are read.
 */
export async function readStats(pool: Pool, policy: Pick<LogPolicy, 'rules'>, windowMs: number = policy.rules[0]!.windowMs): Promise<Stats> {
  const [maxes, windows] = ruleArrays(policy);
  const horizonMs = Math.max(windowMs, ...windows);
  const [tracked, { rows }] = await Promise.all([
    countTracked(pool),
    pool.query<{ now_ms: number; region: string | null; active: number; at_limit: number; calls: number; denials: number; resets: number }>(
      `WITH n AS (SELECT ${STABLE_NOW_MS} AS now_ms),
       per_row AS (
         SELECT COALESCE(p.region, 'unknown') AS region,
                ${ACTIVITY_SQL} > n.now_ms - $3 AS active,
                (SELECT count(*) FROM unnest(p.calls) AS t WHERE t > n.now_ms - $3) AS calls,
                CASE WHEN p.denied_window_start > n.now_ms - $3 THEN p.denied_in_window ELSE 0 END AS denials,
                EXISTS (SELECT 1 FROM unnest($1::int[], $2::bigint[]) AS r(m, w)
                         WHERE cardinality(p.calls) >= r.m
                           AND p.calls[cardinality(p.calls) - r.m + 1] > n.now_ms - r.w) AS at_limit
           FROM n, ${activeRowsSql(`(${STABLE_NOW_MS} - $4::bigint)`, horizonMs)}
       )
       SELECT n.now_ms, g.region, g.active, g.at_limit, g.calls, g.denials,
              (SELECT count(*) FROM rate_limit_resets, n AS n2 WHERE reset_at > to_timestamp((n2.now_ms - $3) / 1000.0))::int AS resets
         FROM n LEFT JOIN (
           SELECT region, count(*) FILTER (WHERE active)::int AS active, count(*) FILTER (WHERE at_limit)::int AS at_limit,
                  COALESCE(sum(calls), 0)::int AS calls, COALESCE(sum(denials), 0)::int AS denials
             FROM per_row GROUP BY region
           HAVING count(*) FILTER (WHERE active OR at_limit) > 0
         ) AS g ON true
        ORDER BY g.calls DESC NULLS LAST, g.region`,
      [maxes, windows, windowMs, horizonMs],
    ),
  ]);
  const regions: RegionStats[] = rows
    .filter((r) => r.region !== null)
    .map((r) => ({ region: r.region!, active: r.active, atLimit: r.at_limit, calls: r.calls, denials: r.denials }));
  const sum = (k: keyof Omit<RegionStats, 'region'>) => regions.reduce((acc, r) => acc + r[k], 0);
  return {
    nowMs: rows[0]!.now_ms,
    windowMs,
    tracked: tracked.tracked,
    trackedEstimated: tracked.estimated,
    active: sum('active'),
    atLimit: sum('atLimit'),
    calls: sum('calls'),
    denials: sum('denials'),
    resets: rows[0]!.resets,
    regions,
  };
}

export type HotSort = 'denials' | 'calls' | 'recent';

export interface HotNumber {
  hash: string;
  masked: string | null;
  region: string | null;
  calls: number[];
  deniedInWindow: number;
  lastCallAt: number | null;
  lastDeniedAt: number | null;
}

const HOT_ORDER: Record<HotSort, string> = {
  denials: 'denials DESC, used DESC, last_activity DESC, phone_hash',
  calls: 'used DESC, denials DESC, last_activity DESC, phone_hash',
  recent: 'last_activity DESC, phone_hash',
};

/**
 * The numbers most active in the window (the primary number rule's), read from the active set.
 * `hidePrefixes`: numbers whose mask starts with one of these (blocked ranges) are left out, so a
 * blocked pump does not fill the list.
 */
export async function hottestNumbers(
  pool: Pool,
  window: number | Pick<LogPolicy, 'rules'>,
  limit: number,
  sort: HotSort = 'denials',
  hidePrefixes: readonly string[] = [],
): Promise<{ nowMs: number; rows: HotNumber[] }> {
  // A window in ms, or a policy whose primary rule gives it (a policy may have no number rule).
  const windowMs = typeof window === 'number' ? window : window.rules[0]!.windowMs;
  const { rows } = await pool.query<{
    now_ms: number;
    phone_hash: string | null;
    phone_masked: string | null;
    region: string | null;
    calls: number[];
    denials: number;
    last_call_at: number | null;
    last_denied_at: number | null;
  }>(
    `WITH n AS (SELECT ${STABLE_NOW_MS} AS now_ms)
     SELECT n.now_ms, h.* FROM n LEFT JOIN LATERAL (
       SELECT p.phone_hash, p.phone_masked, p.region, p.calls, p.last_call_at, p.last_denied_at,
              CASE WHEN p.denied_window_start > n.now_ms - $1 THEN p.denied_in_window ELSE 0 END AS denials,
              (SELECT count(*) FROM unnest(p.calls) AS t WHERE t > n.now_ms - $1) AS used,
              ${ACTIVITY_SQL} AS last_activity
         FROM ${activeRowsSql(`(${STABLE_NOW_MS} - $1::bigint)`, windowMs)}
        WHERE p.phone_masked IS NULL OR NOT p.phone_masked LIKE ANY ($3::text[])
        ORDER BY ${HOT_ORDER[sort]}
        LIMIT $2
     ) AS h ON true`,
    // Prefixes are '+' and digits (parsePrefix): nothing in them is a LIKE wildcard.
    [windowMs, limit, hidePrefixes.map((p) => `${p}%`)],
  );
  return {
    nowMs: rows[0]!.now_ms,
    rows: rows
      .filter((r) => r.phone_hash !== null)
      .map((r) => ({
        hash: r.phone_hash!,
        masked: r.phone_masked,
        region: r.region,
        calls: r.calls,
        deniedInWindow: r.denials,
        lastCallAt: r.last_call_at,
        lastDeniedAt: r.last_denied_at,
      })),
  };
}
