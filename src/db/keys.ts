// The database's record of its hashing key (docs/protocol.md *Keys*; schema and design in
// migrations/007_key_fingerprints.sql). verifyKey runs before a process hashes anything: a wrong
// key must stop it, because it would otherwise read every tracked number as untracked.
import type { Pool, PoolClient } from './pool.js';
import { withTransaction } from './transaction.js';
import { STABLE_NOW_MS } from './clock.js';
import { SQLSTATE } from './errors.js';
import { RateLimitError } from '../core/errors.js';
import { keyFingerprint } from '../core/key.js';
import { hashPhone } from '../core/phone.js';

export type KeyRole = 'current' | 'previous' | 'retired';

export interface KeyInput {
  /** PHONE_ENCRYPTION_KEY. */
  current: string;
  /** PHONE_ENCRYPTION_KEY_PREVIOUS, during a rotation. */
  previous?: string | undefined;
}

export interface KeyCheck {
  /**
   * recorded: first use of this database; matched: the database's current key; rotated: this
   * call started a rotation; unrecorded (checkKey only): the database has no key yet.
   */
  outcome: 'recorded' | 'matched' | 'rotated' | 'unrecorded';
  fingerprint: string;
  /** The previous key's fingerprint while a rotation is under way and this process was given it. */
  previousFingerprint: string | undefined;
  /** Safe to run, but worth logging. */
  warnings: string[];
}

export interface KnownKey {
  fingerprint: string;
  role: KeyRole;
  firstSeen: Date;
  lastSeen: Date;
  /** When the key took its role (for 'previous': when the rotation started). */
  roleSince: Date;
}

export interface KeyStatus {
  /** The fingerprints of the keys this process was given. */
  inUse: { current: string; previous: string | undefined };
  /** Newest role first: current, previous, then retired keys. */
  known: KnownKey[];
  /** Present while the database has a previous key. */
  rotation?: {
    previous: string;
    since: Date;
    /** Rows whose hash was made with the previous key. */
    rowsUnderPrevious: number;
    /** Of those, rows with a call inside the longest window: they still affect decisions. */
    activeRowsUnderPrevious: number;
    /**
     * No previous-key row has a call inside the longest window, and a whole window has passed since
     * the rotation (a process still on the old key may have written rows tagged as new).
     */
    canDropPrevious: boolean;
    /**
     * Block/allow entries of numbers still under the previous key: a fold moves a number's entry
     * when a daemon meets the number; the rest stop matching once the previous key is dropped.
     */
    listEntriesUnderPrevious: number;
  };
}

// Any fixed 64-bit number, the same in every process: the ASCII of "rlkeyfp!".
const KEYS_LOCK_KEY = 0x726c6b6579667021n;

interface KeyRow {
  fingerprint: string;
  role: KeyRole;
  owns_untagged_rows: boolean;
  first_seen: Date;
  last_seen: Date;
  role_since: Date;
}

const ROLE_ORDER: Record<KeyRole, number> = { current: 0, previous: 1, retired: 2 };

function date(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function mismatch(message: string): RateLimitError {
  return new RateLimitError('key_mismatch', message);
}

async function readKeys(client: PoolClient | Pool): Promise<KeyRow[]> {
  try {
    const { rows } = await client.query<KeyRow>('SELECT fingerprint, role, owns_untagged_rows, first_seen, last_seen, role_since FROM rate_limit_keys');
    return rows.sort((a, b) => ROLE_ORDER[a.role] - ROLE_ORDER[b.role] || b.role_since.getTime() - a.role_since.getTime());
  } catch (err) {
    if ((err as { code?: unknown }).code === SQLSTATE.UNDEFINED_TABLE) {
      throw new RateLimitError(
        'database_error',
        'the database has no record of its hashing key (it is behind: migration 7 is missing); run: ratelimit db init',
        { cause: err },
      );
    }
    throw err;
  }
}

/** New rows are tagged with the current key's fingerprint (see the migration for why a DEFAULT). */
async function tagNewRowsWith(client: PoolClient, fingerprint: string): Promise<void> {
  // A fingerprint is `fp:` and hex (keyFingerprint), so it is safe to inline; DDL takes no parameters.
  if (!/^fp:[0-9a-f]+$/.test(fingerprint)) throw new Error(`not a key fingerprint: ${fingerprint}`);
  await client.query(`ALTER TABLE phone_rate_limits ALTER COLUMN key_fp SET DEFAULT '${fingerprint}'`);
  // rate_limit_lists.key_fp arrives with migration 11; a database migrated only to 7 has no column yet.
  const { rows } = await client.query(`SELECT 1 FROM information_schema.columns WHERE table_name = 'rate_limit_lists' AND column_name = 'key_fp'`);
  if (rows.length > 0) await client.query(`ALTER TABLE rate_limit_lists ALTER COLUMN key_fp SET DEFAULT '${fingerprint}'`);
}

/**
 * Serialises every verification, so two processes starting together on an empty database agree
 * on one first key, and two rotating at once rotate once.
 */
function lockedTransaction<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  return withTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_KEY.toString()]);
    return work(client);
  });
}

/** What the database's record says to do with this process's keys; throws on a mismatch. */
type Judgement = { action: 'record' | 'rotate' | 'match'; warnings: string[] };

function judge(known: KeyRow[], fp: string, prevFp: string | undefined): Judgement {
  const current = known.find((k) => k.role === 'current');
  const previous = known.find((k) => k.role === 'previous');
  if (current === undefined) return { action: 'record', warnings: [] };

  if (current.fingerprint === fp) {
    const warnings: string[] = [];
    if (prevFp !== undefined && previous?.fingerprint !== prevFp) {
      const role = known.find((k) => k.fingerprint === prevFp)?.role;
      const was = role === 'retired' ? 'a retired key' : 'not a key this database knows';
      throw mismatch(
        `PHONE_ENCRYPTION_KEY_PREVIOUS (${prevFp}) is ${was}; the database's previous key is ${previous ? previous.fingerprint : 'none (no rotation is under way)'}. ` +
          (previous
            ? `Set PHONE_ENCRYPTION_KEY_PREVIOUS to the key with fingerprint ${previous.fingerprint}, or unset it`
            : 'Unset PHONE_ENCRYPTION_KEY_PREVIOUS'),
      );
    }
    if (prevFp === undefined && previous !== undefined) {
      warnings.push(
        `a key rotation is under way (since ${date(previous.role_since)}) but PHONE_ENCRYPTION_KEY_PREVIOUS is not set: calls counted under the previous key (${previous.fingerprint}) are not seen by this process; ` +
          'set it until `ratelimit key status` says the previous key can be dropped',
      );
    }
    return { action: 'match', warnings };
  }

  const mine = known.find((k) => k.fingerprint === fp);
  if (mine !== undefined) {
    throw mismatch(
      `PHONE_ENCRYPTION_KEY (${fp}) is this database's ${mine.role} key, replaced by ${current.fingerprint} on ${date(current.role_since)}; ` +
        `set PHONE_ENCRYPTION_KEY to the key with fingerprint ${current.fingerprint}` +
        (mine.role === 'previous' ? ` and PHONE_ENCRYPTION_KEY_PREVIOUS to this one (${fp})` : ''),
    );
  }

  // A rotation: the database's current key becomes the previous one.
  if (prevFp === current.fingerprint) return { action: 'rotate', warnings: [] };

  const givenPrevious =
    prevFp === undefined ? '' : ` PHONE_ENCRYPTION_KEY_PREVIOUS (${prevFp}) is not the database's current key either, so this is not a rotation from it.`;
  throw mismatch(
    `PHONE_ENCRYPTION_KEY (${fp}) is not the key this database's hashes were made with: it knows ${current.fingerprint} (current since ${date(current.role_since)})` +
      `${previous ? ` and ${previous.fingerprint} (previous)` : ''}.${givenPrevious} ` +
      `Set PHONE_ENCRYPTION_KEY to the key with fingerprint ${current.fingerprint}; or, to rotate to this new key, keep it in PHONE_ENCRYPTION_KEY and set PHONE_ENCRYPTION_KEY_PREVIOUS to the key with fingerprint ${current.fingerprint}`,
  );
}

function fingerprints(keys: KeyInput): { fp: string; prevFp: string | undefined } {
  const fp = keyFingerprint(keys.current);
  const prevFp = keys.previous === undefined ? undefined : keyFingerprint(keys.previous);
  if (prevFp === fp) {
    throw mismatch(
      `PHONE_ENCRYPTION_KEY_PREVIOUS is the same key as PHONE_ENCRYPTION_KEY (${fp}); during a rotation it must be the old key, otherwise unset it`,
    );
  }
  return { fp, prevFp };
}

/**
 * Checks this process's keys against the database's record, recording the key on first use and a
 * rotation when asked for one; throws a `key_mismatch` RateLimitError naming the fingerprints and
 * what to set otherwise. For the processes that own the database's key: the daemon and `db init`.
 * Call it after migrating and before hashing anything.
 */
export async function verifyKey(pool: Pool, keys: KeyInput): Promise<KeyCheck> {
  const { fp, prevFp } = fingerprints(keys);
  return lockedTransaction(pool, async (client) => {
    const known = await readKeys(client);
    const { action, warnings } = judge(known, fp, prevFp);
    if (action === 'record') {
      // First use. With a previous key, this database was filled before fingerprints were kept,
      // under that previous key: record it as such so its rows keep counting.
      if (prevFp !== undefined) {
        await client.query(`INSERT INTO rate_limit_keys (fingerprint, role, owns_untagged_rows) VALUES ($1, 'previous', true), ($2, 'current', false)`, [
          prevFp,
          fp,
        ]);
      } else {
        await client.query(`INSERT INTO rate_limit_keys (fingerprint, role, owns_untagged_rows) VALUES ($1, 'current', true)`, [fp]);
      }
      await tagNewRowsWith(client, fp);
      return { outcome: 'recorded', fingerprint: fp, previousFingerprint: prevFp, warnings };
    }
    if (action === 'rotate') {
      // The database's current key becomes the previous one, the one before retires.
      await client.query(`UPDATE rate_limit_keys SET role = 'retired', role_since = NOW() WHERE role = 'previous'`);
      await client.query(`UPDATE rate_limit_keys SET role = 'previous', role_since = NOW(), last_seen = NOW() WHERE fingerprint = $1`, [prevFp]);
      await client.query(`INSERT INTO rate_limit_keys (fingerprint, role) VALUES ($1, 'current')`, [fp]);
      await tagNewRowsWith(client, fp);
      return { outcome: 'rotated', fingerprint: fp, previousFingerprint: prevFp, warnings };
    }
    await client.query(`UPDATE rate_limit_keys SET last_seen = NOW() WHERE fingerprint = ANY($1)`, [[fp, ...(prevFp ? [prevFp] : [])]]);
    return { outcome: 'matched', fingerprint: fp, previousFingerprint: prevFp, warnings };
  });
}

/**
 * The admin commands' check: the same refusals as verifyKey, but it writes nothing. Recording a
 * first key or starting a rotation is for the daemon and `db init`; a command run with the new key
 * before any of them has rotated is refused, since its hashes would find nothing.
 */
export async function checkKey(pool: Pool, keys: KeyInput): Promise<KeyCheck> {
  const { fp, prevFp } = fingerprints(keys);
  const known = await readKeys(pool);
  const { action, warnings } = judge(known, fp, prevFp);
  if (action === 'rotate') {
    throw mismatch(
      `PHONE_ENCRYPTION_KEY (${fp}) is new to this database, whose current key is ${prevFp}: the rotation has not started. ` +
        `Start the daemons with both keys (PHONE_ENCRYPTION_KEY and PHONE_ENCRYPTION_KEY_PREVIOUS), or run \`ratelimit db init\` with both, then retry; ` +
        `or set PHONE_ENCRYPTION_KEY to the key with fingerprint ${prevFp} and unset PHONE_ENCRYPTION_KEY_PREVIOUS`,
    );
  }
  return { outcome: action === 'record' ? 'unrecorded' : 'matched', fingerprint: fp, previousFingerprint: prevFp, warnings };
}

/** One number under both keys: `previous` is its hash under PHONE_ENCRYPTION_KEY_PREVIOUS. */
export interface HashPair {
  previous: string;
  current: string;
}

/**
 * `status` and `reset` during a rotation: fold the number first, so they see (and clear) its calls
 * whichever hash holds them. A no-op without a previous key.
 */
export async function foldNumber(pool: Pool, e164: string, keys: { current: string; previous?: string | undefined }): Promise<void> {
  if (keys.previous === undefined) return;
  await foldKeyRows(pool, [{ previous: hashPhone(e164, keys.previous), current: hashPhone(e164, keys.current) }], keyFingerprint(keys.current));
}

/**
 * Folds numbers' rows under the previous key into their rows under the current key (migration
 * 010, ratelimit_fold_key_rows: one transaction, locks in hash order). Returns how many rows were
 * folded; numbers with no row under the previous key cost one index probe each.
 */
export async function foldKeyRows(pool: Pool, pairs: readonly HashPair[], currentFingerprint: string): Promise<number> {
  if (pairs.length === 0) return 0;
  const { rows } = await pool.query<{ n: number }>({
    name: 'ratelimit_fold_key_rows',
    text: 'SELECT ratelimit_fold_key_rows($1::text[], $2::text[], $3::text) AS n',
    values: [pairs.map((p) => p.previous), pairs.map((p) => p.current), currentFingerprint],
  });
  return rows[0]?.n ?? 0;
}

/**
 * What `ratelimit key status` shows. Read-only: it records nothing, so an operator can run it with
 * any key. `longestWindowMs` is the longest window of any rule in force.
 */
export async function keyStatus(pool: Pool, keys: KeyInput, longestWindowMs: number): Promise<KeyStatus> {
  const known = await readKeys(pool);
  const status: KeyStatus = {
    inUse: { current: keyFingerprint(keys.current), previous: keys.previous === undefined ? undefined : keyFingerprint(keys.previous) },
    known: known.map((k) => ({ fingerprint: k.fingerprint, role: k.role, firstSeen: k.first_seen, lastSeen: k.last_seen, roleSince: k.role_since })),
  };
  const previous = known.find((k) => k.role === 'previous');
  if (previous === undefined) return status;
  const underPrevious = `(p.key_fp = $1 OR ($2 AND p.key_fp IS NULL))`;
  const { rows } = await pool.query<{ rows: number; active: number; window_passed: boolean; lists: number }>(
    `SELECT (SELECT count(*)::int FROM phone_rate_limits p WHERE ${underPrevious}) AS rows,
            (SELECT count(*)::int FROM rate_limit_lists p WHERE p.target_type = 'number' AND ${underPrevious}) AS lists,
            (SELECT count(*)::int FROM phone_rate_limits p
              WHERE ${underPrevious} AND p.last_call_at > ${STABLE_NOW_MS} - $3::bigint) AS active,
            NOW() - $4::timestamptz >= make_interval(secs => $3::bigint / 1000.0) AS window_passed`,
    [previous.fingerprint, previous.owns_untagged_rows, longestWindowMs, previous.role_since],
  );
  const r = rows[0]!;
  status.rotation = {
    previous: previous.fingerprint,
    since: previous.role_since,
    rowsUnderPrevious: r.rows,
    activeRowsUnderPrevious: r.active,
    canDropPrevious: r.active === 0 && r.window_passed,
    listEntriesUnderPrevious: r.lists,
  };
  return status;
}
