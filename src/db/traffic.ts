// Traffic by country and by 1,000-number range with no rule needed (`top`, `stats`, `block --top`):
// read from what every decision already writes, the numbers' rows (region, phone_masked, the
// calls in their window) and the active set (migrations 011, 013: one row per number per
// 10-minute epoch in which it was active, kept about a day).
//
// A range is read from the stored mask: a mask in the range form `+14155552•••` (digits, then at
// least three bullets, nothing after) is exactly the number's 1,000-number range (or a wider one,
// never narrower). Older masks (`+1415•••••71`) hide middle digits and name no range: such numbers
// count for their country only, and the reader says how many there were.
import type { Pool } from './pool.js';
import { activeRowsSql, STABLE_NOW_MS } from './active-numbers.js';

/** The SQL for a row's range key (the mask itself, when it is in the range form), else NULL. */
export const RANGE_SQL = `CASE WHEN p.phone_masked ~ '^\\+[0-9]+•{3,}$' THEN p.phone_masked END`;

export interface TrafficKeyNow {
  key: string;
  /** The country itself, or a range's country (its numbers' region). */
  country: string;
  /** Numbers with a call or a denial in the window. */
  numbers: number;
  /** Allowed calls in the window (a number row keeps its calls for its longest number window). */
  calls: number;
  denials: number;
}

export interface TrafficNow {
  nowMs: number;
  windowMs: number;
  countries: TrafficKeyNow[];
  ranges: TrafficKeyNow[];
  /** Active numbers whose stored mask names no range (written before masks were range-shaped). */
  unranged: number;
}

/**
 * The last `windowMs` by country and by range, busiest first, at most `perKind` ranges (every
 * country: there are about 250). Only numbers active in the window are read.
 */
export async function readTrafficNow(pool: Pool, windowMs: number, perKind = 200): Promise<TrafficNow> {
  const { rows } = await pool.query<{
    now_ms: string;
    kind: string | null;
    key: string | null;
    country: string;
    numbers: number;
    calls: number;
    denials: number;
  }>({
    name: 'ratelimit_traffic_now',
    text: `WITH n AS (SELECT ${STABLE_NOW_MS} AS now_ms),
           r AS (
             SELECT COALESCE(p.region, 'ZZ') AS country, ${RANGE_SQL} AS range,
                    (SELECT count(*) FROM unnest(p.calls) AS t WHERE t > n.now_ms - $1)::int AS calls,
                    CASE WHEN p.denied_window_start > n.now_ms - $1 THEN p.denied_in_window ELSE 0 END AS denials
               FROM n, ${activeRowsSql(`(${STABLE_NOW_MS} - $1::bigint)`, windowMs)}
           ),
           g AS (
             SELECT 'country' AS kind, country AS key, country, count(*)::int AS numbers, sum(calls)::int AS calls, sum(denials)::int AS denials
               FROM r GROUP BY country
             UNION ALL
             SELECT * FROM (
               SELECT 'range', COALESCE(range, ''), max(country), count(*)::int, sum(calls)::int, sum(denials)::int
                 FROM r GROUP BY range ORDER BY range IS NULL DESC, 4 DESC, 5 DESC, 2 LIMIT $2 + 1) AS top_ranges
           )
           SELECT n.now_ms::text AS now_ms, g.* FROM n LEFT JOIN g ON true
            ORDER BY g.kind, g.numbers DESC, g.calls DESC, g.key`,
    values: [windowMs, perKind],
  });
  const out: TrafficNow = { nowMs: Number(rows[0]!.now_ms), windowMs, countries: [], ranges: [], unranged: 0 };
  for (const r of rows) {
    if (r.kind === null || r.key === null) continue;
    const row = { key: r.key, country: r.country, numbers: r.numbers, calls: r.calls, denials: r.denials };
    if (r.kind === 'country') out.countries.push(row);
    else if (r.key === '') out.unranged = r.numbers;
    else out.ranges.push(row);
  }
  return out;
}

export interface TrafficBaseline {
  /** The span read, ending where the "now" window starts. */
  spanMs: number;
  /** 10-minute epochs with any activity in the span: 0 means no baseline yet. */
  epochs: number;
  /** Number-epochs (a number active in an epoch counts once for it) in all, and per key. */
  total: number;
  countries: Map<string, number>;
  ranges: Map<string, number>;
}

/**
 * What normal looks like: each country's and range's share of the numbers active per 10-minute
 * epoch over `spanMs` before the last `excludeMs` (the window compared with it). The active set
 * is the only history of every number (a calls array keeps its number's window only), so the
 * span is at most its retention, about a day.
 */
export async function readTrafficBaseline(pool: Pool, spanMs: number, excludeMs: number): Promise<TrafficBaseline> {
  const { rows } = await pool.query<{ kind: string; key: string; n: number; epochs: number }>({
    name: 'ratelimit_traffic_baseline',
    text: `WITH n AS (SELECT ${STABLE_NOW_MS} AS now_ms),
           -- One primary-key probe per (number, epoch), like active-numbers.ts's readers.
           b AS (
             SELECT a.epoch, p.country, p.range
               FROM n, rate_limit_active AS a
               CROSS JOIN LATERAL (SELECT COALESCE(p.region, 'ZZ') AS country, ${RANGE_SQL} AS range
                                     FROM phone_rate_limits AS p WHERE p.phone_hash = a.phone_hash) AS p
              WHERE a.epoch >= (n.now_ms - $1::bigint - $2::bigint) / ratelimit_active_epoch_ms()
                -- Excluding nothing (a whole day up to now): the current epoch too.
                AND ($2::bigint = 0 OR a.epoch < (n.now_ms - $2::bigint) / ratelimit_active_epoch_ms())
           )
           SELECT 'country' AS kind, country AS key, count(*)::int AS n, (SELECT count(DISTINCT epoch) FROM b)::int AS epochs FROM b GROUP BY country
           UNION ALL
           SELECT 'range', range, count(*)::int, 0 FROM b WHERE range IS NOT NULL GROUP BY range`,
    values: [spanMs, excludeMs],
  });
  const out: TrafficBaseline = { spanMs, epochs: 0, total: 0, countries: new Map(), ranges: new Map() };
  for (const r of rows) {
    if (r.kind === 'country') {
      out.countries.set(r.key, r.n);
      out.total += r.n;
      out.epochs = r.epochs;
    } else out.ranges.set(r.key, r.n);
  }
  return out;
}

export interface CallRow {
  hash: string;
  country: string;
  range: string | null;
  /** Allowed calls in the window, ms since epoch. */
  calls: number[];
}

/** Every number active in the last `windowMs` with its allowed calls in it (for the what-if replay). */
export async function readRecentCalls(pool: Pool, windowMs: number): Promise<{ nowMs: number; rows: CallRow[] }> {
  const { rows } = await pool.query<{ now_ms: string; phone_hash: string | null; country: string; range: string | null; calls: string[] | null }>({
    name: 'ratelimit_recent_calls',
    text: `WITH n AS (SELECT ${STABLE_NOW_MS} AS now_ms)
           SELECT n.now_ms::text AS now_ms, r.* FROM n LEFT JOIN LATERAL (
             SELECT p.phone_hash, COALESCE(p.region, 'ZZ') AS country, ${RANGE_SQL} AS range,
                    ARRAY(SELECT t FROM unnest(p.calls) AS t WHERE t > n.now_ms - $1 ORDER BY t)::text[] AS calls
               FROM ${activeRowsSql(`(${STABLE_NOW_MS} - $1::bigint)`, windowMs)}
           ) AS r ON true`,
    values: [windowMs],
  });
  return {
    nowMs: Number(rows[0]!.now_ms),
    rows: rows
      .filter((r) => r.phone_hash !== null && (r.calls?.length ?? 0) > 0)
      .map((r) => ({ hash: r.phone_hash!, country: r.country, range: r.range, calls: r.calls!.map(Number) })),
  };
}
