// Every admin command through the real binary, as an operator would run it.
// `npm test` builds dist/ first (pretest), which bin/ratelimit.js runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPool, type Pool } from '../../src/db/pool.js';
import { seedConsumes } from '../helpers/seed.js';
import { hashPhone, maskPhone } from '../../src/core/phone.js';
import { makeLogPolicy } from '../../src/core/policy/log.js';
import { loadMigrations } from '../../src/db/migrate.js';
import { createTestDatabase } from '../helpers/fixture.js';

const BIN = join(import.meta.dirname, '../..', 'bin', 'ratelimit.js');
const KEY = 'cli-test-key-0123456789abcdefghijklmnop';
const NUMBER = '+14155552671';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { PATH: process.env.PATH, HOME: process.env.HOME, PHONE_ENCRYPTION_KEY: KEY, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

let db: { url: string; drop(): Promise<void> };
let pool: Pool;
let cwd: string;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 2 });
  cwd = await mkdtemp(join(tmpdir(), 'ratelimit-cli-'));
});
afterAll(async () => {
  await pool.end();
  await db.drop();
  await rm(cwd, { recursive: true, force: true });
});

describe('ratelimit (admin CLI)', () => {
  it('hash prints the E.164 form and the HMAC, for any spelling', async () => {
    const a = await run(['hash', '+1 (415) 555-2671']);
    expect(a).toMatchObject({ code: 0, stderr: '' });
    expect(a.stdout.trim()).toBe(`${NUMBER}\t${hashPhone(NUMBER, KEY)}`);
    const b = await run(['hash', '+1.415.555.2671', '--json']);
    expect(JSON.parse(b.stdout)).toEqual({ e164: NUMBER, region: 'US', hash: hashPhone(NUMBER, KEY) });
  });

  it('invalid numbers exit 2 with one readable line, before touching the database', async () => {
    for (const cmd of ['hash', 'status', 'reset']) {
      const r = await run([cmd, '4155552671'], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
      expect(r.code, cmd).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^ratelimit: phone number must be in international format/);
    }
  });

  it('usage errors exit 2; help and version exit 0', async () => {
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run(['status'])).code).toBe(2);
    expect((await run(['stats', '--no-such-flag'])).code).toBe(2);
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    for (const c of ['serve', 'db', 'status', 'reset', 'stats', 'hash']) expect(help.stdout).toContain(c);
    expect((await run(['--version'])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('a bad setting is a usage error naming the variable', async () => {
    const r = await run(['stats', '--phone-window', 'soon'], { DATABASE_URL: db.url });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--phone-window must be a duration/);
  });

  it('an unreachable database exits 1 and says how to set DATABASE_URL, without the password', async () => {
    const r = await run(['stats'], { DATABASE_URL: 'postgres://admin:s3cret@127.0.0.1:1/ratelimit' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot reach PostgreSQL at postgres:\/\/admin:\*\*\*@127\.0\.0\.1:1\/ratelimit/);
    expect(r.stderr).toMatch(/DATABASE_URL/);
    expect(r.stderr).not.toContain('s3cret');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a refused password exits 1 and says so', async () => {
    const url = new URL(db.url);
    url.password = 'wrong-password';
    const r = await run(['stats'], { DATABASE_URL: url.toString() });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused the user name or password; check both in DATABASE_URL/);
  });

  it('status on an uninitialised database says to run db init', async () => {
    const r = await run(['status', NUMBER], { DATABASE_URL: db.url });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not initialised; run: ratelimit db init/);
  });

  it('db init applies migrations, then is a no-op; both print a stats summary', async () => {
    const first = await run(['db', 'init'], { DATABASE_URL: db.url });
    expect(first.code).toBe(0);
    const migrations = await loadMigrations();
    const count = migrations.length;
    expect(first.stdout).toMatch(new RegExp(`Applied ${count} migrations`));
    expect(first.stdout).toMatch(/numbers tracked/);
    const second = await run(['db', 'init', '--json'], { DATABASE_URL: db.url });
    expect(second.code).toBe(0);
    const report = JSON.parse(second.stdout);
    expect(report).toMatchObject({ applied: [], alreadyApplied: count, schemaVersion: migrations.at(-1)!.id, stats: { numbersTracked: 0 } });
  });

  it('status, reset and stats report what the database holds', async () => {
    const policy = makeLogPolicy([{ id: 'phone', limit: 2, windowMs: 3_600_000 }]);
    const req = { hash: hashPhone(NUMBER, KEY), region: 'US', masked: maskPhone(NUMBER) };
    await seedConsumes(pool, [req, req, req], policy);

    const human = await run(['status', '+1 (415) 555-2671'], { DATABASE_URL: db.url });
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('+14155552•••');
    expect(human.stdout).toMatch(/2 of 2 per 1h/);
    expect(human.stdout).toMatch(/denied, allowed \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in /);
    expect(human.stdout).not.toContain('4155552671');

    const json = await run(['status', NUMBER, '--json'], { DATABASE_URL: db.url });
    const s = JSON.parse(json.stdout);
    expect(s).toMatchObject({
      phoneNumber: '+14155552•••',
      hash: req.hash,
      region: 'US',
      allowed: false,
      limit: 2,
      used: 2,
      remaining: 0,
      deniedInWindow: 1,
      deniedTotal: 1,
      tracked: true,
    });
    expect(s.retryAfterMs).toBeGreaterThan(3_500_000);
    expect(s.resetTime - s.now).toBe(s.retryAfterMs);

    // The CLI reports what the daemon enforces: with another limit configured, the same row reads differently.
    const wider = JSON.parse((await run(['status', NUMBER, '--json', '--phone-limit', '5'], { DATABASE_URL: db.url })).stdout);
    expect(wider).toMatchObject({ allowed: true, used: 2, remaining: 3, limit: 5 });

    const stats = JSON.parse((await run(['stats', '--json'], { DATABASE_URL: db.url })).stdout);
    expect(stats).toMatchObject({
      numbersTracked: 1,
      numbersTrackedEstimated: false,
      numbersActive: 1,
      numbersAtLimit: 1,
      callsInWindow: 2,
      denialsInWindow: 1,
      limit: 2,
      windowMs: 3_600_000,
    });
    expect(stats.regions).toEqual([{ region: 'US', numbersActive: 1, numbersAtLimit: 1, callsInWindow: 2, denialsInWindow: 1 }]);

    const reset = await run(['reset', NUMBER, '--reason', 'customer called support', '--json'], { DATABASE_URL: db.url, RATELIMIT_OPERATOR: 'alice' });
    expect(reset.code).toBe(0);
    expect(JSON.parse(reset.stdout)).toMatchObject({
      phoneNumber: '+14155552•••',
      reset: true,
      previousCount: 2,
      resetBy: 'alice',
      reason: 'customer called support',
    });

    const after = JSON.parse((await run(['status', NUMBER, '--json'], { DATABASE_URL: db.url })).stdout);
    expect(after).toMatchObject({ allowed: true, used: 0, remaining: 2, lastReset: { by: 'alice', reason: 'customer called support', previousCount: 2 } });
    const { rows } = await pool.query('SELECT phone_hash, reset_by, reason FROM rate_limit_resets');
    expect(rows).toEqual([{ phone_hash: req.hash, reset_by: 'alice', reason: 'customer called support' }]);

    const humanReset = await run(['reset', NUMBER], { DATABASE_URL: db.url });
    expect(humanReset.stdout).toMatch(/Reset \+14155552•••: cleared 0 calls/);
    const statsHuman = await run(['stats'], { DATABASE_URL: db.url });
    expect(statsHuman.stdout).toMatch(/numbers tracked/);
    expect(statsHuman.stdout).toMatch(/US/);
  });

  it('a read command that outlasts RATELIMIT_CLI_TIMEOUT fails saying what timed out and what to try', async () => {
    // A migration or a bulk load holding the table: stats's queries wait on the lock until cancelled.
    const holder = await pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE phone_rate_limits IN ACCESS EXCLUSIVE MODE');
      const out = await run(['stats', '--json'], { DATABASE_URL: db.url, RATELIMIT_CLI_TIMEOUT: '1s' });
      expect(out.code).toBe(1);
      // --json: the failure is also one JSON document on stdout (q4's error documents).
      expect(JSON.parse(out.stdout)).toMatchObject({ error: { code: 'database_error' } });
      expect(out.stderr).toMatch(/stats: a query on .* took longer than 1s and was cancelled \(RATELIMIT_CLI_TIMEOUT\)/);
      expect(out.stderr).toContain('RATELIMIT_CLI_TIMEOUT=30s');
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
  });

  it('no raw phone number is stored anywhere in the database', async () => {
    const { rows } = await pool.query<{ t: string }>(
      `SELECT string_agg(row_to_json(x)::text, ' ') AS t FROM (
         SELECT * FROM phone_rate_limits) x
       UNION ALL SELECT string_agg(row_to_json(y)::text, ' ') FROM (SELECT * FROM rate_limit_resets) y`,
    );
    const dump = rows.map((r) => r.t).join(' ');
    expect(dump.length).toBeGreaterThan(100);
    expect(dump).not.toMatch(/4155552671|415.?555.?2671/);
    expect(dump).toContain(hashPhone(NUMBER, KEY));
  });

  it("without PHONE_ENCRYPTION_KEY, hash uses the daemon's key file and never generates one", async () => {
    const dataDir = join(cwd, 'data');
    const none = await run(['hash', NUMBER, '--data-dir', dataDir], { PHONE_ENCRYPTION_KEY: undefined });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(join(dataDir, 'phone-encryption.key'));
    expect(none.stderr).toMatch(/--data-dir/);
    await expect(stat(dataDir)).rejects.toThrow();
    // The key file as the daemon (or db init) leaves it.
    await mkdir(dataDir, { recursive: true });
    const keyFile = join(dataDir, 'phone-encryption.key');
    await writeFile(keyFile, 'a-key-the-daemon-generated-0123456789abcdef\n', { mode: 0o600 });
    const a = await run(['hash', NUMBER, '--data-dir', dataDir], { PHONE_ENCRYPTION_KEY: undefined });
    expect(a.code, a.stderr).toBe(0);
    expect(a.stderr).toBe('');
    expect(a.stdout.trim().split('\t')[1]).toBe(hashPhone(NUMBER, 'a-key-the-daemon-generated-0123456789abcdef'));
  });

  it('production refuses to hash without a long key', async () => {
    const r = await run(['hash', NUMBER], { NODE_ENV: 'production', PHONE_ENCRYPTION_KEY: 'short' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/PHONE_ENCRYPTION_KEY must be set to at least 32 characters/);
  });
});
