// What the operator reads about the guard that learns from outcomes (issue #19, docs/protocol.md
// *Outcomes*, `conversion`, `sweep`, `blocks`): conversion by country from rate_limit_outcomes
// (migration 018), the automatic blocks in force on ranges (rate_limit_counters.blocked_until,
// migration 019) and on numbers (phone_rate_limits.blocked_until, indexed by migration 021), and
// whether any outcome is recent enough for conversion rules to be engaged. `top`, `stats`,
// `list` and the metrics read these; `unlist` lifts blocks through src/db/lists.ts.
import type { Pool } from './pool.js';
import { NOW_MS } from './clock.js';
import { DECISION_ID_HORIZON_MS } from '../core/decision-id.js';
import { CONVERSION_ENGAGED_WITHIN_MS, type Policy } from '../core/policy/types.js';

export interface CountryConversionRow {
  /** libphonenumber's region, `ZZ` when unknown. */
  region: string;
  /** Outcomes reported for decisions made in the window. */
  outcomes: number;
  /** Of those: verified, or answered for at least answered_at_least. */
  converted: number;
}

/**
 * Outcomes and conversions per country for decisions made from `windowMs` ago until `untilAgoMs`
 * ago (an indexed range scan over decided_at), most outcomes first.
 */
export async function readConversionByCountry(pool: Pool, windowMs: number, answeredAtLeastMs: number, untilAgoMs = 0): Promise<CountryConversionRow[]> {
  const { rows } = await pool.query<{ region: string; outcomes: number; converted: number }>({
    name: 'ratelimit_conversion_by_country',
    text: `SELECT COALESCE(region, 'ZZ') AS region, count(*)::int AS outcomes,
                  count(*) FILTER (WHERE outcome = 'verified' OR (outcome = 'answered' AND duration_ms >= $2))::int AS converted
             FROM rate_limit_outcomes
            WHERE decided_at > clock_timestamp() - $1::bigint * interval '1 millisecond'
              AND ($3::bigint = 0 OR decided_at <= clock_timestamp() - $3::bigint * interval '1 millisecond')
            GROUP BY 1
            ORDER BY 2 DESC, 1`,
    values: [windowMs, answeredAtLeastMs, untilAgoMs],
  });
  return rows;
}

/**
 * The newest time an outcome was recorded (ms), among outcomes recorded within `withinMs`, or
 * null when there is none. Decision ids expire after DECISION_ID_HORIZON_MS, so an outcome recorded
 * since then decided at most that long before: the scan stays on decided_at's index.
 */
export async function lastOutcomeRecordedMs(pool: Pool, withinMs: number): Promise<number | null> {
  const { rows } = await pool.query<{ at_ms: string | null }>({
    name: 'ratelimit_last_outcome',
    text: `SELECT (extract(epoch FROM max(recorded_at)) * 1000)::bigint::text AS at_ms
             FROM rate_limit_outcomes
            WHERE decided_at > clock_timestamp() - ($1::bigint + $2::bigint) * interval '1 millisecond'
              AND recorded_at > clock_timestamp() - $1::bigint * interval '1 millisecond'`,
    values: [withinMs, DECISION_ID_HORIZON_MS],
  });
  return rows[0]?.at_ms == null ? null : Number(rows[0].at_ms);
}

export interface RangeBlockRow {
  /** `sweep:prefix:1h` or `conversion:prefix:1h`: the counter whose rule tripped the block. */
  ruleId: string;
  /** The range key, `+4477009` (the E.164 number without its last digits). */
  key: string;
  untilMs: number;
  level: number;
}

export interface NumberBlockRow {
  hash: string;
  /** The stored mask (`+44770090•••`), null for rows written before masks were stored. */
  masked: string | null;
  region: string | null;
  untilMs: number;
  /** 0: a block_after block made without a `blocks` group (no escalation). */
  level: number;
}

export interface AutoBlocks {
  /** The database clock, ms. */
  nowMs: number;
  ranges: RangeBlockRow[];
  numbers: NumberBlockRow[];
}

// Numbers blocked at once worth listing: beyond this, the count says it.
const MAX_NUMBER_BLOCKS = 500;

/**
 * Automatic blocks in force now: ranges from the counters (partial index of migration 019),
 * numbers from their rows (partial index of migration 021), soonest to end last.
 */
export async function readAutoBlocks(pool: Pool, maxNumbers = MAX_NUMBER_BLOCKS): Promise<AutoBlocks & { numbersTotal: number }> {
  const { rows } = await pool.query<{
    now_ms: string;
    kind: 'r' | 'n' | null;
    a: string | null;
    b: string | null;
    region: string | null;
    until_ms: string | null;
    level: number | null;
    total: number | null;
  }>({
    name: 'ratelimit_auto_blocks',
    text: `WITH n AS (SELECT ${NOW_MS} AS now_ms),
           r AS (SELECT 'r'::text AS kind, c.rule_id AS a, c.key AS b, NULL::text AS region, c.blocked_until AS until_ms, c.block_level AS level
                   FROM rate_limit_counters AS c, n WHERE c.blocked_until > n.now_ms),
           p AS (SELECT p.phone_hash, p.phone_masked, p.region, p.blocked_until, p.block_level
                   FROM phone_rate_limits AS p, n WHERE p.blocked_until > n.now_ms),
           pn AS (SELECT 'n'::text AS kind, phone_hash AS a, phone_masked AS b, region, blocked_until AS until_ms, block_level AS level
                    FROM p ORDER BY blocked_until DESC, phone_hash LIMIT $1)
           SELECT n.now_ms::text AS now_ms, x.kind, x.a, x.b, x.region, x.until_ms::text AS until_ms, x.level,
                  (SELECT count(*) FROM p)::int AS total
             FROM n LEFT JOIN (SELECT * FROM r UNION ALL SELECT * FROM pn) AS x ON true
            ORDER BY x.until_ms DESC NULLS LAST, x.a, x.b`,
    values: [maxNumbers],
  });
  const out: AutoBlocks & { numbersTotal: number } = { nowMs: Number(rows[0]!.now_ms), ranges: [], numbers: [], numbersTotal: rows[0]!.total ?? 0 };
  for (const r of rows) {
    if (r.kind === 'r') out.ranges.push({ ruleId: r.a!, key: r.b!, untilMs: Number(r.until_ms), level: r.level ?? 0 });
    else if (r.kind === 'n') out.numbers.push({ hash: r.a!, masked: r.b, region: r.region, untilMs: Number(r.until_ms), level: r.level ?? 0 });
  }
  return out;
}

/** The automatic blocks in force on one number and on the range keys it belongs to (`status`). */
export async function readBlocksOf(
  pool: Pool,
  hashes: readonly string[],
  counters: ReadonlyArray<{ ruleId: string; key: string }>,
): Promise<{ nowMs: number; number: { untilMs: number; level: number } | null; ranges: RangeBlockRow[] }> {
  const { rows } = await pool.query<{ now_ms: string; kind: string | null; a: string | null; b: string | null; until_ms: string | null; level: number | null }>(
    {
      name: 'ratelimit_blocks_of',
      text: `WITH n AS (SELECT ${NOW_MS} AS now_ms)
           SELECT n.now_ms::text AS now_ms, x.* FROM n LEFT JOIN (
             SELECT 'n' AS kind, p.phone_hash AS a, NULL AS b, p.blocked_until::text AS until_ms, p.block_level AS level
               FROM phone_rate_limits AS p, n AS n1 WHERE p.phone_hash = ANY($1::text[]) AND p.blocked_until > n1.now_ms
             UNION ALL
             SELECT 'r', c.rule_id, c.key, c.blocked_until::text, c.block_level
               FROM unnest($2::text[], $3::text[]) AS w(r, k)
               JOIN rate_limit_counters AS c ON c.rule_id = w.r AND c.key = w.k, n AS n2
              WHERE c.blocked_until > n2.now_ms
           ) AS x ON true
           ORDER BY x.until_ms DESC NULLS LAST`,
      values: [hashes, counters.map((c) => c.ruleId), counters.map((c) => c.key)],
    },
  );
  const nowMs = Number(rows[0]!.now_ms);
  const own = rows.find((r) => r.kind === 'n');
  return {
    nowMs,
    number: own ? { untilMs: Number(own.until_ms), level: own.level ?? 0 } : null,
    ranges: rows.filter((r) => r.kind === 'r').map((r) => ({ ruleId: r.a!, key: r.b!, untilMs: Number(r.until_ms), level: r.level ?? 0 })),
  };
}

export interface RuleUsageMax {
  ruleId: string;
  /** The highest used/limit over the rule's keys with anything in the window (0 when none). */
  maxRatio: number;
  /** Keys at or over their limit. */
  atLimit: number;
}

/**
 * For each rule: the highest usage ratio over its keys, and how many keys are at their limit
 * (metrics). Reads only counters touched within the rule's window.
 */
export async function readRuleUsageMax(pool: Pool, rules: ReadonlyArray<{ id: string; limit: number; windowMs: number }>): Promise<RuleUsageMax[]> {
  if (rules.length === 0) return [];
  const { rows } = await pool.query<{ rule_id: string; max_ratio: number | null; at_limit: number }>({
    name: 'ratelimit_rule_usage_max',
    text: `WITH n AS (SELECT ${NOW_MS} AS now_ms),
           r AS (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) AS r(rule_id, lim, window_ms)),
           u AS (
             SELECT r.rule_id, r.lim,
                    (SELECT COALESCE(sum(b.n), 0) FROM unnest(c.bucket_ts, c.bucket_n) AS b(ts, n) WHERE b.ts > n.now_ms - r.window_ms)::int AS used
               FROM r JOIN rate_limit_counters AS c ON c.rule_id = r.rule_id, n
              WHERE c.last_at > n.now_ms - r.window_ms
           )
           SELECT r.rule_id, max(u.used::float8 / r.lim) AS max_ratio, count(*) FILTER (WHERE u.used >= r.lim)::int AS at_limit
             FROM r LEFT JOIN u ON u.rule_id = r.rule_id GROUP BY r.rule_id ORDER BY r.rule_id`,
    values: [rules.map((r) => r.id), rules.map((r) => r.limit), rules.map((r) => r.windowMs)],
  });
  return rows.map((r) => ({ ruleId: r.rule_id, maxRatio: r.max_ratio ?? 0, atLimit: r.at_limit }));
}

/** What the daemon's guard gauges show (src/daemon/metrics.ts): the database's state, the same from every daemon. */
export interface GuardReadings {
  /** Automatic blocks in force now, by escalation level (0: block_after without a `blocks` group) and target. */
  autoBlocks: Array<{ level: number; target: 'range' | 'number'; count: number }>;
  /** Per conversion and sweep rule: the highest usage ratio over its keys, and the keys at their limit. */
  rules: RuleUsageMax[];
  /** null: the policy has no conversion rules; else whether they are idle (no outcome within CONVERSION_ENGAGED_WITHIN_MS). */
  conversionIdle: boolean | null;
}

/**
 * One reading of the guard's gauges under `policy`. Range blocks count only for the policy's range
 * rules (a counter of a rule no longer in the policy denies nothing). The baseline rule's limit is
 * per region and computed by the daemon, so its usage is measured against its floor.
 */
export async function readGuardReadings(pool: Pool, policy: Policy): Promise<GuardReadings> {
  const c = policy.conversion;
  const rangeRules = [...(c?.prefix?.rules ?? []), ...(policy.sweep?.rules ?? [])];
  const rules = [...rangeRules, ...(c?.country?.rules ?? []), ...(c?.country?.baseline ? [c.country.baseline.rule] : [])];
  const hasConversion = rules.some((r) => r.group === 'conversion');
  const [blocks, usage, last] = await Promise.all([
    pool.query<{ target: 'range' | 'number'; level: number; n: number }>({
      name: 'ratelimit_auto_block_levels',
      text: `WITH n AS (SELECT ${NOW_MS} AS now_ms)
             SELECT 'range' AS target, c.block_level AS level, count(*)::int AS n FROM rate_limit_counters AS c, n
              WHERE c.blocked_until > n.now_ms AND c.rule_id = ANY($1::text[]) GROUP BY c.block_level
             UNION ALL
             SELECT 'number', p.block_level, count(*)::int FROM phone_rate_limits AS p, n
              WHERE p.blocked_until > n.now_ms GROUP BY p.block_level`,
      values: [rangeRules.map((r) => r.id)],
    }),
    readRuleUsageMax(pool, rules),
    hasConversion ? lastOutcomeRecordedMs(pool, CONVERSION_ENGAGED_WITHIN_MS) : Promise.resolve(null),
  ]);
  return {
    autoBlocks: blocks.rows.map((r) => ({ target: r.target, level: r.level, count: r.n })),
    rules: usage,
    conversionIdle: hasConversion ? last === null : null,
  };
}
