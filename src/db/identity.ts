// The database's own identity: a random id kept in a one-row table, created by the first daemon
// or command that asks. A streaming replica carries the same row, so after a failover the promoted
// standby answers with the id of the primary it replaced: the spool (src/daemon/engine/spool.ts)
// is scoped by this id, not by the URL, and a daemon restarted with the new primary's URL replays
// what it decided during the outage. Kept out of the numbered migrations on purpose: it is data
// (one value per database), created on first use by whoever reaches the database first.

import { randomBytes } from 'node:crypto';
import type { Pool } from './pool.js';
import { SQLSTATE } from './errors.js';

const CREATE = `CREATE TABLE IF NOT EXISTS ratelimit_database_identity (
  singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
  id TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`;

/** This database's id, created (once, whoever asks first) when it has none. */
export async function databaseIdentity(pool: Pool): Promise<string> {
  const read = async () => (await pool.query<{ id: string }>('SELECT id FROM ratelimit_database_identity')).rows[0]?.id;
  try {
    const id = await read();
    if (id) return id;
  } catch (err) {
    if ((err as { code?: unknown }).code !== SQLSTATE.UNDEFINED_TABLE) throw err;
  }
  try {
    await pool.query(CREATE);
  } catch (err) {
    // Two first starts at once: CREATE TABLE IF NOT EXISTS can still collide in the catalog, on
    // the table's name, its row type's name or a unique index, depending on which insert loses.
    const code = (err as { code?: unknown }).code;
    if (code !== SQLSTATE.UNIQUE_VIOLATION && code !== SQLSTATE.DUPLICATE_OBJECT && code !== SQLSTATE.DUPLICATE_TABLE) throw err;
  }
  await pool.query('INSERT INTO ratelimit_database_identity (id) VALUES ($1) ON CONFLICT (singleton) DO NOTHING', [randomBytes(16).toString('hex')]);
  const id = await read();
  if (!id) throw new Error('ratelimit_database_identity is empty after its insert');
  return id;
}
