// Block and allow entries (`ratelimit block|allow|unlist|list`): numbers stored as their hash,
// prefixes as given (`+4470`), each with an optional expiry, audited and announced so every
// daemon sees the change within its poll interval.
import type { Pool } from './pool.js';
import { announceChange, writeAudit } from './changes.js';
import { withTransaction } from './transaction.js';
import { NOW_MS } from './clock.js';

export type ListKind = 'block' | 'allow';
export type ListTargetType = 'number' | 'prefix';

export interface ListEntry {
  targetType: ListTargetType;
  /** The number's HMAC hash, or the prefix as given (`+4470`). */
  target: string;
  kind: ListKind;
  /** For humans: `+14155552•••` for a number, the prefix itself for a prefix. */
  masked: string;
  /** null: until unlisted. */
  expiresAt: Date | null;
  createdBy: string;
  createdAt: Date;
  reason: string | null;
}

interface ListRowSql {
  target_type: ListTargetType;
  target: string;
  kind: ListKind;
  masked: string;
  expires_at: Date | null;
  created_by: string;
  created_at: Date;
  reason: string | null;
}

function toEntry(r: ListRowSql): ListEntry {
  return {
    targetType: r.target_type,
    target: r.target,
    kind: r.kind,
    masked: r.masked,
    expiresAt: r.expires_at,
    createdBy: r.created_by,
    createdAt: r.created_at,
    reason: r.reason,
  };
}

const COLUMNS = 'target_type, target, kind, masked, expires_at, created_by, created_at, reason';

/** Entries in force now (expired ones are ignored here and deleted by retention). */
export async function readListEntries(pool: Pool): Promise<{ nowMs: number; entries: ListEntry[] }> {
  const { rows } = await pool.query<ListRowSql & { now_ms: number }>(
    `SELECT ${NOW_MS} AS now_ms, l.*
       FROM (SELECT 1) AS one
       LEFT JOIN LATERAL (SELECT ${COLUMNS} FROM rate_limit_lists
                           WHERE expires_at IS NULL OR expires_at > clock_timestamp()
                           ORDER BY created_at DESC, target) AS l ON true`,
  );
  return { nowMs: rows[0]!.now_ms, entries: rows.filter((r) => r.target !== null).map(toEntry) };
}

export interface SetEntryInput {
  targetType: ListTargetType;
  target: string;
  kind: ListKind;
  masked: string;
  /** Duration from now (database clock); undefined = until unlisted. */
  forMs: number | undefined;
  by: string;
  reason: string | null;
}

/** Adds or replaces the entry for a target (a number is either blocked or allowed, not both). */
export async function setListEntry(pool: Pool, e: SetEntryInput): Promise<{ entry: ListEntry; replaced: ListEntry | null }> {
  return (await setListEntries(pool, [e]))[0]!;
}

/**
 * Adds or replaces several entries in one transaction with one announcement (an incident's
 * `block --prefix A B C` or `block --top`): every daemon gets them all at once, or none. Rows are
 * locked in (target_type, target) order, the global order of list rows.
 */
export async function setListEntries(pool: Pool, entries: readonly SetEntryInput[]): Promise<Array<{ entry: ListEntry; replaced: ListEntry | null }>> {
  const sorted = [...entries].sort((a, b) => a.targetType.localeCompare(b.targetType) || (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  return withTransaction(pool, async (client) => {
    const out: Array<{ entry: ListEntry; replaced: ListEntry | null }> = [];
    for (const e of sorted) {
      const old = await client.query<ListRowSql>(`SELECT ${COLUMNS} FROM rate_limit_lists WHERE target_type = $1 AND target = $2 FOR UPDATE`, [
        e.targetType,
        e.target,
      ]);
      const { rows } = await client.query<ListRowSql>(
        `INSERT INTO rate_limit_lists (target_type, target, kind, masked, expires_at, created_by, reason)
         VALUES ($1, $2, $3, $4, CASE WHEN $5::bigint IS NULL THEN NULL ELSE clock_timestamp() + $5::bigint * interval '1 millisecond' END, $6, $7)
         ON CONFLICT (target_type, target) DO UPDATE SET
           kind = EXCLUDED.kind, masked = EXCLUDED.masked, expires_at = EXCLUDED.expires_at,
           created_by = EXCLUDED.created_by, created_at = clock_timestamp(), reason = EXCLUDED.reason
         RETURNING ${COLUMNS}`,
        [e.targetType, e.target, e.kind, e.masked, e.forMs ?? null, e.by, e.reason],
      );
      const entry = toEntry(rows[0]!);
      await writeAudit(client, {
        actor: e.by,
        action: `list_${e.kind}`,
        target: `${e.targetType}:${e.target}`,
        detail: { masked: e.masked, expiresAt: entry.expiresAt, reason: e.reason, replaced: old.rows[0]?.kind ?? null, batch: sorted.length },
      });
      out.push({ entry, replaced: old.rows[0] ? toEntry(old.rows[0]) : null });
    }
    await announceChange(client, 'lists');
    return out;
  });
}

/** Removes the entry for a target; null when there was none (nothing is audited then). */
export async function removeListEntry(pool: Pool, targetType: ListTargetType, target: string, by: string, reason: string | null): Promise<ListEntry | null> {
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<ListRowSql>(`DELETE FROM rate_limit_lists WHERE target_type = $1 AND target = $2 RETURNING ${COLUMNS}`, [
      targetType,
      target,
    ]);
    if (!rows[0]) return null;
    const removed = toEntry(rows[0]);
    await writeAudit(client, {
      actor: by,
      action: 'list_remove',
      target: `${targetType}:${target}`,
      detail: { kind: removed.kind, masked: removed.masked, reason },
    });
    await announceChange(client, 'lists');
    return removed;
  });
}

/** An automatic block `unlist` ended (docs/protocol.md *Policy*, `blocks`). */
export interface LiftedBlock {
  targetType: ListTargetType;
  /** `sweep:prefix:1h` / `conversion:prefix:1h` for a range, `number:block_after` for a number. */
  ruleId: string;
  /** The range key (`+4477009`) or the number's hash. */
  key: string;
  /** The end it had. */
  untilMs: number;
  /** Its escalation step, kept: the next block escalates from it unless the range stays quiet for `decay`. */
  level: number;
}

/**
 * Ends the automatic blocks of a target now (`unlist`): a number's own block (under any of its
 * hashes), or every range block whose key is the prefix or lies under it. blocked_until becomes
 * now and block_level stays, so decay still applies; a number's recent denials are cleared too,
 * or its next denial would trip block_after again at once. Audited, and announced as a lists
 * change: daemons drop the denials they cached (the decision itself reads blocked_until from the
 * rows). Counters are locked in (rule_id, key) order, numbers in hash order, as decisions lock them.
 */
export async function liftAutoBlocks(
  pool: Pool,
  target: { targetType: ListTargetType; targets: readonly string[]; masked: string },
  by: string,
  reason: string | null,
): Promise<{ nowMs: number; lifted: LiftedBlock[] }> {
  return withTransaction(pool, async (client) => {
    let rows: Array<{ now_ms: string; rule_id: string; key: string; until_ms: string; level: number }>;
    if (target.targetType === 'prefix') {
      const prefix = target.targets[0]!;
      ({ rows } = await client.query(
        `WITH n AS (SELECT ${NOW_MS} AS now_ms),
         l AS (SELECT c.rule_id, c.key, c.blocked_until, c.block_level FROM rate_limit_counters AS c, n
                WHERE c.blocked_until > n.now_ms AND left(c.key, length($1)) = $1
                ORDER BY c.rule_id, c.key FOR UPDATE OF c)
         UPDATE rate_limit_counters AS c SET blocked_until = n.now_ms, updated_at = NOW()
           FROM l, n WHERE c.rule_id = l.rule_id AND c.key = l.key
         RETURNING n.now_ms::text AS now_ms, c.rule_id, c.key, l.blocked_until::text AS until_ms, l.block_level AS level`,
        [prefix],
      ));
    } else {
      ({ rows } = await client.query(
        `WITH n AS (SELECT ${NOW_MS} AS now_ms),
         l AS (SELECT p.phone_hash, p.blocked_until, p.block_level FROM phone_rate_limits AS p, n
                WHERE p.phone_hash = ANY($1::text[]) AND p.blocked_until > n.now_ms
                ORDER BY p.phone_hash FOR UPDATE OF p)
         UPDATE phone_rate_limits AS p SET blocked_until = n.now_ms, denials = '{}', updated_at = NOW()
           FROM l, n WHERE p.phone_hash = l.phone_hash
         RETURNING n.now_ms::text AS now_ms, 'number:block_after' AS rule_id, p.phone_hash AS key, l.blocked_until::text AS until_ms, l.block_level AS level`,
        [[...target.targets].sort()],
      ));
    }
    const lifted = rows
      .map((r): LiftedBlock => ({ targetType: target.targetType, ruleId: r.rule_id, key: r.key, untilMs: Number(r.until_ms), level: r.level }))
      .sort((a, b) => a.ruleId.localeCompare(b.ruleId) || a.key.localeCompare(b.key));
    let nowMs: number;
    if (rows[0]) nowMs = Number(rows[0].now_ms);
    else nowMs = Number((await client.query<{ now_ms: string }>(`SELECT ${NOW_MS}::text AS now_ms`)).rows[0]!.now_ms);
    if (lifted.length === 0) return { nowMs, lifted };
    await writeAudit(client, {
      actor: by,
      action: 'auto_block_lift',
      target: `${target.targetType}:${target.targets[0]}`,
      detail: {
        masked: target.masked,
        reason,
        // A number's hash is its key: the audit names the number once, in `target`.
        lifted: lifted.map((l) => ({ rule: l.ruleId, ...(l.targetType === 'prefix' ? { key: l.key } : {}), level: l.level, until: l.untilMs })),
      },
    });
    await announceChange(client, 'lists');
    return { nowMs, lifted };
  });
}
