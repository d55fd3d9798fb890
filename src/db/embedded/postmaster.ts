// Running the postmaster: starting our own, and attaching to one another process started on the same
// data dir (found through postmaster.pid), so the daemon and admin commands share one server.
//
// If our process is SIGKILLed while it owns the server: the postmaster is our child but survives us, so a
// watchdog shell (see spawnWatchdog) holds a pipe from us and sends the postmaster SIGINT (fast shutdown)
// when that pipe closes, which the kernel does on any death. The next start then finds either a server
// still shutting down (settleLeftoverServer waits for it) or a stale postmaster.pid, which postgres
// itself handles.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PostgresBinaries } from './binaries.js';
import { readFileOrUndefined, readPassword, serverEnv, tailLines, type StateFiles } from './cluster.js';
import { buildUrl, ensureDatabase, LOOPBACK, probeServer } from './connection.js';
import type { ServerUser } from './os-user.js';

export interface EmbeddedServer {
  url: string;
  dataDir: string;
  port: number;
  owned: boolean;
  stop(): Promise<void>;
}

// Crash recovery after an unclean stop can replay a lot of WAL; a minute is generous for our data sizes.
export const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const KILL_TIMEOUT_MS = 5_000;
const POLL_INTERVAL_MS = 100;
const LEFTOVER_POLL_INTERVAL_MS = 500;
const LOG_ROTATE_BYTES = 10 * 1024 * 1024;
const LOG_TAIL_BYTES = 4 * 1024;

interface PostmasterInfo {
  pid: number;
  port: number;
}

async function readPostmasterPid(dataDir: string): Promise<PostmasterInfo | undefined> {
  const content = await readFileOrUndefined(path.join(dataDir, 'postmaster.pid'));
  if (!content) return undefined;
  const lines = content.split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  return { pid, port: Number.isInteger(port) && port > 0 ? port : 0 };
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false; // kill(0 or negative) would signal a group
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** After a reboot or container restart the recorded pid can belong to an unrelated process. */
async function isPostgresProcess(pid: number): Promise<boolean> {
  try {
    const comm = (await fs.readFile(`/proc/${pid}/comm`, 'utf8')).trim();
    return comm === 'postgres' || comm === 'postmaster';
  } catch (error) {
    // Without /proc (macOS) we cannot tell, so assume it is one rather than deleting a live server's pid file.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return true;
    return fs.access('/proc/self').then(
      () => false,
      () => true,
    );
  }
}

export async function attachIfRunning(
  dataDir: string,
  files: StateFiles,
  database: string,
  log: (message: string) => void,
): Promise<EmbeddedServer | undefined> {
  const info = await readPostmasterPid(dataDir);
  if (!info || !info.port || !isAlive(info.pid)) return undefined;
  const password = await readPassword(files);
  if (!password) return undefined;
  const state = await probeServer(dataDir, info.port, password);
  if (state === 'auth-failed') {
    throw new Error(`the embedded PostgreSQL on port ${info.port} rejects the password in ${files.password}; restore the original file`);
  }
  if (state !== 'ours') return undefined;
  const conn = { port: info.port, password, database };
  await ensureDatabase(conn, log);
  log(`attached to the running embedded PostgreSQL on ${LOOPBACK}:${info.port}`);
  return { url: buildUrl(conn), dataDir, port: info.port, owned: false, stop: async () => undefined };
}

/**
 * Under the lock, a postmaster.pid whose pid is alive but which did not answer is either a server that is
 * still starting or shutting down (e.g. an orphan whose watchdog just fired), or a recycled pid.
 * Returns true when a server became reachable (the caller attaches), false when the way is clear.
 */
export async function settleLeftoverServer(dataDir: string, files: StateFiles, log: (message: string) => void): Promise<boolean> {
  const info = await readPostmasterPid(dataDir);
  if (!info || !isAlive(info.pid)) return false; // a dead pid's file is postgres's own to clean up
  if (!(await isPostgresProcess(info.pid))) {
    // postgres would refuse to start, taking the unrelated live pid for another postmaster.
    log(`removing stale postmaster.pid (pid ${info.pid} is not PostgreSQL)`);
    await fs.rm(path.join(dataDir, 'postmaster.pid'), { force: true });
    return false;
  }
  log(`waiting for PostgreSQL pid ${info.pid} on ${dataDir} to finish starting or stopping`);
  const password = await readPassword(files);
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!isAlive(info.pid)) return false;
    if (password && info.port && (await probeServer(dataDir, info.port, password)) === 'ours') return true;
    await sleep(LEFTOVER_POLL_INTERVAL_MS);
  }
  throw new Error(
    `PostgreSQL pid ${info.pid} holds ${dataDir} but has not accepted connections on port ${info.port} ` +
      `for ${START_TIMEOUT_MS} ms. Check ${files.log}, or stop that process.`,
  );
}

export interface Launched {
  ready(password: string): Promise<void>;
  stop(): Promise<void>;
}

export interface LaunchOptions {
  dataDir: string;
  files: StateFiles;
  binaries: PostgresBinaries;
  port: number;
  user: ServerUser | undefined;
  settings: Record<string, string>;
}

export async function launch({ dataDir, files, binaries, port, user, settings }: LaunchOptions): Promise<Launched> {
  const args = ['-D', dataDir];
  for (const [name, value] of Object.entries(settings)) {
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw new Error(`invalid PostgreSQL setting name: ${name}`);
    args.push('-c', `${name}=${value}`);
  }

  await rotateLog(files.log);
  const logHandle = await fs.open(files.log, 'a', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(path.join(binaries.bindir, 'postgres'), args, {
      cwd: path.dirname(dataDir),
      env: serverEnv(),
      stdio: ['ignore', logHandle.fd, logHandle.fd],
      // Own session: a Ctrl-C on the daemon's terminal must not take the database down before the daemon
      // has drained; shutdown is ours to order, via stop() or the watchdog.
      detached: true,
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
  } finally {
    await logHandle.close();
  }

  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (error) => {
      exitInfo = `could not run postgres: ${error.message}`;
      resolve();
    });
    child.once('exit', (code, signal) => {
      exitInfo ??= `postgres exited (${signal ?? `code ${code}`})`;
      resolve();
    });
  });
  // Unref'd: a CLI command that forgets stop() still exits, and the watchdog then stops the server.
  child.unref();
  const watchdog = child.pid ? spawnWatchdog(child.pid, user) : undefined;
  void exited.then(() => watchdog?.kill('SIGKILL'));

  const failure = async (reason: string): Promise<Error> =>
    new Error(`embedded PostgreSQL failed to start: ${reason}. Server log ${files.log}:\n${await logTail(files.log)}`);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      // Disarm first so it cannot later signal a recycled pid.
      watchdog?.kill('SIGKILL');
      if (exitInfo !== undefined) return;
      child.kill('SIGINT'); // what `pg_ctl stop -m fast` sends: abort sessions, checkpoint, exit
      if (await settlesWithin(exited, STOP_TIMEOUT_MS)) return;
      child.kill('SIGQUIT'); // immediate shutdown; recovery on next start
      if (await settlesWithin(exited, KILL_TIMEOUT_MS)) return;
      child.kill('SIGKILL');
      await settlesWithin(exited, KILL_TIMEOUT_MS);
    })());

  const ready = async (password: string): Promise<void> => {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (exitInfo !== undefined) throw await failure(exitInfo);
      const state = await probeServer(dataDir, port, password);
      if (state === 'ours') return;
      // Only meaningful while our child is alive: otherwise we may be talking to whoever else has the port.
      if (state !== 'unreachable' && exitInfo === undefined) {
        throw await failure(state === 'auth-failed' ? `it rejects the password in ${files.password}` : `port ${port} is answered by a different PostgreSQL`);
      }
      if (Date.now() > deadline) throw await failure(`no connection within ${START_TIMEOUT_MS} ms`);
      await sleep(POLL_INTERVAL_MS);
    }
  };

  return { ready, stop };
}

/**
 * A tiny shell holding the read end of a pipe whose write end only we have. Any death of ours, SIGKILL
 * included, closes it; `read` then returns and the shell asks the postmaster for a fast shutdown, so an
 * owned server never outlives its owner.
 */
function spawnWatchdog(postmasterPid: number, user: ServerUser | undefined): ChildProcess | undefined {
  try {
    const watchdog = spawn('/bin/sh', ['-c', 'read _; kill -INT "$1" 2>/dev/null', 'ratelimit-pg-watchdog', String(postmasterPid)], {
      cwd: '/',
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    watchdog.on('error', () => undefined); // best effort: without /bin/sh, stop() still works
    watchdog.stdin?.on('error', () => undefined);
    watchdog.unref();
    (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    return watchdog;
  } catch {
    return undefined;
  }
}

async function settlesWithin(promise: Promise<void>, timeoutMs: number): Promise<boolean> {
  const timeout = new AbortController();
  try {
    return await Promise.race([promise.then(() => true), sleep(timeoutMs, false, { signal: timeout.signal }).catch(() => false)]);
  } finally {
    timeout.abort();
  }
}

async function rotateLog(logPath: string): Promise<void> {
  try {
    if ((await fs.stat(logPath)).size > LOG_ROTATE_BYTES) await fs.rename(logPath, `${logPath}.1`);
  } catch {
    // no log yet
  }
}

async function logTail(logPath: string): Promise<string> {
  try {
    const handle = await fs.open(logPath, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, LOG_TAIL_BYTES);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      return tailLines(buffer.toString('utf8'));
    } finally {
      await handle.close();
    }
  } catch {
    return '(no server log)';
  }
}
