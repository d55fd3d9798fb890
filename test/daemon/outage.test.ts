// The database stops in the middle of a load and comes back: the daemon keeps answering from
// memory, says so on /health, and once the database is back writes what it admitted, so the
// stored rows account for every allowed call. A daemon started during the outage does too.

import { createHmac } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';
import {
  assertBuilt,
  closeAll,
  crashSigns,
  freshNumber,
  health,
  httpRequest,
  postJson,
  startDaemon,
  stopAll,
  TEST_KEY,
  waitFor,
  WsClient,
  type DaemonProcess,
  type Reply,
} from '../helpers/fixture.js';

// Large enough that no number reaches it, so nothing is denied and no timestamp is trimmed:
// every allowed reply must then be exactly one stored call.
const PHONE_MAX = 1000;
const NUMBERS = 8;
const PACE_MS = 25;

let tempDir: string | undefined;
let server: EmbeddedServer | undefined;
let daemon: DaemonProcess | undefined;
/** Started while the database is down. */
let lateDaemon: DaemonProcess | undefined;
const clients = new Set<WsClient>();

beforeAll(async () => {
  assertBuilt();
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-outage-'));
  // mkdtemp makes it 0700; as root the server runs as `postgres`, which must be able to pass through.
  await fs.chmod(tempDir, 0o711);
  server = await startEmbeddedPostgres({ dataDir: path.join(tempDir, 'pg'), fsync: false });
  daemon = await startDaemon({ databaseUrl: server.url, env: DAEMON_ENV });
});

const DAEMON_ENV = {
  RATELIMIT_DB_TIMEOUT: '1s',
  RATE_LIMIT_PHONE_MAX: String(PHONE_MAX),
  RATE_LIMIT_IP_MAX: '1000000',
  RATELIMIT_MESSAGES_PER_SECOND: '1000000',
};

afterAll(async () => {
  await closeAll(clients);
  await stopAll([daemon, lateDaemon]);
  await server?.stop();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

interface Answer {
  via: 'ws' | 'http';
  kind: 'check' | 'consume';
  phoneNumber: string;
  status?: number;
  reply: Reply;
}

/** Paced consumes and checks from several sockets and over HTTP, until stopped. */
class Load {
  readonly answers: Answer[] = [];
  readonly failures: string[] = [];
  sent = 0;
  private stopped = false;
  private readonly workers: Array<Promise<void>> = [];

  constructor(
    private readonly numbers: string[],
    private readonly url: string,
  ) {}

  start(sockets: WsClient[]): void {
    for (const s of sockets) for (let w = 0; w < 2; w++) this.workers.push(this.run((frame) => s.call(frame).then((reply) => ({ via: 'ws' as const, reply }))));
    this.workers.push(
      this.run(async (frame) => {
        const r = await postJson(this.url, frame.type === 'rate_limit_check' ? '/v1/check' : '/v1/consume', { phoneNumber: frame.phoneNumber });
        return { via: 'http' as const, status: r.status, reply: r.json as Reply };
      }),
    );
  }

  private async run(ask: (frame: { type: string; phoneNumber: string }) => Promise<Omit<Answer, 'kind' | 'phoneNumber'>>): Promise<void> {
    while (!this.stopped) {
      const n = this.sent++;
      const phoneNumber = this.numbers[n % this.numbers.length]!;
      const kind = n % 5 === 4 ? 'check' : 'consume';
      try {
        this.answers.push({ kind, phoneNumber, ...(await ask({ type: `rate_limit_${kind}`, phoneNumber })) });
      } catch (err) {
        this.failures.push(`${kind} ${phoneNumber}: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, PACE_MS));
    }
  }

  count(pred: (a: Answer) => boolean): number {
    return this.answers.filter(pred).length;
  }

  /** Waits (bounded) until `pred` holds for at least `n` answers. */
  until(what: string, pred: (a: Answer) => boolean, n: number, timeoutMs = 30_000): Promise<true> {
    return waitFor(`${n} answers ${what} (have ${this.count(pred)})`, () => (this.count(pred) >= n ? true : undefined), timeoutMs, 50);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
  }
}

const hashOf = (e164: string) => createHmac('sha256', TEST_KEY).update(e164, 'utf8').digest('hex');

async function storedCalls(url: string, numbers: string[]): Promise<Map<string, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ phone_hash: string; n: number }>(
      'SELECT phone_hash, cardinality(calls) AS n FROM phone_rate_limits WHERE phone_hash = ANY($1)',
      [numbers.map(hashOf)],
    );
    return new Map(rows.map((r) => [r.phone_hash, r.n]));
  } finally {
    await client.end();
  }
}

describe('database outage under load', () => {
  it('answers throughout, reports degraded, recovers, and stores every admitted call', async () => {
    const d = daemon!;
    const numbers = Array.from({ length: NUMBERS }, () => freshNumber());
    const sockets = await Promise.all([0, 1, 2].map(() => WsClient.connect(d.wsUrl)));
    sockets.forEach((s) => clients.add(s));
    const load = new Load(numbers, d.url);
    const lateAnswers: Answer[] = [];
    let loadStopped = false;
    try {
      load.start(sockets);
      const fromDb = (a: Answer) => a.reply.source === 'database';
      const fromMemory = (a: Answer) => a.reply.source === 'memory';
      await load.until('from the database', fromDb, 100);

      const port = server!.port;
      const url = server!.url;
      await server!.stop();

      await load.until('from memory', fromMemory, 100);
      const degraded = await waitFor('/health to say degraded', async () => {
        const h = await health(d.url);
        return h.body.status === 'degraded' ? h : undefined;
      });
      expect(degraded.status).toBe(200);
      expect(degraded.body).toMatchObject({ status: 'degraded', database: 'down' });
      const metrics = await httpRequest(`${d.url}/metrics`);
      expect(metrics.text).toMatch(/^ratelimit_fallback_active 1$/m);

      // A daemon that starts now starts anyway, on its fallback, and catches up later.
      lateDaemon = await startDaemon({ databaseUrl: url, env: DAEMON_ENV });
      expect((await health(lateDaemon.url)).body).toMatchObject({ status: 'degraded', database: 'down' });
      for (let i = 0; i < 3 * NUMBERS; i++) {
        const phoneNumber = numbers[i % NUMBERS]!;
        const r = await postJson(lateDaemon.url, '/v1/consume', { phoneNumber });
        lateAnswers.push({ via: 'http', kind: 'consume', phoneNumber, status: r.status, reply: r.json as Reply });
      }
      expect(lateAnswers.every((a) => a.status === 200 && a.reply.source === 'memory' && a.reply.allowed === true)).toBe(true);

      // Same data dir: the server comes back on the port recorded in its .port file, so the
      // daemon's DATABASE_URL is valid again.
      server = await startEmbeddedPostgres({ dataDir: path.join(tempDir!, 'pg'), fsync: false });
      expect(server.port).toBe(port);
      expect(server.url).toBe(url);

      const recovered = await waitFor(
        '/health to return to ok',
        async () => {
          const h = await health(d.url);
          return h.body.status === 'ok' ? h : undefined;
        },
        30_000,
        100,
      );
      expect(recovered.body).toMatchObject({ status: 'ok', database: 'up', pendingWrites: 0 });
      const lateRecovered = await waitFor(
        'the late daemon to recover',
        async () => {
          const h = await health(lateDaemon!.url);
          return h.body.status === 'ok' ? h : undefined;
        },
        30_000,
        100,
      );
      expect(lateRecovered.body).toMatchObject({ database: 'up', pendingWrites: 0 });
      const before = load.count(fromDb);
      await load.until('from the database after recovery', fromDb, before + 50);
      await load.stop();
      loadStopped = true;
    } finally {
      if (!loadStopped) await load.stop();
    }

    expect(load.failures).toStrictEqual([]);
    expect(load.answers).toHaveLength(load.sent);
    // Nothing was refused: no errors, no denials, HTTP always 200.
    expect(load.answers.filter((a) => a.reply.type !== 'rate_limit_status')).toStrictEqual([]);
    expect(load.answers.filter((a) => a.via === 'http' && a.status !== 200)).toStrictEqual([]);
    expect(load.count((a) => a.reply.source === 'memory' && a.kind === 'consume')).toBeGreaterThan(0);

    const stored = await storedCalls(server!.url, numbers);
    for (const phone of numbers) {
      const admitted = (a: Answer) => a.kind === 'consume' && a.phoneNumber === phone && a.reply.allowed === true;
      const allowed = load.count(admitted) + lateAnswers.filter(admitted).length;
      expect({ phone, stored: stored.get(hashOf(phone)) }).toStrictEqual({ phone, stored: allowed });
    }
    for (const x of [d, lateDaemon!]) {
      expect(x.running()).toBe(true);
      expect(crashSigns(x)).toStrictEqual([]);
    }
  });
});
