// The cluster on disk: the files kept next to it, its password, initdb, and its major version.
//
// Files kept next to the cluster dir (<parent>/<base>.*, e.g. .ratelimit/pg.password for .ratelimit/pg):
//   .password  random superuser password, 0600. The server listens on 127.0.0.1 only, but any local
//              user can reach loopback, so "trust" would hand every local account a superuser; SCRAM
//              with a secret only our own user can read keeps the data ours. The URL carries it.
//   .port      the port of the last run, reused so URLs in operators' shells stay valid across restarts.
//   .lock      serialises initdb + start between processes (lock.ts).
//   .log       server stderr, 0600 because errors can quote statements (phone numbers).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { majorOf, type PostgresBinaries } from './binaries.js';
import type { ServerUser } from './os-user.js';

export const SUPERUSER = 'postgres';
const LOG_TAIL_LINES = 20;

export interface StateFiles {
  password: string;
  port: string;
  lock: string;
  log: string;
  initdbStaging: string;
  initdbPwfile: string;
}

export function stateFiles(dataDir: string): StateFiles {
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

/** The major version that made the cluster in dataDir, or undefined when there is no cluster yet. */
export async function clusterMajor(dataDir: string): Promise<string | undefined> {
  return (await readFileOrUndefined(path.join(dataDir, 'PG_VERSION')))?.trim() || undefined;
}

export async function ensurePassword(files: StateFiles, dataDir: string): Promise<string> {
  const existing = await readPassword(files);
  if (existing) return existing;
  if (await clusterMajor(dataDir)) {
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

export async function readPassword(files: StateFiles): Promise<string | undefined> {
  return (await readFileOrUndefined(files.password))?.trim() || undefined;
}

/** A cluster's files are only readable by its own major version; say so before postgres does, cryptically. */
export async function checkClusterVersion(dataDir: string, binaries: PostgresBinaries): Promise<void> {
  const made = await clusterMajor(dataDir);
  const found = majorOf(binaries.version);
  if (made === undefined || made === found) return;
  const where = binaries.fromPackage ? 'the npm package' : binaries.bindir;
  throw new Error(
    `the cluster in ${dataDir} was created by PostgreSQL ${made}, but the server found is PostgreSQL ` +
      `${binaries.version} (${where}), which cannot read it. To keep the data, run it with PostgreSQL ${made}: ` +
      `install that and set RATELIMIT_PG_BINDIR to its bin directory (pg_upgrade can move the data to a newer ` +
      `major later); to start with an empty database instead, delete ${dataDir} and ${path.basename(dataDir)}.password next to it`,
  );
}

export async function initCluster(
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

export function serverEnv(): NodeJS.ProcessEnv {
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

export function tailLines(text: string): string {
  return text.trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n');
}

export async function readFileOrUndefined(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}
