// Longer than 350 lines because it is the one harness every daemon test shares (spawn, sockets, CLI).
// The daemon under test is the real binary (`node bin/ratelimit.js serve`) in a child process,
// reached over real sockets. bin/ratelimit.js runs dist/, so dist/ must be built from the
// current src/: `npm test` does that (its `pretest` is `npm run build`); when running vitest
// directly, run `npm run build` first. assertBuilt() refuses stale output rather than silently
// testing yesterday's code.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = path.join(ROOT, 'bin', 'ratelimit.js');
const BUILT_ENTRY = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

/** Fixed, so the test can hash numbers the way the daemon does. */
export const TEST_KEY = 'daemon-test-key-0123456789abcdef0123456789abcdef';

// Bounded but generous: a loaded 2-core CI machine can take seconds to start node + pg pools.
export const START_TIMEOUT_MS = 30_000;
export const REPLY_TIMEOUT_MS = 20_000;
export const EXIT_TIMEOUT_MS = 30_000;

function newestMtime(dir: string): { file: string; mtimeMs: number } {
  let newest = { file: dir, mtimeMs: 0 };
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    // .sql migrations are read from src/ at run time, never built.
    const candidate = entry.isDirectory() ? newestMtime(full) : /\.tsx?$/.test(entry.name) ? { file: full, mtimeMs: statSync(full).mtimeMs } : undefined;
    if (candidate && candidate.mtimeMs > newest.mtimeMs) newest = candidate;
  }
  return newest;
}

export function assertBuilt(): void {
  if (!existsSync(BUILT_ENTRY)) throw new Error(`${BUILT_ENTRY} is missing: run \`npm run build\` (\`npm test\` does it for you)`);
  // tsc rewrites every output file on each build, so one output's mtime dates the whole build.
  const built = statSync(BUILT_ENTRY).mtimeMs;
  // Only what `serve` and the admin commands run: the dashboard's views and the client library
  // are not loaded by these tests, and others may be mid-edit there.
  const newest = ['src/daemon', 'src/protocol', 'src/cli/top', 'src/core', 'src/db', 'src/cli/commands']
    .map((dir) => newestMtime(path.join(ROOT, dir)))
    .concat(
      readdirSync(path.join(ROOT, 'src/cli'))
        .filter((f) => f.endsWith('.ts'))
        .map((f) => ({ file: path.join(ROOT, 'src/cli', f), mtimeMs: statSync(path.join(ROOT, 'src/cli', f)).mtimeMs })),
    )
    .reduce((a, b) => (b.mtimeMs > a.mtimeMs ? b : a));
  if (newest.mtimeMs > built) {
    throw new Error(`dist/ is older than ${path.relative(ROOT, newest.file)}: run \`npm run build\` (\`npm test\` does it for you)`);
  }
}

// ---- the daemon process ------------------------------------------------------------------

export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonProcess {
  port: number;
  /** http://127.0.0.1:<port> */
  url: string;
  /** ws://127.0.0.1:<port>/ws */
  wsUrl: string;
  child: ChildProcess;
  /** Settles when the process has exited (never rejects). */
  exited: Promise<ExitInfo>;
  /** Parsed pino lines from stdout, in order. */
  logs: LogLine[];
  stdout(): string;
  stderr(): string;
  /** Sends the signal (unless it has exited) and waits for the exit (SIGKILL after EXIT_TIMEOUT_MS). */
  stop(signal?: NodeJS.Signals): Promise<ExitInfo>;
  /** Waits for an exit already under way, sending nothing (SIGKILL after EXIT_TIMEOUT_MS). */
  waitForExit(): Promise<ExitInfo>;
  running(): boolean;
}

const live = new Set<ChildProcess>();

// A worker that dies without running afterAll must not leave daemons behind.
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** The environment a test daemon inherits: ours minus anything that would configure it. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(DATABASE_URL|FLY_|RATE_LIMIT_|RATELIMIT_|PHONE_ENCRYPTION_KEY|ALLOWED_ORIGINS|PORT|HOST|NODE_ENV|LOG_LEVEL|DEBUG)/.test(k)) continue;
    env[k] = v;
  }
  return env;
}

export interface CliResult extends ExitInfo {
  stdout: string;
  stderr: string;
}

/** Spawns the binary with `env` on top of a clean environment; an undefined value unsets. */
function spawnBin(args: string[], env: Record<string, string | undefined>): ChildProcess {
  const merged: NodeJS.ProcessEnv = { ...baseEnv(), ...env };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: merged, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** Runs an admin command to completion. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = EXIT_TIMEOUT_MS): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawnBin(args, { PHONE_ENCRYPTION_KEY: TEST_KEY, ...env });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ratelimit ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface StartOptions {
  databaseUrl: string;
  /** Added to (and overriding) the defaults below; undefined unsets. */
  env?: Record<string, string | undefined>;
  args?: string[];
}

/**
 * Starts `ratelimit serve` on an ephemeral port. The port is read from the "ratelimit listening
 * on" log line, which is the only way to learn it for PORT=0.
 */
export async function startDaemon(opts: StartOptions): Promise<DaemonProcess> {
  const child = spawnBin(['serve', ...(opts.args ?? [])], {
    DATABASE_URL: opts.databaseUrl,
    PORT: '0',
    HOST: '127.0.0.1',
    PHONE_ENCRYPTION_KEY: TEST_KEY,
    LOG_LEVEL: 'info',
    ...opts.env,
  });
  const logs: LogLine[] = [];
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<ExitInfo>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // 'exit' can precede the last stdout data; 'close' cannot.
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`daemon did not log "listening" within ${START_TIMEOUT_MS} ms\nstdout: ${stdout}\nstderr: ${stderr}`)),
      START_TIMEOUT_MS,
    );
    createInterface({ input: child.stdout! }).on('line', (line) => {
      stdout += `${line}\n`;
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        return;
      }
      logs.push(parsed);
      if (typeof parsed.msg === 'string' && parsed.msg.startsWith('ratelimit listening on') && typeof parsed.port === 'number') {
        clearTimeout(timer);
        resolve(parsed.port);
      }
    });
    void closed.then(() => {
      clearTimeout(timer);
      reject(new Error(`daemon exited before listening (${child.exitCode ?? child.signalCode})\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await exited;
    throw err;
  });

  const waitExit = async (): Promise<ExitInfo> => {
    let timer: NodeJS.Timeout | undefined;
    const info = await Promise.race([
      exited,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), EXIT_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (info) {
      await closed;
      return info;
    }
    child.kill('SIGKILL');
    await closed;
    throw new Error(`daemon did not exit within ${EXIT_TIMEOUT_MS} ms; killed\nstdout tail: ${stdout.slice(-2000)}\nstderr: ${stderr}`);
  };

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    child,
    exited,
    logs,
    stdout: () => stdout,
    stderr: () => stderr,
    running: () => child.exitCode === null && child.signalCode === null,
    waitForExit: waitExit,
    stop: (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return waitExit();
    },
  };
}

/** For afterAll/afterEach: stops every daemon given, even if some already exited or fail to stop. */
export async function stopAll(daemons: Iterable<DaemonProcess | undefined>): Promise<void> {
  await Promise.allSettled([...daemons].map((d) => d?.stop('SIGKILL')));
}

/** Lines of a daemon's output that betray a crash or an unhandled error. */
export function crashSigns(d: DaemonProcess): string[] {
  const text = `${d.stdout()}\n${d.stderr()}`;
  // pino puts a logged error's stack on one line, as "stack":"...".
  return text.split('\n').filter((l) => /unhandled|uncaught|^\s+at .+:\d+:\d+\)?$|"stack":|TypeError|ReferenceError|RangeError|SyntaxError/i.test(l));
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

/** Polls until `fn` returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
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
      ws.once('open', () => resolve(new WsClient(ws)));
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
/** A number not used before in this process: each test file has its own database and daemons. */
export function freshNumber(): string {
  const n = ++numberSeq;
  return `+1415${200 + (Math.floor(n / 10_000) % 800)}${String(n % 10_000).padStart(4, '0')}`;
}
