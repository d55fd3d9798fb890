// The state a daemon's `check` is decided on (decideCheckFromSnapshot in
// src/core/policy/decide.ts), read without the numbers' logs: per number its rules' states at
// the check's instant and a summary of its log for the in-memory fallback (issue #12; the
// shapes are src/core/policy/log-summary.ts's, the same ratelimit_decide_v3 returns). peekState in
// decisions.ts still reads whole logs, for `status` and tests.

import type { Pool } from './pool.js';
import { NOW_MS } from './clock.js';
import { counterMapKey } from '../core/policy/counters.js';
import { counterBuckets } from './decisions.js';
import type { NumberSnapshot } from '../core/policy/decide.js';
import { EXACT_LOG_ENTRIES, ruleStates, type LogSummary } from '../core/policy/log-summary.js';
import type { AggregateCounter, Buckets, LimitRule } from '../core/policy/types.js';

export interface NumberPeek extends NumberSnapshot {
  /** The number's stored log, summarized for the in-memory fallback (log-summary.ts). */
  summary: LogSummary;
  /** The escalation step of its latest block (phone_rate_limits.block_level), for the fallback. */
  blockLevel: number;
}

export interface PolicySnapshotPeek {
  /** The database clock. */
  nowMs: number;
  /** Every hash asked for (a number without a row has no calls). */
  numbers: Map<string, NumberPeek>;
  /** By counterMapKey(); counters without a row have no calls. */
  counters: Map<string, Buckets>;
}

/**
 * What a `check` is decided on (decideCheckFromSnapshot), changing nothing and locking nothing:
 * like peekState, but each number comes back as its rules' states at the check's instant and
 * a summary of its log rather than the log itself (issue #12: the log grows with the limit).
 * `rules` are the policy's number rules (policy.number.rules).
 */
export async function peekSnapshot(
  pool: Pool,
  hashes: readonly string[],
  counters: readonly AggregateCounter[],
  rules: readonly LimitRule[],
): Promise<PolicySnapshotPeek> {
  // One round trip, numbers and counters told apart by `kind`. Per number, as ratelimit_decide_v3
  // returns them: the instant (decisionTime), ruleState() of each rule then, and the log in
  // runs of `run` calls (summarizeLog).
  const { rows } = await pool.query<{
    now_ms: number;
    kind: 'n' | 'c' | null;
    a: string;
    b: string | null;
    ts: number[] | null;
    counts: number[] | null;
    at: number | null;
    used: number[] | null;
    reset: number[] | null;
    n: number[] | null;
    blocked_until: number | null;
    level: number | null;
    last: number | null;
  }>({
    name: 'ratelimit_peek_snapshot_v2',
    text: `WITH clock AS (SELECT ${NOW_MS} AS now_ms),
           num AS (
             SELECT p.phone_hash, p.calls, cardinality(p.calls) AS len, p.blocked_until, p.block_level,
                    GREATEST(clock.now_ms, p.calls[cardinality(p.calls)]) AS at, GREATEST(1, (cardinality(p.calls) + ${EXACT_LOG_ENTRIES - 1}) / ${EXACT_LOG_ENTRIES}) AS run
               FROM phone_rate_limits AS p, clock WHERE p.phone_hash = ANY($1::text[])
           )
           SELECT clock.now_ms, s.* FROM clock LEFT JOIN (
             SELECT 'n' AS kind, num.phone_hash AS a, NULL AS b, sm.ts, sm.counts, num.at, st.used, st.reset, NULL::int[] AS n, num.blocked_until,
                    num.block_level AS level, num.calls[num.len] AS last
               FROM num,
               LATERAL (SELECT array_agg(num.calls[LEAST(g.j * num.run, num.len)] ORDER BY g.j) AS ts,
                               CASE WHEN num.run > 1 THEN array_agg(LEAST(g.j * num.run, num.len) - (g.j - 1) * num.run ORDER BY g.j) END AS counts
                          FROM generate_series(1, (num.len + num.run - 1) / num.run) AS g(j)) AS sm,
               LATERAL (SELECT array_agg(x.used ORDER BY r.o) AS used,
                               array_agg(CASE WHEN x.used < r.mx THEN coalesce(x.first + r.w, num.at) ELSE num.calls[num.len - r.mx + 1] + r.w END ORDER BY r.o) AS reset
                          FROM unnest($4::int[], $5::bigint[]) WITH ORDINALITY AS r(mx, w, o),
                          LATERAL (SELECT count(*)::int AS used, min(t) AS first FROM unnest(num.calls) AS t WHERE t > num.at - r.w) AS x) AS st
             UNION ALL
             SELECT 'c', c.rule_id, c.key, c.bucket_ts, NULL, NULL, NULL, NULL, c.bucket_n, c.blocked_until, c.block_level, NULL
               FROM rate_limit_counters AS c JOIN unnest($2::text[], $3::text[]) AS w(r, k) ON c.rule_id = w.r AND c.key = w.k
           ) AS s ON true`,
    values: [hashes, counters.map((c) => c.rule.id), counters.map((c) => c.key), rules.map((r) => r.limit), rules.map((r) => r.windowMs)],
  });
  const nowMs = rows[0]!.now_ms;
  const numbers = new Map<string, NumberPeek>();
  const buckets = new Map<string, Buckets>();
  for (const r of rows) {
    if (r.kind === 'n') {
      const used = r.used ?? [];
      numbers.set(r.a, {
        atMs: r.at!,
        rules: used.map((u, i) => ({ used: u, resetTime: r.reset![i]! })),
        blockedUntil: r.blocked_until,
        blockLevel: r.level ?? 0,
        lastCallMs: r.last,
        summary: { calls: r.ts ?? [], counts: r.counts },
      });
    } else if (r.kind === 'c') {
      buckets.set(counterMapKey(r.a, r.b!), counterBuckets(r.ts ?? [], r.n ?? [], r.blocked_until, r.level ?? 0));
    }
  }
  for (const h of hashes) {
    if (!numbers.has(h))
      numbers.set(h, {
        atMs: nowMs,
        rules: ruleStates([], nowMs, rules.map(logRule)),
        blockedUntil: null,
        blockLevel: 0,
        lastCallMs: null,
        summary: { calls: [], counts: null },
      });
  }
  return { nowMs, numbers, counters: buckets };
}

function logRule(r: LimitRule) {
  return { id: r.id, limit: r.limit, windowMs: r.windowMs };
}
