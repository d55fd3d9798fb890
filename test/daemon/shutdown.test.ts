// Stopping: SIGTERM answers what is in flight, closes sockets with 1001, writes everything and
// exits 0; a second signal exits at once; a daemon that cannot start says why and exits 1.
//
// To have requests provably in flight when the signal lands, the test holds row locks on a
// number in the daemon's database: its consume blocks inside PostgreSQL (visible in
// pg_stat_activity) until the test lets go, after the daemon has begun shutting down.

import { createHmac } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  crashSigns,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  type HttpResult,
  postJson,
  type Reply,
  runCli,
  startDaemon,
  stopAll,
  TEST_KEY,
  waitFor,
  WsClient,
} from '../helpers/fixture.js';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
const daemons: DaemonProcess[] = [];
const clients = new Set<WsClient>();
const pgClients: pg.Client[] = [];

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
});

afterEach(async () => {
  // Release locks first, so a daemon blocked on them can finish or be killed cleanly.
  for (const c of pgClients.splice(0)) await c.end().catch(() => undefined);
  await closeAll(clients);
  clients.clear();
  await stopAll(daemons.splice(0));
});

afterAll(async () => {
  await db?.drop();
});

const hashOf = (e164: string) => createHmac('sha256', TEST_KEY).update(e164, 'utf8').digest('hex');

async function pgClient(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: db!.url });
  c.on('error', () => undefined);
  await c.connect();
  pgClients.push(c);
  return c;
}

async function start(env: Record<string, string> = {}): Promise<DaemonProcess> {
  const d = await startDaemon({
    databaseUrl: db!.url,
    env: { RATE_LIMIT_PHONE_MAX: '1000', RATE_LIMIT_IP_MAX: '1000000', RATELIMIT_MESSAGES_PER_SECOND: '1000000', RATELIMIT_SHUTDOWN_TIMEOUT: '60s', ...env },
  });
  daemons.push(d);
  return d;
}

async function connect(d: DaemonProcess): Promise<WsClient> {
  const c = await WsClient.connect(d.wsUrl);
  clients.add(c);
  return c;
}

/** Holds FOR UPDATE locks on the numbers' rows (which must exist) until the returned client ends its transaction. */
async function lockRows(numbers: string[]): Promise<pg.Client> {
  const c = await pgClient();
  await c.query('BEGIN');
  const { rowCount } = await c.query('SELECT 1 FROM phone_rate_limits WHERE phone_hash = ANY($1) FOR UPDATE', [numbers.map(hashOf)]);
  expect(rowCount).toBe(numbers.length);
  return c;
}

async function lockWaiters(observer: pg.Client): Promise<number> {
  const { rows } = await observer.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
  );
  return rows[0]!.n;
}

async function storedCalls(observer: pg.Client, numbers: string[]): Promise<Map<string, number>> {
  const { rows } = await observer.query<{ phone_hash: string; n: number }>(
    'SELECT phone_hash, cardinality(calls) AS n FROM phone_rate_limits WHERE phone_hash = ANY($1)',
    [numbers.map(hashOf)],
  );
  const byHash = new Map(rows.map((r) => [r.phone_hash, r.n]));
  return new Map(numbers.map((n) => [n, byHash.get(hashOf(n)) ?? 0]));
}

const logged = (d: DaemonProcess, msg: string) => waitFor(`daemon to log "${msg}"`, () => (d.logs.some((l) => l.msg?.startsWith(msg)) ? true : undefined));

describe('SIGTERM', () => {
  it('answers every request in flight, closes sockets with 1001, exits 0 and loses nothing', async () => {
    const d = await start();
    const observer = await pgClient();
    const [blockedWs, blockedHttp] = [freshNumber(), freshNumber()];
    // The rows must exist to be locked; these first calls count like any other.
    const answers: Array<{ phoneNumber: string; reply: Reply }> = [];
    for (const phoneNumber of [blockedWs, blockedHttp]) {
      const r = await postJson(d.url, '/v1/consume', { phoneNumber });
      answers.push({ phoneNumber, reply: r.json as Reply });
    }
    const locker = await lockRows([blockedWs, blockedHttp]);

    const [a, b, c] = await Promise.all([connect(d), connect(d), connect(d)]);
    // Alone in its statement, so only it waits on the lock and the rest of the traffic flows.
    const pending: Array<Promise<void>> = [];
    const ask = (s: WsClient, phoneNumber: string) =>
      pending.push(s.call({ type: 'rate_limit_consume', phoneNumber }).then((reply) => void answers.push({ phoneNumber, reply })));
    ask(a, blockedWs);
    await waitFor('the first consume to wait on the row lock', async () => ((await lockWaiters(observer)) >= 1 ? true : undefined));

    // Behind the blocked one on socket a: decided and stored, but their replies must wait their turn.
    const queuedOnA = Array.from({ length: 5 }, () => freshNumber());
    const others = Array.from({ length: 5 }, () => freshNumber());
    for (let i = 0; i < 40; i++) ask(a, queuedOnA[i % queuedOnA.length]!);
    for (let i = 0; i < 60; i++) ask(i % 2 ? b : c, others[i % others.length]!);
    await waitFor('the queued consumes to be stored', async () => {
      const stored = await storedCalls(observer, queuedOnA);
      return [...stored.values()].reduce((x, y) => x + y, 0) === 40 ? true : undefined;
    });
    expect(a.received).toHaveLength(0);

    // An HTTP request in flight too: the second statement slot, also blocked.
    let httpAnswer: HttpResult | undefined;
    const httpDone = postJson(d.url, '/v1/consume', { phoneNumber: blockedHttp }).then((r) => {
      httpAnswer = r;
      answers.push({ phoneNumber: blockedHttp, reply: r.json as Reply });
    });
    await waitFor('the HTTP consume to wait on the row lock', async () => ((await lockWaiters(observer)) >= 2 ? true : undefined));

    d.child.kill('SIGTERM');
    await logged(d, 'shutting down');
    // No new connections while draining.
    await expect(WsClient.connect(d.wsUrl)).rejects.toThrow();
    await locker.query('COMMIT');

    await Promise.all([...pending, httpDone]);
    const closes = await Promise.all([a.closed, b.closed, c.closed]);
    expect(closes.map((x) => x.code)).toStrictEqual([1001, 1001, 1001]);
    expect(await d.waitForExit()).toStrictEqual({ code: 0, signal: null });

    expect(httpAnswer!.status).toBe(200);
    expect(a.received.map((r) => r.type)).toStrictEqual(Array(41).fill('rate_limit_status'));
    expect(answers).toHaveLength(2 + 41 + 60 + 1);
    expect(answers.filter((x) => x.reply.type !== 'rate_limit_status' || x.reply.allowed !== true)).toStrictEqual([]);
    const numbers = [blockedWs, blockedHttp, ...queuedOnA, ...others];
    const stored = await storedCalls(observer, numbers);
    for (const n of numbers) {
      expect({ n, stored: stored.get(n) }).toStrictEqual({ n, stored: answers.filter((x) => x.phoneNumber === n).length });
    }
    expect(d.logs.some((l) => l.msg === 'shut down cleanly')).toBe(true);
    expect(crashSigns(d)).toStrictEqual([]);
  });

  it('exits at once, non-zero, on a second signal during a slow shutdown', async () => {
    const d = await start();
    const observer = await pgClient();
    const phone = freshNumber();
    expect((await postJson(d.url, '/v1/consume', { phoneNumber: phone })).status).toBe(200);
    const locker = await lockRows([phone]);
    const s = await connect(d);
    const stuck = s.call({ type: 'rate_limit_consume', phoneNumber: phone }).catch((err: Error) => err);
    await waitFor('the consume to wait on the row lock', async () => ((await lockWaiters(observer)) >= 1 ? true : undefined));

    d.child.kill('SIGTERM');
    await logged(d, 'shutting down');
    // The shutdown deadline is 60 s and the lock is never released before the exit: only the
    // second signal can end the process within stop()'s wait.
    const exit = await d.stop('SIGTERM');
    expect(exit.signal).toBeNull();
    expect(exit.code).not.toBe(0);
    expect(d.logs.some((l) => l.msg === 'second signal: exiting now')).toBe(true);
    expect((await s.closed).code).toBe(1006);
    await locker.query('ROLLBACK');
    await expect(stuck).resolves.toBeInstanceOf(Error);
  });

  it('SIGINT shuts an idle daemon down cleanly too', async () => {
    const d = await start();
    const s = await connect(d);
    expect(await s.call({ type: 'rate_limit_check', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status' });
    const exit = await d.stop('SIGINT');
    expect(exit).toStrictEqual({ code: 0, signal: null });
    expect((await s.closed).code).toBe(1001);
  });
});

describe('a daemon that cannot start', () => {
  function expectOneLineFailure(r: { code: number | null; stderr: string }, mentions: RegExp): void {
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^ratelimit: /);
    expect(lines[0]).toMatch(mentions);
  }

  it('refuses to start in production without PHONE_ENCRYPTION_KEY', async () => {
    const r = await runCli(['serve'], { NODE_ENV: 'production', PHONE_ENCRYPTION_KEY: undefined, DATABASE_URL: db!.url, PORT: '0' });
    expectOneLineFailure(r, /PHONE_ENCRYPTION_KEY/);
  });

  it('refuses an invalid setting, naming it', async () => {
    const r = await runCli(['serve'], { RATE_LIMIT_PHONE_MAX: 'lots', DATABASE_URL: db!.url, PORT: '0' });
    expectOneLineFailure(r, /RATE_LIMIT_PHONE_MAX/);
  });

  it('exits 1 when its port is taken', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve, reject) => {
      blocker.once('error', reject);
      blocker.listen(0, '127.0.0.1', () => resolve());
    });
    try {
      const port = (blocker.address() as net.AddressInfo).port;
      const r = await runCli(['serve'], { DATABASE_URL: db!.url, PORT: String(port), HOST: '127.0.0.1' });
      expectOneLineFailure(r, new RegExp(`${port}`));
      // The port's owner is undisturbed.
      expect(blocker.listening).toBe(true);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});

describe('shutdown while the database is down', () => {
  it('leaves what memory decided in the spool and exits 0: a spooled shutdown is clean', async () => {
    const { mkdtemp, rm, chmod } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const { startEmbeddedPostgres } = await import('../../src/db/embedded/index.js');
    const dir = await mkdtemp(path.join(tmpdir(), 'ratelimit-shutdown-down-'));
    await chmod(dir, 0o711);
    const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), fsync: false });
    try {
      const d = await startDaemon({
        databaseUrl: server.url,
        env: { RATELIMIT_DB_TIMEOUT: '1s', RATELIMIT_SHUTDOWN_TIMEOUT: '3s', RATELIMIT_DATA_DIR: path.join(dir, 'data') },
      });
      daemons.push(d);
      const r1 = await postJson(d.url, '/v1/consume', { phoneNumber: freshNumber() });
      expect(r1.status).toBe(200);
      await server.stop();
      const r2 = await postJson(d.url, '/v1/consume', { phoneNumber: freshNumber() });
      expect(r2.status).toBe(200);
      expect(r2.json).toMatchObject({ source: 'memory' });
      const exit = await d.stop('SIGTERM');
      expect(exit).toStrictEqual({ code: 0, signal: null });
      expect(
        d.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('database unreachable at exit') && (l as { spooled?: number }).spooled === 1),
      ).toBe(true);
      expect(crashSigns(d)).toEqual([]);
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
