// Rows of the guard that learns from outcomes, written directly (issue #19): counters of
// conversion and sweep rules with their buckets and automatic blocks (migration 019), numbers
// under a block_after block with a level, and reported outcomes (migration 018). For tests of what
// the operator sees, independent of the decision path that normally writes them.
import type { Pool } from '../../src/db/pool.js';
import type { LimitRule, Policy } from '../../src/core/policy/types.js';
import { policy } from './policy.js';

const HOUR_MS = 3_600_000;

function limitRule(id: string, group: LimitRule['group'], limit: number, windowMs: number, window: string): LimitRule {
  return { id, group, limit, windowMs, window, shadow: false };
}

/** The design's default guard (conversion per range and country, baseline, sweep, blocks) with one number rule. */
export function guardPolicy(parts: Partial<Policy> = {}): Policy {
  return policy({
    number: [limitRule('number:1h', 'number', 2, HOUR_MS, '1h')],
    conversion: {
      answeredAtLeastMs: 10_000,
      pendingAfterMs: 15 * 60_000,
      prefix: { digits: 3, rules: [limitRule('conversion:prefix:1h', 'conversion', 5, HOUR_MS, '1h')] },
      country: {
        rules: [limitRule('conversion:country:1h', 'conversion', 50, HOUR_MS, '1h')],
        baseline: {
          factor: 0.2,
          floor: 20,
          historyMs: 14 * 24 * HOUR_MS,
          rule: limitRule('conversion:country:baseline', 'conversion', 20, 24 * HOUR_MS, '1d'),
        },
      },
    },
    sweep: { digits: 3, rules: [limitRule('sweep:prefix:1h', 'sweep', 10, HOUR_MS, '1h')] },
    blocks: { escalateMs: [5 * 60_000, HOUR_MS, 12 * HOUR_MS], escalate: ['5m', '1h', '12h'], decayMs: 24 * HOUR_MS },
    ...parts,
  });
}

/** The database clock, ms. */
export async function dbNowMs(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ now_ms: string }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint::text AS now_ms');
  return Number(rows[0]!.now_ms);
}

/** A counter row as the decision path leaves it: `calls` in one bucket at `atMs`, optionally blocked. */
export async function seedCounter(
  pool: Pool,
  c: { ruleId: string; key: string; calls: number; atMs: number; blockedUntil?: number; blockLevel?: number },
): Promise<void> {
  await pool.query(
    `INSERT INTO rate_limit_counters (rule_id, key, bucket_ts, bucket_n, last_at, blocked_until, block_level)
     VALUES ($1, $2, ARRAY[$3::bigint], ARRAY[$4::int], $3, $5, $6)
     ON CONFLICT (rule_id, key) DO UPDATE SET bucket_ts = EXCLUDED.bucket_ts, bucket_n = EXCLUDED.bucket_n, last_at = EXCLUDED.last_at,
       blocked_until = EXCLUDED.blocked_until, block_level = EXCLUDED.block_level`,
    [c.ruleId, c.key, c.atMs, c.calls, c.blockedUntil ?? null, c.blockLevel ?? 0],
  );
}

/** A number's row under a block_after block (level 0: without a `blocks` group). */
export async function seedNumberBlock(
  pool: Pool,
  n: { hash: string; masked: string; region: string; blockedUntil: number; level: number; denials?: number[] },
): Promise<void> {
  await pool.query(
    `INSERT INTO phone_rate_limits (phone_hash, call_count, window_start, region, phone_masked, blocked_until, block_level, denials)
     VALUES ($1, 0, 0, $2, $3, $4, $5, $6)
     ON CONFLICT (phone_hash) DO UPDATE SET blocked_until = EXCLUDED.blocked_until, block_level = EXCLUDED.block_level, denials = EXCLUDED.denials`,
    [n.hash, n.region, n.masked, n.blockedUntil, n.level, n.denials ?? []],
  );
}

let outcomeSeq = 0;

/** Reported outcomes: `count` of one kind for one country and range, decided `agoMs` before now. */
export async function seedOutcomes(
  pool: Pool,
  o: {
    region: string;
    range: string;
    outcome: 'verified' | 'answered' | 'unanswered' | 'failed';
    durationMs?: number;
    count: number;
    agoMs: number;
    recordedAgoMs?: number;
    hash?: string;
  },
): Promise<void> {
  const ids = Array.from({ length: o.count }, () => `test-decision-${process.pid}-${++outcomeSeq}`);
  await pool.query(
    `INSERT INTO rate_limit_outcomes (decision_id, phone_hash, region, range_label, decided_at, outcome, duration_ms, source, recorded_at)
     SELECT d, COALESCE($8, 'h-' || d), $2, $3, clock_timestamp() - $4::bigint * interval '1 millisecond', $5, $6, 'http',
            clock_timestamp() - $7::bigint * interval '1 millisecond'
       FROM unnest($1::text[]) AS d`,
    [ids, o.region, o.range, o.agoMs, o.outcome, o.durationMs ?? null, o.recordedAgoMs ?? Math.max(0, o.agoMs - 1000), o.hash ?? null],
  );
}
