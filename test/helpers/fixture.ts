// Longer than 350 lines because it is the one fixture every test file shares, as pg-boss's
// test hooks are: a database of its own per test file (migrated on request), the daemon and the
// CLI started with test defaults, sockets and pools tracked, and everything a file started
// closed after its last test even when the file forgets or a start fails half-way. The process
// side (spawning the binary) is test/helpers/daemon.ts, which bench/run.ts shares.

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import pg from 'pg';
import { afterAll, beforeAll, inject, vi } from 'vitest';
import WebSocket from 'ws';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { runBin, spawnDaemon, spawnDaemons, type CliResult, type DaemonOptions, type DaemonProcess } from './daemon.js';

export {
  assertBuilt,
  BIN,
  cleanEnv,
  crashSigns,
  EXIT_TIMEOUT_MS,
  ROOT,
  spawnDaemon,
  START_TIMEOUT_MS,
  stopAll,
  type CliResult,
  type DaemonProcess,
  type ExitInfo,
  type LogLine,
} from './daemon.js';

/** Fixed, so the test can hash numbers the way the daemon does. */
export const TEST_KEY = 'daemon-test-key-0123456789abcdef0123456789abcdef';
export const REPLY_TIMEOUT_MS = 20_000;

// ---- what a test file started, closed after its last test -------------------------------

// In the order they are closed: clients before the daemons they talk to, daemons and pools
// before the databases under them.
const STAGES = ['client', 'daemon', 'pool', 'database'] as const;
type Stage = (typeof STAGES)[number];
const cleanups = new Map<Stage, Set<() => Promise<unknown>>>(STAGES.map((s) => [s, new Set()]));

function onCleanup(stage: Stage, close: () => Promise<unknown>): () => void {
  const set = cleanups.get(stage)!;
  set.add(close);
  return () => set.delete(close);
}

// Registered when a test file first imports this module, so it runs after the file's own
// afterAll hooks (vitest runs them last-registered first): whatever those leave is closed here.
afterAll(async () => {
  for (const stage of STAGES) {
    const set = cleanups.get(stage)!;
    const closes = [...set];
    set.clear();
    await Promise.allSettled(closes.map((close) => close()));
  }
});

/** Ends this pool after the file's last test (ending it earlier is fine too). */
export function trackPool<T extends { end(): Promise<void>; ended?: boolean }>(pool: T): T {
  onCleanup('pool', async () => {
    if (!pool.ended) await pool.end();
  });
  return pool;
}

// ---- databases -----------------------------------------------------------------------------

function adminUrl(): string {
  const url = inject('databaseUrl') ?? process.env.RATELIMIT_TEST_ADMIN_URL;
  if (!url) throw new Error('no test database server: run through vitest (globalSetup) or set RATELIMIT_TEST_ADMIN_URL');
  return url;
}

async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** An empty database on the run's test server (test/setup/global-postgres.ts), dropped after the file at the latest. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const admin = adminUrl();
  // pid + random: unique across parallel workers and across reruns against a long-lived TEST_DATABASE_URL.
  const name = `ratelimit_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  await adminQuery(admin, `CREATE DATABASE "${name}"`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  // FORCE: a test that forgot to close its pool must not make cleanup fail.
  const drop = () => (dropped ??= adminQuery(admin, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
  onCleanup('database', drop);
  return { url: url.toString(), drop };
}

/**
 * This test file's own migrated database and a pool on it, made before its tests and dropped
 * after them (the call registers the beforeAll hook). Read `.pool` and `.url` inside hooks and
 * tests, not at module level: they exist once beforeAll has run.
 */
export function migratedTestDatabase(opts: { max: number }): { readonly url: string; readonly pool: Pool } {
  let db: TestDatabase | undefined;
  let pool: Pool | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
    pool = trackPool(createPool({ url: db.url, max: opts.max }));
    await migrate(pool);
  });
  const ready = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error('the test database is made in beforeAll: read it inside a hook or a test');
    return v;
  };
  return {
    get url() {
      return ready(db).url;
    },
    get pool() {
      return ready(pool);
    },
  };
}

/**
 * A test clock for stored rows: moves the timestamp `columns` of the rows of `table` matching
 * `where` back by `ms`, as if that much database time had passed for them. Expiry compares these
 * columns with the database's clock, so a test need not sleep until an entry lapses. Returns how
 * many rows moved (assert it: a clock that moved nothing proves nothing).
 */
export async function backdate(pool: Pool, table: string, columns: readonly string[], ms: number, where: string, params: unknown[] = []): Promise<number> {
  const by = `$${params.length + 1}::bigint * interval '1 millisecond'`;
  const set = columns.map((c) => `${c} = ${c} - ${by}`).join(', ');
  const r = await pool.query(`UPDATE ${table} SET ${set} WHERE ${where}`, [...params, ms]);
  return r.rowCount ?? 0;
}

// ---- the daemon and the CLI -----------------------------------------------------------------

export interface StartOptions {
  databaseUrl: string;
  /** Added to (and overriding) the defaults below; undefined unsets. */
  env?: Record<string, string | undefined>;
  args?: string[];
}

function testDaemonOptions(opts: StartOptions): DaemonOptions {
  return {
    args: opts.args ?? [],
    env: { DATABASE_URL: opts.databaseUrl, PORT: '0', HOST: '127.0.0.1', PHONE_ENCRYPTION_KEY: TEST_KEY, LOG_LEVEL: 'info', ...opts.env },
  };
}

/** Keeps a daemon started some other way (spawnDaemon from ./daemon.js) to be stopped after the file. */
export function trackDaemon(d: DaemonProcess): DaemonProcess {
  const forget = onCleanup('daemon', () => d.stop('SIGKILL'));
  void d.exited.then(forget);
  return d;
}

/** Starts `ratelimit serve` on an ephemeral port with the test key; stopped after the file at the latest. */
export async function startDaemon(opts: StartOptions): Promise<DaemonProcess> {
  return trackDaemon(await spawnDaemon(testDaemonOptions(opts)));
}

/** Starts several daemons; if one fails to start, the others are stopped before the error is thrown. */
export async function startDaemons<T extends readonly StartOptions[]>(list: readonly [...T]): Promise<{ [K in keyof T]: DaemonProcess }> {
  const started = await spawnDaemons(list.map(testDaemonOptions), async (o) => trackDaemon(await spawnDaemon(o)));
  return started as { [K in keyof T]: DaemonProcess };
}

/** Runs an admin command to completion, with the test key unless `env` says otherwise. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs?: number): Promise<CliResult> {
  return runBin({ args, env: { PHONE_ENCRYPTION_KEY: TEST_KEY, ...env }, timeoutMs });
}

/** Polls until `fn` returns a value other than undefined (vi.waitFor), or throws after `timeoutMs`. */
export function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  return vi
    .waitFor(
      async () => {
        const v = await fn();
        if (v === undefined) throw new Error(`not yet: ${what}`);
        return v;
      },
      { timeout: timeoutMs, interval: intervalMs },
    )
    .catch((err: unknown) => {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${(err as Error).message}`, { cause: err });
    });
}

// ---- HTTP ----------------------------------------------------------------------------

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: unknown;
}

/** node:http rather than fetch: fetch would refuse to send an `Origin` header of our choosing. */
export function httpRequest(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false, timeout: REPLY_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no HTTP answer from ${url} within ${REPLY_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

export function postJson(baseUrl: string, route: string, body: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  return httpRequest(`${baseUrl}${route}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

export async function health(baseUrl: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await httpRequest(`${baseUrl}/health`);
  return { status: r.status, body: r.json as Record<string, unknown> };
}

// ---- WebSocket -----------------------------------------------------------------------

export type Reply = {
  type: string;
  id?: string | number;
  code?: string;
  reason?: string;
  allowed?: boolean;
  source?: string;
  [key: string]: unknown;
};

export interface CloseInfo {
  code: number;
  reason: string;
}

/**
 * A deliberately small client: raw frames in, replies out in arrival order. `call` matches by
 * id for concurrent use; `next` hands out replies not claimed by a `call`, in order.
 */
export class WsClient {
  /** Every reply, in arrival order. */
  readonly received: Reply[] = [];
  readonly closed: Promise<CloseInfo>;
  private readonly unclaimed: Reply[] = [];
  private readonly nextWaiters: Array<(r: Reply) => void> = [];
  private readonly byId = new Map<string | number, (r: Reply) => void>();
  private closeInfo: CloseInfo | undefined;
  private readonly onClose: Array<() => void> = [];
  private seq = 0;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) =>
      ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        // Nothing more can arrive: fail the waiters now rather than at their timeouts.
        for (const fail of this.onClose.splice(0)) fail();
      }),
    );
    ws.on('message', (data, isBinary) => {
      const reply = JSON.parse(isBinary ? Buffer.from(data as Buffer).toString() : data.toString()) as Reply;
      this.received.push(reply);
      const byId = reply.id !== undefined ? this.byId.get(reply.id) : undefined;
      if (byId) {
        this.byId.delete(reply.id!);
        byId(reply);
        return;
      }
      const waiter = this.nextWaiters.shift();
      if (waiter) waiter(reply);
      else this.unclaimed.push(reply);
    });
  }

  static connect(url: string, opts: { headers?: Record<string, string>; origin?: string } = {}): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: opts.headers, origin: opts.origin, handshakeTimeout: REPLY_TIMEOUT_MS });
      ws.once('open', () => {
        const client = new WsClient(ws);
        void client.closed.then(onCleanup('client', () => client.close()));
        resolve(client);
      });
      ws.once('unexpected-response', (_req, res) => {
        reject(Object.assign(new Error(`upgrade refused with HTTP ${res.statusCode}`), { statusCode: res.statusCode }));
        res.resume();
        ws.terminate();
      });
      ws.once('error', reject);
    });
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  get closeCode(): number | undefined {
    return this.closeInfo?.code;
  }

  send(data: string | Buffer, opts: { binary?: boolean } = {}): void {
    this.ws.send(data, { binary: opts.binary ?? Buffer.isBuffer(data) });
  }

  sendJson(frame: unknown): void {
    this.send(JSON.stringify(frame));
  }

  /** The next reply not matched by a pending `call`. */
  next(timeoutMs = REPLY_TIMEOUT_MS): Promise<Reply> {
    const ready = this.unclaimed.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const fail = (why: string) => {
        clearTimeout(timer);
        const i = this.nextWaiters.indexOf(waiter);
        if (i >= 0) this.nextWaiters.splice(i, 1);
        reject(new Error(why));
      };
      const timer = setTimeout(() => fail(`no reply within ${timeoutMs} ms`), timeoutMs);
      const waiter = (r: Reply) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.nextWaiters.push(waiter);
      this.whenClosed(() => fail(`socket closed (${this.closeInfo?.code}) before the reply`));
    });
  }

  private whenClosed(fail: () => void): void {
    if (this.closeInfo) fail();
    else this.onClose.push(fail);
  }

  /** Sends a request under a fresh id (unless it has one) and resolves with its reply. */
  call(frame: Record<string, unknown>, timeoutMs = REPLY_TIMEOUT_MS): Promise<Reply> {
    const id = (frame.id as string | number | undefined) ?? `c${++this.seq}`;
    return new Promise((resolve, reject) => {
      const fail = (why: string) => {
        clearTimeout(timer);
        if (this.byId.get(id) === matched) this.byId.delete(id);
        reject(new Error(`${JSON.stringify(id)}: ${why}`));
      };
      const timer = setTimeout(() => fail(`no reply within ${timeoutMs} ms`), timeoutMs);
      const matched = (r: Reply) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.byId.set(id, matched);
      this.whenClosed(() => fail(`socket closed (${this.closeInfo?.code}) before the reply`));
      this.sendJson({ ...frame, id });
    });
  }

  /** Unclaimed replies waiting to be read with `next`. */
  get backlog(): number {
    return this.unclaimed.length;
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    else this.ws.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.closed, new Promise((r) => (timer = setTimeout(r, 5_000)))]);
    clearTimeout(timer);
    this.ws.terminate();
  }
}

/** The status code with which the daemon refuses an upgrade (throws if it accepts). */
export async function refusedUpgradeStatus(url: string, opts: { headers?: Record<string, string>; origin?: string } = {}): Promise<number> {
  try {
    const c = await WsClient.connect(url, opts);
    await c.close();
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode;
    if (status !== undefined) return status;
    throw err;
  }
  throw new Error(`the upgrade to ${url} was accepted`);
}

/** Closes every client, ignoring failures: for afterEach/afterAll. */
export async function closeAll(clients: Iterable<WsClient>): Promise<void> {
  await Promise.allSettled([...clients].map((c) => c.close()));
}

// ---- numbers -------------------------------------------------------------------------

let numberSeq = 0;
/**
 * A number not used before in this process: each test file has its own database and daemons.
 * Consecutive numbers fall in different 1,000-number ranges (exchange, then the first subscriber
 * digit, vary fastest): the default policy's sweep rule denies the 11th distinct number of one
 * range within an hour, and a test about something else must not trip it. Unique for 8 million calls.
 */
export function freshNumber(): string {
  const n = ++numberSeq;
  const exchange = 200 + (n % 800);
  const block = Math.floor(n / 800) % 10;
  const line = Math.floor(n / 8_000) % 1_000;
  return `+1415${exchange}${block}${String(line).padStart(3, '0')}`;
}
