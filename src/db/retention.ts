// Retention (issue #12, docs/protocol.md `db prune`): deletes the rows that can no longer affect any
// decision, and audit rows past RATELIMIT_AUDIT_RETENTION, in small batches so decisions never
// queue behind it. One process at a time (a session advisory lock): two daemons pruning would
// only fight over the same rows.
//
// A number row (phone_rate_limits) goes when nothing in it is newer than the horizon (no call,
// no denial: the rules look at most one window back, block_after `within` back), it is not
// blocked now, and no list entry names its hash. A counter row (rate_limit_counters) goes when
// none of its buckets is newer than the horizon: a bucket counts only while its newest call is
// inside its rule's window, and the horizon is the longest window of any rule (so counters of
// rules no longer in the policy go too, one horizon after their last call). Both tables are
// walked by primary key, one slice of `batchSize` keys per statement: no index on their
// activity columns (it would end HOT updates, see migration 005), and no slice is scanned twice.
// Rows a decision holds are skipped (SKIP LOCKED) and re-examined on the next pass; a row a
// decision changed since our snapshot is re-checked under its lock, so a fresh call keeps it.
//
// Times are the database's clock, as in the decisions (ratelimit_decide_v3).
import type { Pool, PoolClient } from './pool.js';
import { DECISION_ID_HORIZON_MS } from '../core/decision-id.js';
import { NOW_MS } from './clock.js';

/** One advisory lock key for every process pruning this database. */
const PRUNE_LOCK_SQL = "hashtext('ratelimit_retention')";

export const DEFAULT_PRUNE_BATCH = 1_000;
/** Pause between two batches, so decisions get the rows and the CPU in between. */
export const DEFAULT_PRUNE_PAUSE_MS = 20;

export interface PruneOptions {
  /** Rows with nothing newer than this (ms) cannot affect a decision: src/core/policy/horizon.ts. */
  horizonMs: number;
  /**
   * Outcomes are kept at least this long after their decision (outcomeRetentionMs in
   * src/core/policy/conversion.ts: the baseline's history), and never less than the horizon or
   * the decision-id horizon.
   */
  outcomeRetentionMs?: number;
  /**
   * The policy's blocks.decay (0 without a `blocks` group): a row whose latest automatic block
   * ended less than this ago is kept, or the next block would start again at the first step.
   */
  blockDecayMs?: number;
  /** rate_limit_resets and rate_limit_audit rows older than this (ms) go. */
  auditRetentionMs: number;
  batchSize?: number;
  pauseMs?: number;
  /** Wait for another process's prune to finish instead of skipping (the CLI's choice). */
  wait?: boolean;
  /** Stops between batches (a daemon shutting down). */
  signal?: AbortSignal;
  /** Replaces the database clock, ms since epoch; for tests only. */
  nowMs?: number;
}

/** Rows deleted, per table. */
export interface PruneCounts {
  phone_rate_limits: number;
  rate_limit_counters: number;
  rate_limit_resets: number;
  rate_limit_audit: number;
  rate_limit_outcomes: number;
}

export interface PruneResult {
  /** false: another process held the prune lock, nothing was done. */
  ran: boolean;
  counts: PruneCounts;
}

const NOW_SQL = `(COALESCE($1::BIGINT, ${NOW_MS}))`;

// $1 now (or NULL), $2 horizon ms, $3 batch size, $4 the last key of the previous slice, $5 blocks.decay ms.
const PRUNE_NUMBERS_SQL = `
WITH clock AS (SELECT ${NOW_SQL} AS now_ms),
slice AS (
  SELECT phone_hash FROM phone_rate_limits WHERE phone_hash > $4 ORDER BY phone_hash LIMIT $3
),
victims AS (
  SELECT p.phone_hash FROM phone_rate_limits AS p, clock
   WHERE p.phone_hash IN (SELECT phone_hash FROM slice)
     AND COALESCE(p.last_call_at, 0) <= clock.now_ms - $2
     AND NOT EXISTS (SELECT 1 FROM unnest(p.calls) AS t WHERE t > clock.now_ms - $2)
     AND COALESCE(p.last_denied_at, 0) <= clock.now_ms - $2
     AND NOT EXISTS (SELECT 1 FROM unnest(p.denials) AS t WHERE t > clock.now_ms - $2)
     AND COALESCE(p.blocked_until, 0) <= clock.now_ms - (CASE WHEN p.block_level > 0 THEN $5::BIGINT ELSE 0 END)
     AND NOT EXISTS (SELECT 1 FROM rate_limit_lists AS l WHERE l.target_type = 'number' AND l.target = p.phone_hash)
     FOR UPDATE OF p SKIP LOCKED
),
gone AS (
  DELETE FROM phone_rate_limits AS p USING victims AS v WHERE p.phone_hash = v.phone_hash RETURNING 1
)
SELECT (SELECT max(phone_hash) FROM slice) AS last_hash, (SELECT count(*) FROM gone)::INTEGER AS deleted`;

// $1 now (or NULL), $2 horizon ms, $3 batch size, $4/$5 the last (rule id, key) of the previous
// slice, $6 blocks.decay ms: a range blocked now, or whose block ended within decay, stays.
const PRUNE_COUNTERS_SQL = `
WITH clock AS (SELECT ${NOW_SQL} AS now_ms),
slice AS (
  SELECT rule_id, key FROM rate_limit_counters WHERE (rule_id, key) > ($4, $5) ORDER BY rule_id, key LIMIT $3
),
victims AS (
  SELECT c.rule_id, c.key FROM rate_limit_counters AS c, clock
   WHERE (c.rule_id, c.key) IN (SELECT rule_id, key FROM slice)
     AND COALESCE(c.last_at, 0) <= clock.now_ms - $2
     AND NOT EXISTS (SELECT 1 FROM unnest(c.bucket_ts) AS t WHERE t > clock.now_ms - $2)
     AND COALESCE(c.blocked_until, 0) <= clock.now_ms - $6::BIGINT
     FOR UPDATE OF c SKIP LOCKED
),
gone AS (
  DELETE FROM rate_limit_counters AS c USING victims AS v WHERE c.rule_id = v.rule_id AND c.key = v.key RETURNING 1
),
last AS (SELECT rule_id, key FROM slice ORDER BY rule_id DESC, key DESC LIMIT 1)
SELECT (SELECT rule_id FROM last) AS last_rule, (SELECT key FROM last) AS last_key,
       (SELECT count(*) FROM gone)::INTEGER AS deleted`;

// $1 now (or NULL), $2 retention ms, $3 batch size.
const pruneByAgeSql = (table: 'rate_limit_resets' | 'rate_limit_audit', column: string) => `
WITH victims AS (
  SELECT id FROM ${table}
   WHERE ${column} < to_timestamp((${NOW_SQL} - $2) / 1000.0)
   ORDER BY ${column} LIMIT $3 FOR UPDATE SKIP LOCKED
)
DELETE FROM ${table} AS a USING victims AS v WHERE a.id = v.id`;

// $1 now (or NULL), $2 horizon ms, $3 batch size. Outcomes go once their decision is past the
// decision-id horizon (no repeat of it can be reported any more), the policy's horizon and the
// conversion baseline's history (its limits are computed from them).
const PRUNE_OUTCOMES_SQL = `
WITH victims AS (
  SELECT decision_id FROM rate_limit_outcomes
   WHERE decided_at < to_timestamp((${NOW_SQL} - $2) / 1000.0)
   ORDER BY decided_at LIMIT $3 FOR UPDATE SKIP LOCKED
)
DELETE FROM rate_limit_outcomes AS o USING victims AS v WHERE o.decision_id = v.decision_id`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One full pass of retention over every table, unless another process is pruning (then `ran`
 * is false, or with `wait` it waits for that process). Each batch is its own short transaction.
 */
export async function pruneOnce(pool: Pool, opts: PruneOptions): Promise<PruneResult> {
  const counts: PruneCounts = { phone_rate_limits: 0, rate_limit_counters: 0, rate_limit_resets: 0, rate_limit_audit: 0, rate_limit_outcomes: 0 };
  const client = await pool.connect();
  let broken: Error | undefined;
  let locked = false;
  try {
    if (opts.wait) {
      await client.query(`SELECT pg_advisory_lock(${PRUNE_LOCK_SQL})`);
      locked = true;
    } else {
      const { rows } = await client.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${PRUNE_LOCK_SQL}) AS ok`);
      locked = rows[0]!.ok;
      if (!locked) return { ran: false, counts };
    }
    await runPasses(client, opts, counts);
    return { ran: true, counts };
  } catch (err) {
    broken = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    if (locked && !broken) {
      await client.query(`SELECT pg_advisory_unlock(${PRUNE_LOCK_SQL})`).catch((err: Error) => (broken = err));
    }
    // A connection that failed is destroyed, and its session lock goes with it.
    client.release(broken);
  }
}

async function runPasses(client: PoolClient, opts: PruneOptions, counts: PruneCounts): Promise<void> {
  const batch = opts.batchSize ?? DEFAULT_PRUNE_BATCH;
  const pauseMs = opts.pauseMs ?? DEFAULT_PRUNE_PAUSE_MS;
  const now = opts.nowMs ?? null;
  let first = true;
  const between = async (): Promise<boolean> => {
    if (opts.signal?.aborted) return false;
    if (!first && pauseMs > 0) await sleep(pauseMs);
    first = false;
    return !opts.signal?.aborted;
  };

  const blockDecayMs = opts.blockDecayMs ?? 0;
  let lastHash = '';
  while (await between()) {
    const { rows } = await client.query<{ last_hash: string | null; deleted: number }>(PRUNE_NUMBERS_SQL, [now, opts.horizonMs, batch, lastHash, blockDecayMs]);
    counts.phone_rate_limits += rows[0]!.deleted;
    if (rows[0]!.last_hash === null) break;
    lastHash = rows[0]!.last_hash;
  }

  let lastRule = '';
  let lastKey = '';
  while (await between()) {
    const { rows } = await client.query<{ last_rule: string | null; last_key: string | null; deleted: number }>(PRUNE_COUNTERS_SQL, [
      now,
      opts.horizonMs,
      batch,
      lastRule,
      lastKey,
      blockDecayMs,
    ]);
    counts.rate_limit_counters += rows[0]!.deleted;
    if (rows[0]!.last_rule === null) break;
    lastRule = rows[0]!.last_rule;
    lastKey = rows[0]!.last_key!;
  }

  const outcomeHorizonMs = Math.max(opts.horizonMs, DECISION_ID_HORIZON_MS, opts.outcomeRetentionMs ?? 0);
  while (await between()) {
    const { rowCount } = await client.query(PRUNE_OUTCOMES_SQL, [now, outcomeHorizonMs, batch]);
    counts.rate_limit_outcomes += rowCount ?? 0;
    if ((rowCount ?? 0) < batch) break;
  }

  for (const [table, column] of [
    ['rate_limit_resets', 'reset_at'],
    ['rate_limit_audit', 'at'],
  ] as const) {
    const sql = pruneByAgeSql(table, column);
    while (await between()) {
      const { rowCount } = await client.query(sql, [now, opts.auditRetentionMs, batch]);
      counts[table] += rowCount ?? 0;
      if ((rowCount ?? 0) < batch) break;
    }
  }
}
