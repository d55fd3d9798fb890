// The promise across a primary failover: a primary and a synchronous standby on loopback, the
// primary killed under load and the standby promoted, reached three ways: PgBouncer re-pointed at
// it, a multi-host URL (target_session_attrs=read-write), and a restart with the new primary's
// URL (the spool belongs to the database, not to its URL). One daemon at a time: no number over
// N, every allowed call stored, and no reply slower than RATELIMIT_DB_TIMEOUT + 1 s.

import { createHmac } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PGBOUNCER, startPgBouncer, type PgBouncer } from '../helpers/pgbouncer.js';
import { replication, type PgNode, type Replication } from '../helpers/replication.js';
import {
  assertBuilt,
  closeAll,
  crashSigns,
  freshNumber,
  health,
  startDaemon,
  stopAll,
  TEST_KEY,
  waitFor,
  WsClient,
  type DaemonProcess,
} from '../helpers/fixture.js';

const N = 3;
const DB_TIMEOUT_MS = 2_000;
const REPLY_BOUND_MS = DB_TIMEOUT_MS + 1_000;
const WORKERS = 6;
const SPACING_MS = 15;
const MAX_LOAD_MS = 40_000;
const DATABASE = 'failover';

let repl: Replication | undefined;
let tempDir = '';
const daemons: DaemonProcess[] = [];
const clients = new Set<WsClient>();
const bouncers: PgBouncer[] = [];

beforeAll(async () => {
  assertBuilt();
  repl = await replication();
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-failover-'));
}, 60_000);

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
  await stopAll(daemons.splice(0));
  await Promise.all(bouncers.splice(0).map((b) => b.stop()));
});

afterAll(async () => {
  await repl?.cleanup();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

const hashOf = (e164: string) => createHmac('sha256', TEST_KEY).update(e164, 'utf8').digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function env(dataDir: string): Record<string, string> {
  return {
    RATE_LIMIT_PHONE_MAX: String(N),
    RATE_LIMIT_IP_MAX: '1000000',
    RATELIMIT_MESSAGES_PER_SECOND: '1000000',
    RATELIMIT_DB_TIMEOUT: `${DB_TIMEOUT_MS}ms`,
    RATELIMIT_SHUTDOWN_TIMEOUT: '3s',
    RATELIMIT_DATA_DIR: dataDir,
  };
}

async function daemon(url: string, dataDir: string): Promise<DaemonProcess> {
  const d = await startDaemon({ databaseUrl: url, env: env(dataDir) });
  daemons.push(d);
  return d;
}

/** What the replies said, across every daemon of a scenario. */
class Tally {
  readonly allowed = new Map<string, number>();
  readonly problems: string[] = [];
  replies = 0;
  fromMemory = 0;
  slowestMs = 0;
  firstMemoryAt: number | undefined;
  lastMemoryAt: number | undefined;

  add(phone: string, r: { type?: unknown; allowed?: unknown; source?: unknown; code?: unknown }, ms: number): void {
    this.replies++;
    this.slowestMs = Math.max(this.slowestMs, ms);
    if (!this.allowed.has(phone)) this.allowed.set(phone, 0);
    if (r.type !== 'rate_limit_status' && r.type !== 'rate_limit_exceeded') {
      this.problems.push(`${phone}: ${JSON.stringify(r)}`);
      return;
    }
    if (r.allowed === true) this.allowed.set(phone, this.allowed.get(phone)! + 1);
    if (r.source === 'memory') {
      this.fromMemory++;
      const now = performance.now();
      this.firstMemoryAt ??= now;
      this.lastMemoryAt = now;
    }
  }

  get total(): number {
    return [...this.allowed.values()].reduce((a, b) => a + b, 0);
  }

  async expectPromiseKept(on: PgNode): Promise<void> {
    expect(this.problems).toStrictEqual([]);
    expect([...this.allowed].filter(([, n]) => n > N)).toStrictEqual([]);
    const c = new pg.Client({ connectionString: on.url(DATABASE) });
    await c.connect();
    try {
      const { rows } = await c.query<{ phone_hash: string; n: number }>(
        'SELECT phone_hash, cardinality(calls) AS n FROM phone_rate_limits WHERE phone_hash = ANY($1)',
        [[...this.allowed.keys()].map(hashOf)],
      );
      const stored = new Map(rows.map((r) => [r.phone_hash, r.n]));
      const counts = [...this.allowed].map(([p, n]) => ({ p, allowed: n, stored: stored.get(hashOf(p)) ?? 0 }));
      // Nothing allowed is missing. A statement that committed (the synchronous standby has it)
      // while the primary died before answering is decided again from memory and replayed: that
      // call is stored twice, an over-count that errs towards denying, at most once per number
      // (one statement in flight when the primary dies).
      expect(counts.filter((c) => c.stored < c.allowed)).toStrictEqual([]);
      expect(counts.filter((c) => c.stored > c.allowed + 1)).toStrictEqual([]);
    } finally {
      await c.end();
    }
    expect(this.slowestMs, `slowest reply ${Math.round(this.slowestMs)} ms`).toBeLessThanOrEqual(REPLY_BOUND_MS);
  }

  report(label: string): void {
    const memoryMs = this.firstMemoryAt === undefined ? 0 : Math.round(this.lastMemoryAt! - this.firstMemoryAt);
    console.log(
      `${label}: ${this.replies} replies, ${this.allowed.size} numbers, ${this.total} allowed, ${this.fromMemory} answered from memory over ${memoryMs} ms, slowest reply ${Math.round(this.slowestMs)} ms`,
    );
  }
}

/** Bursts of N + 2 consumes on fresh numbers from WORKERS sockets, timed one by one, until stopped. */
async function load(d: DaemonProcess, tally: Tally, revisit: string[] = []): Promise<{ stop: () => Promise<void> }> {
  const sockets = await Promise.all(Array.from({ length: WORKERS }, () => WsClient.connect(d.wsUrl)));
  sockets.forEach((s) => clients.add(s));
  let stopped = false;
  const deadline = Date.now() + MAX_LOAD_MS;
  const queue = [...revisit];
  const workers = sockets.map(async (s) => {
    while (!stopped && Date.now() < deadline) {
      // Numbers of an earlier daemon first: they must stay at N across a restart.
      const phone = queue.shift() ?? freshNumber();
      const calls: Array<Promise<void>> = [];
      for (let i = 0; i < N + 2; i++) {
        const t0 = performance.now();
        calls.push(
          s.call({ type: 'rate_limit_consume', phoneNumber: phone }).then(
            (r) => tally.add(phone, r, performance.now() - t0),
            (err: Error) => tally.add(phone, { type: 'error', code: err.message }, performance.now() - t0),
          ),
        );
        await sleep(SPACING_MS);
      }
      await Promise.all(calls);
    }
  });
  return {
    stop: async () => {
      stopped = true;
      await Promise.all(workers);
    },
  };
}

async function moreReplies(tally: Tally, more: number): Promise<void> {
  const target = tally.replies + more;
  await waitFor(`${more} more replies`, async () => (tally.replies >= target ? true : undefined), 30_000, 20);
}

async function backOnDatabase(d: DaemonProcess): Promise<void> {
  await withLogs(
    d,
    waitFor(
      'the daemon back on the database with everything written',
      async () => {
        const h = await health(d.url);
        return h.body.status === 'ok' && h.body.source === 'database' ? true : undefined;
      },
      30_000,
      50,
    ),
  );
}

/** A failed wait says what the daemon logged. */
async function withLogs<T>(d: DaemonProcess, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new Error(`${(err as Error).message}\ndaemon log tail:\n${d.stdout().slice(-3000)}`, { cause: err });
  }
}

async function allWritten(d: DaemonProcess): Promise<void> {
  await withLogs(
    d,
    waitFor(
      'every decision written',
      async () => {
        const h = await health(d.url);
        return h.body.status === 'ok' && h.body.pendingWrites === 0 ? true : undefined;
      },
      30_000,
      50,
    ),
  );
}

/** The primary crashes and the standby is promoted, as an orchestrator would do it. */
async function failover(primary: PgNode, standby: PgNode): Promise<void> {
  await primary.stop('immediate');
  await standby.promote();
}

describe('a primary failover under load (synchronous standby)', () => {
  it.skipIf(!PGBOUNCER)(
    'through PgBouncer re-pointed at the promoted standby',
    async () => {
      const { primary, standby } = await repl!.pair(DATABASE);
      // server_login_retry = 1: PgBouncer's default waits 15 s before it tries a server again.
      const bouncer = await startPgBouncer({ server: primary.url(DATABASE), extra: { server_login_retry: '1' } });
      bouncers.push(bouncer);
      const d = await daemon(bouncer.through(primary.url(DATABASE)), path.join(tempDir, 'bouncer'));
      const tally = new Tally();
      const l = await load(d, tally);
      try {
        await moreReplies(tally, 150);
        await failover(primary, standby);
        await bouncer.repoint('127.0.0.1', standby.port);
        await moreReplies(tally, 50);
        await backOnDatabase(d);
        await moreReplies(tally, 150);
      } finally {
        await l.stop();
      }
      await allWritten(d);
      tally.report('PgBouncer re-pointed');
      await tally.expectPromiseKept(standby);
      expect(crashSigns(d)).toStrictEqual([]);
    },
    90_000,
  );

  it('through a multi-host URL with target_session_attrs=read-write', async () => {
    const { primary, standby } = await repl!.pair(DATABASE);
    const url = `postgresql://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/${DATABASE}?target_session_attrs=read-write`;
    const d = await daemon(url, path.join(tempDir, 'multi-host'));
    const tally = new Tally();
    const l = await load(d, tally);
    try {
      await moreReplies(tally, 150);
      await failover(primary, standby);
      await moreReplies(tally, 50);
      await backOnDatabase(d);
      await moreReplies(tally, 150);
    } finally {
      await l.stop();
    }
    await allWritten(d);
    tally.report('multi-host URL');
    await tally.expectPromiseKept(standby);
    // The listener followed the primary too: the start-up check never found it deaf.
    expect(d.logs.filter((l) => /notifications do not arrive/.test(l.msg ?? ''))).toStrictEqual([]);
    expect(crashSigns(d)).toStrictEqual([]);
  }, 90_000);

  it("through a restart with the new primary's URL: the outage's spool is replayed", async () => {
    const { primary, standby } = await repl!.pair(DATABASE);
    const dataDir = path.join(tempDir, 'restart');
    const first = await daemon(primary.url(DATABASE), dataDir);
    const tally = new Tally();
    let l = await load(first, tally);
    try {
      await moreReplies(tally, 150);
      await primary.stop('immediate');
      await waitFor('answers from memory', async () => (tally.fromMemory > 60 ? true : undefined), 30_000, 20);
    } finally {
      await l.stop();
    }
    await closeAll(clients);
    // Stopped during the outage: what it allowed from memory stays in its spool.
    expect((await first.stop('SIGTERM')).code).toBe(0);
    await standby.promote();
    const second = await daemon(standby.url(DATABASE), dataDir);
    expect(second.logs.some((line) => /cannot use this database/.test(line.msg ?? ''))).toBe(false);
    // Every number the first daemon saw comes back: it must stay at N.
    l = await load(second, tally, [...tally.allowed.keys()]);
    try {
      await moreReplies(tally, tally.allowed.size * (N + 2) + 150);
    } finally {
      await l.stop();
    }
    await allWritten(second);
    tally.report('restart with the new URL');
    await tally.expectPromiseKept(standby);
    expect(crashSigns(first)).toStrictEqual([]);
    expect(crashSigns(second)).toStrictEqual([]);
  }, 90_000);
});
