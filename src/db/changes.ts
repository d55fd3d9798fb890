// What operators change, recorded and announced: the audit trail (rate_limit_audit) and the
// change counters daemons reload on (rate_limit_changes, polled; NOTIFY makes it faster). Policy
// applies (policies.ts) and list edits (lists.ts) write both inside their own transaction.
import type { Pool, PoolClient } from './pool.js';

/** Channel on which policy and list changes are announced; the payload names what changed. */
export const CHANGES_CHANNEL = 'ratelimit_changes';

export type ChangeName = 'policy' | 'lists';

/** Bumps a change counter and announces it, inside the caller's transaction (sent at commit). */
export async function announceChange(client: PoolClient, name: ChangeName): Promise<number> {
  const { rows } = await client.query<{ version: number }>(
    `INSERT INTO rate_limit_changes AS c (name, version) VALUES ($1, 1)
     ON CONFLICT (name) DO UPDATE SET version = c.version + 1
     RETURNING version`,
    [name],
  );
  await client.query('SELECT pg_notify($1, $2)', [CHANGES_CHANNEL, name]);
  return rows[0]!.version;
}

/** Change counters, for daemons that poll: a different number means reload. */
export async function readChangeVersions(pool: Pool): Promise<Record<ChangeName, number>> {
  const { rows } = await pool.query<{ name: ChangeName; version: number }>('SELECT name, version FROM rate_limit_changes');
  const out: Record<ChangeName, number> = { policy: 0, lists: 0 };
  for (const r of rows) if (r.name === 'policy' || r.name === 'lists') out[r.name] = r.version;
  return out;
}

export interface AuditEntry {
  actor: string;
  action: string;
  target: string | null;
  detail: Record<string, unknown>;
}

export async function writeAudit(client: PoolClient, e: AuditEntry): Promise<void> {
  await client.query('INSERT INTO rate_limit_audit (actor, action, target, detail) VALUES ($1, $2, $3, $4::jsonb)', [
    e.actor,
    e.action,
    e.target,
    JSON.stringify(e.detail),
  ]);
}
