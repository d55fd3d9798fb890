// PostgreSQL refuses to run as root. When we are root, the server runs as an unprivileged `postgres`
// OS user (created if missing), which must be able to reach both its data and its binaries.

import { execFile } from 'node:child_process';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { PostgresBinaries } from './binaries.js';

const execFileAsync = promisify(execFile);

export const SERVER_OS_USER = 'postgres';

export interface ServerUser {
  uid: number;
  gid: number;
}

/** undefined when we are not root, i.e. the server simply runs as us. */
export async function serverUser(log: (message: string) => void): Promise<ServerUser | undefined> {
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
      `Create an unprivileged \`${name}\` user, or run ratelimit as a non-root user`,
  );
}

function canTraverse(st: Stats, user: ServerUser): boolean {
  // libuv drops supplementary groups when it switches uid, so only the primary gid counts.
  if (st.uid === user.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === user.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/** The first ancestor of dir (itself included) the server user cannot enter, if any. */
async function blockedAncestor(dir: string, user: ServerUser): Promise<{ dir: string; mode: number } | undefined> {
  for (let current = dir; ; current = path.dirname(current)) {
    const st = await fs.stat(current);
    if (!canTraverse(st, user)) return { dir: current, mode: st.mode & 0o777 };
    if (path.dirname(current) === current) return undefined;
  }
}

/** Fails with a fix-it message instead of letting initdb/postgres die with a bare EACCES. */
export async function assertTraversable(dir: string, user: ServerUser, what: string): Promise<void> {
  const blocked = await blockedAncestor(dir, user);
  if (blocked) {
    throw new Error(
      `PostgreSQL runs as user ${SERVER_OS_USER} (uid ${user.uid}) and cannot enter ${blocked.dir} ` +
        `(mode ${blocked.mode.toString(8)}), which it needs to reach ${what}. ` +
        `Run \`chmod o+x ${blocked.dir}\`, or move RATELIMIT_DATA_DIR elsewhere`,
    );
  }
}

/**
 * Binaries the server user can run. The npm package usually sits under the operator's home (often
 * /root, mode 0700), which `postgres` cannot enter, and an operator's directories are not ours to
 * chmod; so its files are copied once next to the cluster (<parent>/<base>.server-<version>, ~60 MB).
 */
export async function reachableBinaries(
  binaries: PostgresBinaries,
  user: ServerUser | undefined,
  dataDir: string,
  log: (message: string) => void,
): Promise<PostgresBinaries> {
  if (!user) return binaries;
  if (!binaries.fromPackage || !(await blockedAncestor(binaries.bindir, user))) {
    await assertTraversable(binaries.bindir, user, 'the PostgreSQL binaries');
    return binaries;
  }
  // The package's bin/, lib/ and share/ sit side by side; postgres finds the other two relative to bin/.
  const pkgDir = path.dirname(binaries.bindir);
  const copy = path.join(path.dirname(dataDir), `${path.basename(dataDir)}.server-${binaries.version}`);
  if (!(await fs.stat(path.join(copy, 'bin', 'postgres')).catch(() => undefined))) {
    log(`copying PostgreSQL ${binaries.version} to ${copy}: ${SERVER_OS_USER} cannot reach ${pkgDir}`);
    const staging = `${copy}.partial-${process.pid}`;
    await fs.rm(staging, { recursive: true, force: true });
    // verbatimSymlinks: the package's library symlinks are relative and must stay so in the copy.
    await fs.cp(pkgDir, staging, { recursive: true, verbatimSymlinks: true });
    await fs.chmod(staging, 0o755);
    await fs.rename(staging, copy).catch(async (error: NodeJS.ErrnoException) => {
      // A concurrent starter finished its copy first: use that one.
      await fs.rm(staging, { recursive: true, force: true });
      if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
    });
  }
  const copied = { ...binaries, bindir: path.join(copy, 'bin') };
  await assertTraversable(copied.bindir, user, 'the PostgreSQL binaries');
  return copied;
}

export async function chownTree(target: string, user: ServerUser): Promise<void> {
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
export async function prepareParent(parent: string, user: ServerUser | undefined): Promise<void> {
  // 0700: the data dir also holds the key file and the spool (src/db/key-file.ts); for a server
  // user, what we create gets search permission (x), never read: at creation, so that a second
  // process starting at the same moment (whose mkdir creates nothing) never sees it closed.
  const firstCreated = await fs.mkdir(parent, { recursive: true, mode: user ? 0o701 : 0o700 });
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

export async function realpathOr(file: string): Promise<string> {
  try {
    return await fs.realpath(file);
  } catch {
    return path.resolve(file);
  }
}
