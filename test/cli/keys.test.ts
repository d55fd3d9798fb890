// The hashing key and the admin commands (docs/protocol.md *Keys*, issue #11), through the real
// binary: `db init` records the key on first use; every command that hashes or reads hashed rows
// refuses another key with exit 1 naming both fingerprints; no key is ever generated for a
// DATABASE_URL; no command but `db init` creates an embedded cluster.
// `npm test` builds dist/ first (pretest), which bin/ratelimit.js runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPool, type Pool } from '../../src/db/pool.js';
import { keyFingerprint } from '../../src/core/key.js';
import { hashPhone } from '../../src/core/phone.js';
import { createTestDatabase } from '../helpers/fixture.js';

const BIN = join(import.meta.dirname, '../..', 'bin', 'ratelimit.js');
const KEY_A = 'keys-cli-key-a-0123456789abcdefghijklmnop';
const KEY_B = 'keys-cli-key-b-0123456789abcdefghijklmnop';
const FP_A = keyFingerprint(KEY_A);
const FP_B = keyFingerprint(KEY_B);
const NUMBER = '+14155552671';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The binary with exactly `env` (plus PATH and HOME): nothing configures it by accident. */
function run(args: string[], env: Record<string, string>, cwd = process.cwd()): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

let db: { url: string; drop(): Promise<void> };
let pool: Pool;
let empty: string;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 2 });
  empty = await mkdtemp(join(tmpdir(), 'ratelimit-keys-'));
});
afterAll(async () => {
  await pool.end();
  await db.drop();
  await rm(empty, { recursive: true, force: true });
});

describe('hashing key (admin commands)', () => {
  it('db init records the key on first use, then finds it matching', async () => {
    const first = await run(['db', 'init', '--json'], { DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY_A });
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).key).toEqual({ outcome: 'recorded', fingerprint: FP_A, previousFingerprint: null });
    const { rows } = await pool.query<{ fingerprint: string; role: string }>('SELECT fingerprint, role FROM rate_limit_keys');
    expect(rows).toEqual([{ fingerprint: FP_A, role: 'current' }]);
    const again = await run(['db', 'init'], { DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY_A });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`Hashing key: ${FP_A} matches`);
    // The right key is accepted by the commands that check it.
    const status = await run(['status', NUMBER, '--json'], { DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY_A });
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).hash).toBe(hashPhone(NUMBER, KEY_A));
  });

  it('refuses another key in every command that hashes or reads hashed rows: exit 1, both fingerprints', async () => {
    const env = { DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY_B };
    const commands = [
      ['status', NUMBER],
      ['reset', NUMBER, '--reason', 'test'],
      ['block', NUMBER],
      ['allow', NUMBER],
      ['unlist', NUMBER],
      ['block', '--prefix', '+4470'],
      ['list'],
      ['stats'],
      ['top', '--once'],
      ['key', 'status'],
    ];
    for (const args of commands) {
      const r = await run(args, env);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr, args.join(' ')).toContain(FP_A);
      expect(r.stderr, args.join(' ')).toContain(FP_B);
    }
    // Nothing was written under the wrong key: no audit row, no list entry, no number row.
    const { rows } = await pool.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM rate_limit_audit)::int + (SELECT count(*) FROM rate_limit_lists)::int
            + (SELECT count(*) FROM rate_limit_resets)::int + (SELECT count(*) FROM phone_rate_limits)::int AS n`,
    );
    expect(rows[0]!.n).toBe(0);
  });

  it('key status prints what it knows even for a wrong key, and exits 1', async () => {
    const r = await run(['key', 'status', '--json'], { DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY_B });
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.inUse.current).toBe(FP_B);
    expect(report.known.map((k: { fingerprint: string; role: string }) => [k.fingerprint, k.role])).toEqual([[FP_A, 'current']]);
    expect(report.mismatch).toContain(FP_A);
    const ok = await run(['key', 'status'], { DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY_A });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(FP_A);
    expect(ok.stdout).toContain('No rotation under way');
  });

  it('never generates a key for a DATABASE_URL: exit 1 with how to make one', async () => {
    for (const args of [
      ['status', NUMBER],
      ['reset', NUMBER],
      ['block', NUMBER],
      ['key', 'status'],
    ]) {
      const r = await run(args, { DATABASE_URL: db.url }, empty);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toContain('openssl rand -base64 48');
    }
    expect(await readdir(empty)).toEqual([]);
    // Commands that hash nothing run without a key.
    const list = await run(['list', '--json'], { DATABASE_URL: db.url }, empty);
    expect(list.code, list.stderr).toBe(0);
  });

  it('without DATABASE_URL, an admin command in a folder with no cluster says where it looked and creates nothing', async () => {
    for (const args of [['status', NUMBER], ['list'], ['stats'], ['key', 'status']]) {
      const r = await run(args, { PHONE_ENCRYPTION_KEY: KEY_A }, empty);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toContain(join(empty, '.ratelimit', 'pg'));
      expect(r.stderr).toMatch(/--data-dir/);
      expect(r.stderr).toMatch(/RATELIMIT_DATA_DIR/);
      expect(r.stderr).toMatch(/DATABASE_URL/);
    }
    // And without a key: it says where it looked for the daemon's key file, generating none.
    const nokey = await run(['status', NUMBER], {}, empty);
    expect(nokey.code).toBe(1);
    expect(nokey.stderr).toContain(join(empty, '.ratelimit', 'phone-encryption.key'));
    expect(nokey.stderr).toMatch(/--data-dir/);
    expect(await readdir(empty)).toEqual([]);
  });
});
