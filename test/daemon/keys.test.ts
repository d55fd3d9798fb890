// The daemon and the hashing key (docs/protocol.md *Keys*, issue #11): it records the key on first use,
// refuses to start with another one (exit 1, both fingerprints), and across a rotation
// (PHONE_ENCRYPTION_KEY_PREVIOUS) a number at its limit under the old key stays at its limit under
// the new one; `status` shows it, and `key status` follows the rotation until the previous key can
// be dropped. Everything through the binary; the database is read and a policy applied with src/db.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../src/db/embedded/index.js';
import { migrate } from '../../src/db/migrate.js';
import { verifyKey } from '../../src/db/keys.js';
import { keyFingerprint } from '../../src/core/key.js';
import { hashPhone } from '../../src/core/phone.js';
import { DecisionIds, rangeLabel } from '../../src/core/decision-id.js';
import { applyPolicy } from '../../src/db/policies.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { assertBuilt, closeAll, createTestDatabase, type DaemonProcess, runCli, startDaemon, stopAll, waitFor, WsClient } from '../helpers/fixture.js';

const OLD_KEY = 'daemon-keys-old-0123456789abcdef0123456789abcdef';
const NEW_KEY = 'daemon-keys-new-0123456789abcdef0123456789abcdef';
const OTHER_KEY = 'daemon-keys-other-0123456789abcdef0123456789abcd';
const [FP_OLD, FP_NEW, FP_OTHER] = [OLD_KEY, NEW_KEY, OTHER_KEY].map(keyFingerprint) as [string, string, string];
// Long enough that nothing ages out while the test runs; the drop is tested under a short policy.
const LIMITS = { RATE_LIMIT_PHONE_MAX: '2', RATE_LIMIT_PHONE_WINDOW: '1h' };
const AT_LIMIT = '+14155550123';
const MET_LATER = '+14155550124';
const SEEN_BY_STATUS = '+14155550125';
const BLOCKED = '+14155550126';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let pool: Pool;
const daemons: DaemonProcess[] = [];
const clients: WsClient[] = [];

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 2 });
});

afterAll(async () => {
  await closeAll(clients);
  await stopAll(daemons);
  await pool?.end();
  await db?.drop();
});

async function daemonWith(env: Record<string, string | undefined>): Promise<{ d: DaemonProcess; ws: WsClient }> {
  const d = await startDaemon({ databaseUrl: db!.url, env: { ...LIMITS, ...env } });
  daemons.push(d);
  const ws = await WsClient.connect(d.wsUrl);
  clients.push(ws);
  return { d, ws };
}

const consume = (ws: WsClient, phoneNumber: string) => ws.call({ type: 'rate_limit_consume', phoneNumber });
const rotatingEnv = { PHONE_ENCRYPTION_KEY: NEW_KEY, PHONE_ENCRYPTION_KEY_PREVIOUS: OLD_KEY };
const cli = (args: string[], env: Record<string, string | undefined> = rotatingEnv) => runCli(args, { DATABASE_URL: db!.url, ...LIMITS, ...env });

async function keyStatus(): Promise<{ rotation?: { previous: string; rowsUnderPrevious: number; activeRowsUnderPrevious: number; canDropPrevious: boolean } }> {
  const r = await cli(['key', 'status', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('the daemon and its hashing key', () => {
  it('records the key on first use', async () => {
    const { d, ws } = await daemonWith({ PHONE_ENCRYPTION_KEY: OLD_KEY });
    expect(d.logs.some((l) => l.msg === 'recorded the hashing key (first use of this database)' && l.key === FP_OLD)).toBe(true);
    const { rows } = await pool.query<{ fingerprint: string; role: string }>('SELECT fingerprint, role FROM rate_limit_keys');
    expect(rows).toEqual([{ fingerprint: FP_OLD, role: 'current' }]);
    // The number reaches its limit under the old key; another number is seen once.
    expect((await consume(ws, AT_LIMIT)).type).toBe('rate_limit_status');
    expect((await consume(ws, AT_LIMIT)).type).toBe('rate_limit_status');
    expect(await consume(ws, AT_LIMIT)).toMatchObject({ type: 'rate_limit_exceeded', reason: 'phone_rate_limit_exceeded' });
    expect((await consume(ws, MET_LATER)).type).toBe('rate_limit_status');
    expect((await consume(ws, SEEN_BY_STATUS)).type).toBe('rate_limit_status');
    await ws.close();
    expect((await d.stop()).code).toBe(0);
    const block = await cli(['block', BLOCKED, '--reason', 'before the rotation'], { PHONE_ENCRYPTION_KEY: OLD_KEY });
    expect(block.code, block.stderr).toBe(0);
  });

  it('refuses to start with another key: exit 1, both fingerprints named, nothing written', async () => {
    const r = await cli(['serve'], { PHONE_ENCRYPTION_KEY: OTHER_KEY, PORT: '0', HOST: '127.0.0.1' });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(FP_OLD);
    expect(r.stderr).toContain(FP_OTHER);
    const { rows } = await pool.query<{ fingerprint: string }>('SELECT fingerprint FROM rate_limit_keys');
    expect(rows.map((x) => x.fingerprint)).toEqual([FP_OLD]);
  });

  it('across a rotation, a number at its limit under the old key stays at its limit under the new one', async () => {
    const { d, ws } = await daemonWith(rotatingEnv);
    expect(d.logs.some((l) => l.msg === 'started a key rotation: see ratelimit key status' && l.key === FP_NEW && l.previous === FP_OLD)).toBe(true);

    expect(await consume(ws, AT_LIMIT)).toMatchObject({ type: 'rate_limit_exceeded', reason: 'phone_rate_limit_exceeded', used: 2, limit: 2 });
    // A number blocked under the old key stays blocked, and its entry moves to the new hash.
    expect(await consume(ws, BLOCKED)).toMatchObject({ type: 'rate_limit_exceeded', reason: 'number_blocked', rule: 'list:block' });
    const entry = await pool.query<{ target: string; key_fp: string }>(`SELECT target, key_fp FROM rate_limit_lists WHERE target_type = 'number'`);
    expect(entry.rows).toEqual([{ target: hashPhone(BLOCKED, NEW_KEY), key_fp: FP_NEW }]);
    const { rows } = await pool.query<{ phone_hash: string; n: number; key_fp: string }>(
      'SELECT phone_hash, cardinality(calls) AS n, key_fp FROM phone_rate_limits WHERE phone_hash = ANY($1)',
      [[hashPhone(AT_LIMIT, OLD_KEY), hashPhone(AT_LIMIT, NEW_KEY)]],
    );
    expect(rows).toEqual([{ phone_hash: hashPhone(AT_LIMIT, NEW_KEY), n: 2, key_fp: FP_NEW }]);
    const atLimit = await cli(['status', AT_LIMIT, '--json']);
    expect(atLimit.code, atLimit.stderr).toBe(0);
    expect(JSON.parse(atLimit.stdout)).toMatchObject({
      hash: hashPhone(AT_LIMIT, NEW_KEY),
      tracked: true,
      allowed: false,
      used: 2,
      limit: 2,
      reason: 'phone_rate_limit_exceeded',
    });

    // Before any daemon met it, status under the new key shows the number's usage all the same.
    const unmet = await cli(['status', SEEN_BY_STATUS, '--json']);
    expect(unmet.code, unmet.stderr).toBe(0);
    expect(JSON.parse(unmet.stdout)).toMatchObject({ hash: hashPhone(SEEN_BY_STATUS, NEW_KEY), tracked: true, allowed: true, used: 1, limit: 2 });

    // One number not met yet under the new key: the previous key must stay.
    const during = await keyStatus();
    expect(during.rotation).toMatchObject({ previous: FP_OLD, rowsUnderPrevious: 1, activeRowsUnderPrevious: 1, canDropPrevious: false });

    // Met now: its one call under the old key still counts (limit 2: one more allowed, then denied).
    expect(await consume(ws, MET_LATER)).toMatchObject({ type: 'rate_limit_status', used: 2, remaining: 0 });
    expect(await consume(ws, MET_LATER)).toMatchObject({ type: 'rate_limit_exceeded', reason: 'phone_rate_limit_exceeded' });
    const folded = await keyStatus();
    expect(folded.rotation).toMatchObject({ previous: FP_OLD, rowsUnderPrevious: 0, activeRowsUnderPrevious: 0, canDropPrevious: false });

    // The longest window is 1h: under a policy whose longest window is short, once it has passed
    // since the rotation, the previous key can be dropped.
    await applyPolicy(pool, { yaml: 'number:\n  limits: [{limit: 2, window: 2s}]\n', by: 'keys test', reason: null });
    await waitFor('key status to allow dropping the previous key', async () => ((await keyStatus()).rotation?.canDropPrevious ? true : undefined), 30_000, 500);
    const human = await cli(['key', 'status']);
    expect(human.stdout).toContain('The previous key can be dropped now');
  });
});

describe('outcomes across a key rotation', () => {
  it('an id issued under the previous key is still accepted, and status under the new key shows its outcome', async () => {
    const { ws } = await daemonWith(rotatingEnv);
    const phone = '+14155550127';
    // Issued by a daemon that still had only the old key (ids are self-contained: minted here alike).
    const oldId = new DecisionIds(OLD_KEY).encode({ hash: hashPhone(phone, OLD_KEY), region: 'US', range: rangeLabel(phone), atMs: Date.now() - 60_000 });
    expect(await ws.call({ type: 'rate_limit_outcome', id: 1, decisionId: oldId, outcome: 'verified' })).toMatchObject({
      type: 'rate_limit_outcome_recorded',
      duplicate: false,
    });
    const otherId = new DecisionIds(OTHER_KEY).encode({ hash: hashPhone(phone, OTHER_KEY), region: 'US', range: rangeLabel(phone), atMs: Date.now() });
    expect(await ws.call({ type: 'rate_limit_outcome', id: 2, decisionId: otherId, outcome: 'verified' })).toMatchObject({
      type: 'error',
      code: 'unknown_decision',
    });
    const status = await cli(['status', phone, '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).outcomes).toEqual([expect.objectContaining({ outcome: 'verified', source: 'ws' })]);
  });
});

describe('a daemon started while the database was down', () => {
  it('with another key: once the database is back, it exits 1 without writing what it decided from memory', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-keys-outage-'));
    // As root the server runs as `postgres`, which must be able to pass through.
    await fs.chmod(dir, 0o711);
    let server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), fsync: false });
    let late: DaemonProcess | undefined;
    try {
      const p = createPool({ url: server.url, max: 1 });
      await migrate(p);
      await verifyKey(p, { current: OLD_KEY });
      await p.end();
      await server.stop();

      late = await startDaemon({ databaseUrl: server.url, env: { ...LIMITS, PHONE_ENCRYPTION_KEY: OTHER_KEY, RATELIMIT_DB_TIMEOUT: '1s' } });
      const ws = await WsClient.connect(late.wsUrl);
      clients.push(ws);
      expect(await consume(ws, AT_LIMIT)).toMatchObject({ type: 'rate_limit_status', source: 'memory' });

      server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), fsync: false });
      const exit = await late.waitForExit();
      expect(exit.code).toBe(1);
      expect(late.stdout() + late.stderr()).toContain(FP_OLD);
      expect(late.stdout() + late.stderr()).toContain(FP_OTHER);
      const check = createPool({ url: server.url, max: 1 });
      try {
        const { rows } = await check.query<{ n: number }>('SELECT count(*)::int AS n FROM phone_rate_limits');
        expect(rows[0]!.n).toBe(0);
      } finally {
        await check.end();
      }
    } finally {
      await late?.stop('SIGKILL');
      await server.stop();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
