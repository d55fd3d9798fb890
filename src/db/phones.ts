// One number's row, for the admin commands: `status` reads it (lookupPhone), `reset` clears it
// with its audit row and tells every daemon (resetPhone). The decision path writes rows through
// src/db/decisions.ts; stats and top read many through src/db/stats.ts.
import type { Pool } from './pool.js';
import type { LogPolicy } from '../core/policy/log.js';

import { NOW_MS } from './clock.js';
import { withTransaction } from './transaction.js';

export interface PhoneRow {
  hash: string;
  region: string | null;
  calls: number[];
  callCount: number;
  windowStart: number;
  deniedTotal: number;
  deniedInWindow: number;
  deniedWindowStart: number;
  lastCallAt: number | null;
  lastDeniedAt: number | null;
  createdAt: Date | null;
  updatedAt: Date | null;
}

export interface ResetRecord {
  resetBy: string;
  reason: string | null;
  previousCount: number;
  resetAt: Date;
}

export interface PhoneLookup {
  nowMs: number;
  row: PhoneRow | null;
  lastReset: ResetRecord | null;
}

interface PhoneRowSql {
  phone_hash: string;
  region: string | null;
  calls: number[];
  call_count: number;
  window_start: number;
  denied_total: number;
  denied_in_window: number;
  denied_window_start: number;
  last_call_at: number | null;
  last_denied_at: number | null;
  created_at: Date | null;
  updated_at: Date | null;
}

function toPhoneRow(r: PhoneRowSql): PhoneRow {
  return {
    hash: r.phone_hash,
    region: r.region,
    calls: r.calls,
    callCount: r.call_count,
    windowStart: r.window_start,
    deniedTotal: r.denied_total,
    deniedInWindow: r.denied_in_window,
    deniedWindowStart: r.denied_window_start,
    lastCallAt: r.last_call_at,
    lastDeniedAt: r.last_denied_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export async function lookupPhone(pool: Pool, hash: string): Promise<PhoneLookup> {
  const { rows } = await pool.query<
    PhoneRowSql & { now_ms: number; reset_by: string | null; reason: string | null; previous_count: number | null; reset_at: Date | null }
  >(
    `SELECT n.now_ms, p.*, r.reset_by, r.reason, r.previous_count, r.reset_at
       FROM (SELECT ${NOW_MS} AS now_ms) AS n
       LEFT JOIN phone_rate_limits AS p ON p.phone_hash = $1
       LEFT JOIN LATERAL (SELECT reset_by, reason, previous_count, reset_at FROM rate_limit_resets
                           WHERE phone_hash = $1 ORDER BY reset_at DESC, id DESC LIMIT 1) AS r ON true`,
    [hash],
  );
  const r = rows[0]!;
  return {
    nowMs: r.now_ms,
    row: r.phone_hash ? toPhoneRow(r) : null,
    lastReset: r.reset_at ? { resetBy: r.reset_by!, reason: r.reason, previousCount: r.previous_count!, resetAt: r.reset_at } : null,
  };
}

export interface ResetOutcome {
  existed: boolean;
  /** Calls that counted in the primary window when they were cleared. */
  previousCount: number;
  /** block_after: the block this reset lifted (ms), or null when the number was not blocked (optional for callers' stubs). */
  liftedBlockUntil?: number | null;
  resetAt: Date;
}

/** Channel on which resets are announced, so every daemon drops what it cached for the number. */
export const RESET_CHANNEL = 'ratelimit_reset';

/**
 * Clears a number's usage (its call log, its block_after block and denial log) and writes the
 * audit row, atomically; announces it to the daemons. `policy`: the number rules in force
 * (numberRules(...).log); previousCount counts over the first one's window.
 */
export async function resetPhone(pool: Pool, hash: string, by: string, reason: string | null, policy: Pick<LogPolicy, 'rules'>): Promise<ResetOutcome> {
  return withTransaction(pool, async (client) => {
    const locked = await client.query<{ calls: number[]; blocked_until: number | null }>(
      'SELECT calls, blocked_until FROM phone_rate_limits WHERE phone_hash = $1 FOR UPDATE',
      [hash],
    );
    const clock = await client.query<{ now_ms: number }>(`SELECT ${NOW_MS} AS now_ms`);
    const nowMs = clock.rows[0]!.now_ms;
    const calls = locked.rows[0]?.calls ?? null;
    // Without number rules the log keeps only the latest call (horizon 1 ms): count that one.
    const windowMs = policy.rules[0]?.windowMs ?? Number.MAX_SAFE_INTEGER;
    const blockedUntil = locked.rows[0]?.blocked_until ?? null;
    const previousCount = (calls ?? []).filter((t) => t > nowMs - windowMs).length;
    if (calls) {
      await client.query(
        `UPDATE phone_rate_limits
            SET calls = '{}', call_count = 0, window_start = GREATEST(window_start, $2),
                denied_in_window = 0, blocked_until = NULL, denials = '{}', updated_at = NOW()
          WHERE phone_hash = $1`,
        [hash, nowMs],
      );
    }
    const audit = await client.query<{ reset_at: Date }>(
      `INSERT INTO rate_limit_resets (phone_hash, reset_by, reason, previous_count)
       VALUES ($1, $2, $3, $4) RETURNING reset_at`,
      [hash, by, reason, previousCount],
    );
    await client.query('SELECT pg_notify($1, $2)', [RESET_CHANNEL, hash]);
    const liftedBlockUntil = blockedUntil !== null && blockedUntil > nowMs ? blockedUntil : null;
    return { existed: calls !== null, previousCount, liftedBlockUntil, resetAt: audit.rows[0]!.reset_at };
  });
}
