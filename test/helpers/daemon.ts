// The one way anything outside src/ runs the real binary: `node bin/ratelimit.js serve` (and the
// admin commands) in a child process with a scrubbed environment. Shared by the tests (through
// test/helpers/fixture.ts, which adds the test defaults and closes what a test file started) and
// by bench/run.ts, so it must not import vitest (test/architecture.test.ts checks that).
//
// bin/ratelimit.js runs dist/, so dist/ must be built from the current src/: `npm test` does
// that (its `pretest` is `npm run build`); assertBuilt() refuses stale output rather than
// silently testing yesterday's code.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

/** The repository (the folder with package.json): this file also runs from dist/test/helpers. */
function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const ROOT = findRoot(import.meta.dirname);
export const BIN = path.join(ROOT, 'bin', 'ratelimit.js');
const BUILT_ENTRY = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

// Bounded but generous: a loaded 2-core CI machine can take seconds to start node + pg pools.
export const START_TIMEOUT_MS = 30_000;
export const EXIT_TIMEOUT_MS = 30_000;

function newestMtime(dir: string): { file: string; mtimeMs: number } {
  let newest = { file: dir, mtimeMs: 0 };
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    // .sql files are read from src/ at run time, never built.
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
  /** Parsed pino lines from stdout, in order (the array keeps filling). */
  logs: LogLine[];
  stdout(): string;
  stderr(): string;
  /** Log lines at level error or above, and every stderr line, as printed. */
  errorLines(): string[];
  /** Sends the signal (unless it has exited) and waits for the exit (SIGKILL after EXIT_TIMEOUT_MS). */
  stop(signal?: NodeJS.Signals): Promise<ExitInfo>;
  /** Waits for an exit already under way, sending nothing (SIGKILL after EXIT_TIMEOUT_MS). */
  waitForExit(): Promise<ExitInfo>;
  running(): boolean;
}

const live = new Set<ChildProcess>();

// A process that dies without its cleanup (a test worker, an interrupted bench) leaves no daemon behind.
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

// What would configure the binary from the caller's shell: a test or a benchmark sets what it means.
const CONFIGURING = /^(DATABASE_URL|FLY_|RATE_?LIMIT_|PHONE_|ALLOWED_ORIGINS|PORT|HOST|NODE_ENV|LOG_LEVEL|DEBUG)/;

/** The caller's environment minus anything that would configure the binary (and minus `alsoDrop`). */
export function cleanEnv(alsoDrop?: RegExp): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (CONFIGURING.test(k) || alsoDrop?.test(k)) continue;
    env[k] = v;
  }
  return env;
}

export interface SpawnOptions {
  /** The binary's arguments. */
  args: string[];
  /** On top of `baseEnv`; an undefined value unsets. */
  env?: Record<string, string | undefined>;
  /** Default: cleanEnv(). */
  baseEnv?: NodeJS.ProcessEnv;
  /** Default: the repository. */
  cwd?: string;
  /** Node's own flags, before the script. */
  nodeArgs?: string[];
}

/** Spawns the binary, tracked so it is killed if this process exits first. */
export function spawnBin(opts: SpawnOptions): ChildProcess {
  const merged: NodeJS.ProcessEnv = { ...(opts.baseEnv ?? cleanEnv()), ...opts.env };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), BIN, ...opts.args], {
    cwd: opts.cwd ?? ROOT,
    env: merged,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

export interface CliResult extends ExitInfo {
  stdout: string;
  stderr: string;
}

/** Runs an admin command to completion. */
export function runBin(opts: SpawnOptions & { timeoutMs?: number }): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? EXIT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawnBin(opts);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ratelimit ${opts.args.join(' ')} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface DaemonOptions extends Omit<SpawnOptions, 'args'> {
  /** After `serve`. */
  args?: string[];
  startTimeoutMs?: number;
}

/**
 * Starts `ratelimit serve` and resolves once it logs the port it listens on (the only way to
 * learn it for port 0). The caller's `env`/`args` say where and how; nothing is added here.
 */
export async function spawnDaemon(opts: DaemonOptions): Promise<DaemonProcess> {
  const startTimeoutMs = opts.startTimeoutMs ?? START_TIMEOUT_MS;
  const child = spawnBin({ ...opts, args: ['serve', ...(opts.args ?? [])] });
  const logs: LogLine[] = [];
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<ExitInfo>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // 'exit' can precede the last stdout data; 'close' cannot.
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`daemon did not log "listening" within ${startTimeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`)),
      startTimeoutMs,
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
    errorLines: () => [
      ...stdout.split('\n').filter((l) => {
        try {
          return ((JSON.parse(l) as LogLine).level ?? 0) >= 50;
        } catch {
          return false;
        }
      }),
      ...stderr.split('\n').filter((l) => l !== ''),
    ],
    running: () => child.exitCode === null && child.signalCode === null,
    waitForExit: waitExit,
    stop: (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return waitExit();
    },
  };
}

/** For cleanup: stops every daemon given, even if some already exited or fail to stop. */
export async function stopAll(daemons: Iterable<DaemonProcess | undefined>): Promise<void> {
  await Promise.allSettled([...daemons].map((d) => d?.stop('SIGKILL')));
}

/**
 * Starts several daemons at once. If any fails to start, the ones that did start are stopped
 * before the first failure is thrown: a caller that never received them could not stop them.
 */
export async function spawnDaemons(
  list: readonly DaemonOptions[],
  start: (o: DaemonOptions) => Promise<DaemonProcess> = spawnDaemon,
): Promise<DaemonProcess[]> {
  const settled = await Promise.allSettled(list.map((o) => start(o)));
  const started = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    await stopAll(started);
    throw failed.reason;
  }
  return started;
}

/** Lines of a daemon's output that betray a crash or an unhandled error. */
export function crashSigns(d: DaemonProcess): string[] {
  const text = `${d.stdout()}\n${d.stderr()}`;
  // pino puts a logged error's stack on one line, as "stack":"...".
  return text.split('\n').filter((l) => /unhandled|uncaught|^\s+at .+:\d+:\d+\)?$|"stack":|TypeError|ReferenceError|RangeError|SyntaxError/i.test(l));
}
