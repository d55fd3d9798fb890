import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate, type Migration } from '../../src/db/migrate.js';
import { checkKey, foldKeyRows, keyStatus, verifyKey } from '../../src/db/keys.js';
import { keyFingerprint } from '../../src/core/key.js';
import { RateLimitError } from '../../src/core/errors.js';
import { createTestDatabase } from '../helpers/fixture.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);
const [fpA, fpB, fpC] = [A, B, C].map(keyFingerprint) as [string, string, string];
const HOUR_MS = 3_600_000;

// Read directly rather than through loadMigrations: 007 is written in parallel with 006, and this
// file must test 007 whether or not 006 has landed yet.
async function allMigrations(): Promise<Migration[]> {
  const dir = join(import.meta.dirname, '../../src/db/migrations');
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  return Promise.all(files.map(async (f) => ({ id: Number(f.slice(0, 3)), name: f.slice(4, -4), sql: await readFile(join(dir, f), 'utf8') })));
}

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function freshDatabase(): Promise<{ url: string; pool: Pool }> {
  const db = await createTestDatabase();
  const pool = createPool({ url: db.url, max: 2 });
  cleanups.push(
    () => db.drop(),
    () => pool.end(),
  );
  await migrate(pool, await allMigrations());
  return { url: db.url, pool };
}

async function refusal(p: Promise<unknown>): Promise<RateLimitError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RateLimitError);
  expect((err as RateLimitError).code).toBe('key_mismatch');
  return err as RateLimitError;
}

async function roles(pool: Pool): Promise<Record<string, string>> {
  const { rows } = await pool.query<{ fingerprint: string; role: string }>('SELECT fingerprint, role FROM rate_limit_keys');
  return Object.fromEntries(rows.map((r) => [r.fingerprint, r.role]));
}

async function insertRow(pool: Pool, hash: string, lastCallAgoMs: number): Promise<void> {
  await pool.query(
    `INSERT INTO phone_rate_limits (phone_hash, window_start, calls, last_call_at)
     SELECT $1, t, ARRAY[t], t FROM (SELECT (extract(epoch FROM NOW()) * 1000)::bigint - $2::bigint AS t) x`,
    [hash, lastCallAgoMs],
  );
}

describe('keyFingerprint', () => {
  it('is stable, short, distinct per key, and never contains the key', () => {
    expect(fpA).toMatch(/^fp:[0-9a-f]{16}$/);
    expect(keyFingerprint(A)).toBe(fpA);
    expect(new Set([fpA, fpB, fpC]).size).toBe(3);
    expect(keyFingerprint('secret-key-0123456789-abcdefghijkl')).not.toContain('secret');
  });
});

describe('verifyKey', () => {
  it('records the key on first use, then accepts the same key', async () => {
    const { pool } = await freshDatabase();
    expect(await verifyKey(pool, { current: A })).toEqual({ outcome: 'recorded', fingerprint: fpA, previousFingerprint: undefined, warnings: [] });
    expect(await roles(pool)).toEqual({ [fpA]: 'current' });
    expect(await verifyKey(pool, { current: A })).toEqual({ outcome: 'matched', fingerprint: fpA, previousFingerprint: undefined, warnings: [] });
    expect(await roles(pool)).toEqual({ [fpA]: 'current' });
  });

  it('refuses another key, naming both fingerprints and what to set', async () => {
    const { pool } = await freshDatabase();
    await verifyKey(pool, { current: A });
    const err = await refusal(verifyKey(pool, { current: B }));
    expect(err.message).toContain(fpB);
    expect(err.message).toContain(fpA);
    expect(err.message).toMatch(/Set PHONE_ENCRYPTION_KEY to the key with fingerprint fp:/);
    expect(err.message).toMatch(/PHONE_ENCRYPTION_KEY_PREVIOUS/);
    expect(err.message).not.toContain(A);
    expect(await roles(pool)).toEqual({ [fpA]: 'current' });
  });

  it('rotates only when the previous key given is the database current key', async () => {
    const { pool } = await freshDatabase();
    await verifyKey(pool, { current: A });

    const wrong = await refusal(verifyKey(pool, { current: B, previous: C }));
    expect(wrong.message).toContain(fpB);
    expect(wrong.message).toContain(fpC);
    expect(wrong.message).toContain(fpA);
    expect(await roles(pool)).toEqual({ [fpA]: 'current' });

    expect(await verifyKey(pool, { current: B, previous: A })).toEqual({ outcome: 'rotated', fingerprint: fpB, previousFingerprint: fpA, warnings: [] });
    expect(await roles(pool)).toEqual({ [fpA]: 'previous', [fpB]: 'current' });

    // The rotation is recorded once; other daemons given the same pair now match.
    expect((await verifyKey(pool, { current: B, previous: A })).outcome).toBe('matched');
    // A daemon left on the old key is stopped, told which key to use.
    const old = await refusal(verifyKey(pool, { current: A }));
    expect(old.message).toMatch(new RegExp(`\\(${fpA}\\) is this database's previous key, replaced by ${fpB}`));
    // Without the previous key during a rotation: allowed, with a warning to log.
    const noPrevious = await verifyKey(pool, { current: B });
    expect(noPrevious.outcome).toBe('matched');
    expect(noPrevious.warnings.join(' ')).toMatch(new RegExp(`PHONE_ENCRYPTION_KEY_PREVIOUS is not set.*${fpA}`));

    // A second rotation retires the first key.
    expect((await verifyKey(pool, { current: C, previous: B })).outcome).toBe('rotated');
    expect(await roles(pool)).toEqual({ [fpA]: 'retired', [fpB]: 'previous', [fpC]: 'current' });
    expect((await refusal(verifyKey(pool, { current: C, previous: A }))).message).toMatch(new RegExp(`${fpA}\\) is a retired key.*${fpB}`));
  });

  it('refuses the same key given as current and previous', async () => {
    const { pool } = await freshDatabase();
    expect((await refusal(verifyKey(pool, { current: A, previous: A }))).message).toMatch(/same key/);
  });

  it('on a database filled before keys were recorded, a rotation records both keys', async () => {
    const { pool } = await freshDatabase();
    expect((await verifyKey(pool, { current: B, previous: A })).outcome).toBe('recorded');
    expect(await roles(pool)).toEqual({ [fpA]: 'previous', [fpB]: 'current' });
  });

  it('agrees on one first key when many processes start at once on an empty database', async () => {
    const { url, pool } = await freshDatabase();
    const pools = Array.from({ length: 8 }, () => createPool({ url, max: 1 }));
    cleanups.push(() => Promise.all(pools.map((p) => p.end())).then(() => undefined));
    const same = await Promise.all(pools.map((p) => verifyKey(p, { current: A })));
    expect(same.filter((r) => r.outcome === 'recorded')).toHaveLength(1);
    expect(same.filter((r) => r.outcome === 'matched')).toHaveLength(7);

    const { url: otherUrl, pool: other } = await freshDatabase();
    const racers = Array.from({ length: 8 }, () => createPool({ url: otherUrl, max: 1 }));
    cleanups.push(() => Promise.all(racers.map((p) => p.end())).then(() => undefined));
    const mixed = await Promise.allSettled(racers.map((p, i) => verifyKey(p, { current: i % 2 === 0 ? A : B })));
    const winner = Object.keys(await roles(other));
    expect(winner).toHaveLength(1);
    mixed.forEach((r, i) => {
      const fp = i % 2 === 0 ? fpA : fpB;
      expect(r.status).toBe(fp === winner[0] ? 'fulfilled' : 'rejected');
    });
    expect(await roles(pool)).toEqual({ [fpA]: 'current' });
  });
});

describe('keyStatus', () => {
  it('shows the key in use and the known keys; during a rotation, the rows still under the previous key', async () => {
    const { pool } = await freshDatabase();
    // Written before any key was recorded: they belong to the first recorded key.
    await insertRow(pool, 'untagged-recent', 60_000);
    await insertRow(pool, 'untagged-old', 2 * HOUR_MS);
    await verifyKey(pool, { current: A });
    await insertRow(pool, 'under-a', 60_000);

    const before = await keyStatus(pool, { current: A }, HOUR_MS);
    expect(before.inUse).toEqual({ current: fpA, previous: undefined });
    expect(before.known.map((k) => [k.fingerprint, k.role])).toEqual([[fpA, 'current']]);
    expect(before.rotation).toBeUndefined();

    await verifyKey(pool, { current: B, previous: A });
    await insertRow(pool, 'under-b', 0);
    const { rows } = await pool.query<{ phone_hash: string; key_fp: string | null }>('SELECT phone_hash, key_fp FROM phone_rate_limits ORDER BY phone_hash');
    expect(rows).toEqual([
      { phone_hash: 'under-a', key_fp: fpA },
      { phone_hash: 'under-b', key_fp: fpB },
      { phone_hash: 'untagged-old', key_fp: null },
      { phone_hash: 'untagged-recent', key_fp: null },
    ]);

    const during = await keyStatus(pool, { current: B, previous: A }, HOUR_MS);
    expect(during.inUse).toEqual({ current: fpB, previous: fpA });
    expect(during.known.map((k) => [k.fingerprint, k.role])).toEqual([
      [fpB, 'current'],
      [fpA, 'previous'],
    ]);
    expect(during.rotation).toMatchObject({ previous: fpA, rowsUnderPrevious: 3, activeRowsUnderPrevious: 2, canDropPrevious: false });

    // A window later, with no recent call under the old key, it can be dropped.
    await pool.query(`UPDATE rate_limit_keys SET role_since = NOW() - interval '2 hours' WHERE role = 'previous'`);
    await pool.query(`UPDATE phone_rate_limits SET last_call_at = last_call_at - 2 * $1::bigint WHERE key_fp IS DISTINCT FROM $2`, [HOUR_MS, fpB]);
    const later = await keyStatus(pool, { current: B, previous: A }, HOUR_MS);
    expect(later.rotation).toMatchObject({ rowsUnderPrevious: 3, activeRowsUnderPrevious: 0, canDropPrevious: true });
    // Same rows, but the rotation is younger than the window: not yet.
    await pool.query(`UPDATE rate_limit_keys SET role_since = NOW() - interval '30 minutes' WHERE role = 'previous'`);
    expect((await keyStatus(pool, { current: B, previous: A }, HOUR_MS)).rotation?.canDropPrevious).toBe(false);
  });

  it('tells a database that was not migrated to run db init', async () => {
    const db = await createTestDatabase();
    const pool = createPool({ url: db.url, max: 1 });
    cleanups.push(
      () => db.drop(),
      () => pool.end(),
    );
    await expect(verifyKey(pool, { current: A })).rejects.toThrow(/ratelimit db init/);
    await expect(keyStatus(pool, { current: A }, HOUR_MS)).rejects.toThrow(/ratelimit db init/);
  });
});

describe('checkKey (admin commands)', () => {
  it('refuses what verifyKey refuses, and records or rotates nothing', async () => {
    const { pool } = await freshDatabase();
    expect((await checkKey(pool, { current: A })).outcome).toBe('unrecorded');
    expect(await roles(pool)).toEqual({});
    await verifyKey(pool, { current: A });
    expect((await checkKey(pool, { current: A })).outcome).toBe('matched');
    const wrong = await refusal(checkKey(pool, { current: C }));
    expect(wrong.message).toContain(fpA);
    expect(wrong.message).toContain(fpC);
    // The new key before any daemon rotated: refused, and still no rotation.
    const early = await refusal(checkKey(pool, { current: B, previous: A }));
    expect(early.message).toMatch(/rotation has not started/);
    expect(await roles(pool)).toEqual({ [fpA]: 'current' });
    await verifyKey(pool, { current: B, previous: A });
    expect((await checkKey(pool, { current: B, previous: A })).outcome).toBe('matched');
    expect((await checkKey(pool, { current: B })).warnings.join()).toMatch(/rotation is under way/);
  });
});

describe('foldKeyRows', () => {
  it("merges a number's old-hash row into its new-hash row, moves its list entry, and is idempotent", async () => {
    const { pool } = await freshDatabase();
    await verifyKey(pool, { current: A });
    await pool.query(
      `INSERT INTO phone_rate_limits (phone_hash, window_start, calls, last_call_at, denied_total, denials, blocked_until, region, phone_masked)
       VALUES ('old', 10, '{10,30}', 30, 2, '{25}', 900, 'US', '+1415•••••71')`,
    );
    await pool.query(`INSERT INTO rate_limit_lists (target_type, target, kind, created_by) VALUES ('number', 'old', 'block', 'test')`);
    await verifyKey(pool, { current: B, previous: A });
    await pool.query(
      `INSERT INTO phone_rate_limits (phone_hash, window_start, calls, last_call_at, denied_total, denials, blocked_until) VALUES ('new', 20, '{20}', 20, 1, '{22}', 500)`,
    );

    expect(
      await foldKeyRows(
        pool,
        [
          { previous: 'old', current: 'new' },
          { previous: 'never-seen', current: 'other' },
        ],
        fpB,
      ),
    ).toBe(1);
    const { rows } = await pool.query(
      'SELECT phone_hash, calls, last_call_at, denied_total, denials, blocked_until, region, phone_masked, key_fp FROM phone_rate_limits ORDER BY phone_hash',
    );
    expect(rows).toEqual([
      {
        phone_hash: 'new',
        calls: [10, 20, 30],
        last_call_at: 30,
        denied_total: 3,
        denials: [22, 25],
        blocked_until: 900,
        region: 'US',
        phone_masked: '+1415•••••71',
        key_fp: fpB,
      },
    ]);
    const lists = await pool.query('SELECT target, kind, key_fp FROM rate_limit_lists');
    expect(lists.rows).toEqual([{ target: 'new', kind: 'block', key_fp: fpB }]);
    expect(await foldKeyRows(pool, [{ previous: 'old', current: 'new' }], fpB)).toBe(0);
    expect((await pool.query('SELECT calls FROM phone_rate_limits')).rows).toEqual([{ calls: [10, 20, 30] }]);
  });

  it('counts list entries still under the previous key in keyStatus', async () => {
    const { pool } = await freshDatabase();
    await verifyKey(pool, { current: A });
    await pool.query(
      `INSERT INTO rate_limit_lists (target_type, target, kind, created_by) VALUES ('number', 'a-hash', 'block', 'test'), ('prefix', '+4470', 'block', 'test')`,
    );
    await verifyKey(pool, { current: B, previous: A });
    await pool.query(`INSERT INTO rate_limit_lists (target_type, target, kind, created_by) VALUES ('number', 'b-hash', 'allow', 'test')`);
    expect((await keyStatus(pool, { current: B, previous: A }, HOUR_MS)).rotation?.listEntriesUnderPrevious).toBe(1);
  });
});
