// INTERIM, until issue #19's outcome path lands in src/db/outcomes.ts (engineer guard-outcomes):
// what the daemon will do with outcomes, so the drill's conversion rules are not judged without
// it. Two parts, each replaced by one call to src/db/outcomes.ts when it lands:
// - conversionStateAt: whether conversion rules are engaged (an outcome recorded within
//   CONVERSION_ENGAGED_WITHIN_MS) and each region's baseline limit, max(floor, ceil(factor × the
//   most converted calls in one window over the history)) (docs/protocol.md *Policy*);
// - takeBack: a converted outcome reported within pending_after takes its call back from the
//   conversion counters (removeCall in src/core/policy/aggregate.ts: the first bucket whose newest
//   call is not before the call loses one), in one statement per batch of outcomes.
import { CONVERSION_ENGAGED_WITHIN_MS, UNKNOWN_REGION, type Policy } from '../../src/core/policy/types.js';
import type { ConversionState } from '../../src/core/policy/counters.js';
import type { OutcomeEvent } from '../../src/db/outcomes.js';
import type { Pool } from '../../src/db/pool.js';
import { prefixKey } from '../../src/core/policy/counters.js';

export async function conversionStateAt(pool: Pool, policy: Policy, nowMs: number): Promise<ConversionState> {
  const b = policy.conversion?.country?.baseline;
  const { rows } = await pool.query<{ region: string | null; most: number | null; engaged: boolean }>(
    `WITH e AS (SELECT EXISTS (SELECT 1 FROM rate_limit_outcomes
                                WHERE recorded_at > to_timestamp(($1::BIGINT - ${CONVERSION_ENGAGED_WITHIN_MS}) / 1000.0)
                                  AND recorded_at <= to_timestamp($1::BIGINT / 1000.0)) AS engaged)
     SELECT r.region, r.most::INT AS most, e.engaged FROM e LEFT JOIN (
       SELECT region, max(n) AS most FROM (
         SELECT region, floor(extract(epoch FROM decided_at) * 1000 / $2::BIGINT) AS w, count(*) AS n FROM rate_limit_outcomes
          WHERE decided_at > to_timestamp(($1::BIGINT - $3::BIGINT) / 1000.0) AND decided_at <= to_timestamp($1::BIGINT / 1000.0)
            AND (outcome = 'verified' OR (outcome = 'answered' AND duration_ms >= $4))
          GROUP BY 1, 2) AS x GROUP BY 1) AS r ON true`,
    [nowMs, b?.rule.windowMs ?? 86_400_000, b?.historyMs ?? 0, policy.conversion?.answeredAtLeastMs ?? 0],
  );
  const limits = new Map<string, number>();
  if (b) {
    for (const r of rows)
      if (r.region !== null && r.most !== null) limits.set(r.region, Math.max(b.floor, Math.ceil(Number((b.factor * r.most).toPrecision(12)))));
  }
  return { engaged: rows[0]?.engaged ?? false, baselineLimits: limits };
}

/** Returns the statements it ran (0 or 1). */
export async function takeBack(pool: Pool, policy: Policy, events: readonly OutcomeEvent[]): Promise<number> {
  const c = policy.conversion;
  if (!c) return 0;
  const t = { rule: [] as string[], key: [] as string[], window: [] as number[], at: [] as number[] };
  const push = (rule: { id: string; windowMs: number }, key: string, at: number) => {
    t.rule.push(rule.id);
    t.key.push(key);
    t.window.push(rule.windowMs);
    t.at.push(at);
  };
  for (const e of events) {
    const converted = e.outcome === 'verified' || (e.outcome === 'answered' && (e.durationMs ?? 0) >= c.answeredAtLeastMs);
    if (!converted || e.atMs - e.decidedAtMs > c.pendingAfterMs) continue;
    // The range label drops 3 digits; prefixKey of it with digits - 3 more gives the rule's key.
    if (c.prefix) for (const r of c.prefix.rules) push(r, prefixKey(`${e.range}000`, c.prefix.digits), e.decidedAtMs);
    for (const r of c.country?.rules ?? []) push(r, e.region ?? UNKNOWN_REGION, e.decidedAtMs);
    if (c.country?.baseline) push(c.country.baseline.rule, e.region ?? UNKNOWN_REGION, e.decidedAtMs);
  }
  if (t.rule.length === 0) return 0;
  // Each take-back's bucket, then per counter row one new bucket_n with every take-back applied.
  await pool.query(
    `WITH t AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[]) AS t(rule_id, key, window_ms, at)),
     x AS (SELECT c.rule_id, c.key,
                  (SELECT min(v.o) FROM unnest(c.bucket_ts) WITH ORDINALITY AS v(ts, o) WHERE v.ts >= t.at) AS i
             FROM rate_limit_counters AS c JOIN t ON c.rule_id = t.rule_id AND c.key = t.key
            WHERE t.at > GREATEST(c.bucket_ts[cardinality(c.bucket_ts)], $5::BIGINT) - t.window_ms),
     d AS (SELECT rule_id, key, i, count(*) AS n FROM x WHERE i IS NOT NULL GROUP BY 1, 2, 3)
     UPDATE rate_limit_counters AS c
        SET bucket_n = (SELECT array_agg(GREATEST(0, u.n - COALESCE(d.n, 0))::INT ORDER BY u.o)
                          FROM unnest(c.bucket_n) WITH ORDINALITY AS u(n, o)
                          LEFT JOIN d ON d.rule_id = c.rule_id AND d.key = c.key AND d.i = u.o)
      WHERE (c.rule_id, c.key) IN (SELECT rule_id, key FROM d)`,
    [t.rule, t.key, t.window, t.at, Math.max(...events.map((e) => e.atMs))],
  );
  return 1;
}
