// The embedded default database: a private PostgreSQL cluster under RATELIMIT_DATA_DIR, used when
// no DATABASE_URL is given. The daemon and the admin CLI must reach the same data, so whoever starts
// first owns the server and later callers attach to it through the port recorded in postmaster.pid.
//
// binaries.ts finds a server (installed, else the npm platform package); os-user.ts runs it as `postgres`
// when we are root; lock.ts serialises starters; cluster.ts is the cluster on disk; postmaster.ts runs
// and attaches; connection.ts talks to it.
//
// Ownership is not handed over: when the owner stops, attached processes lose the server. Fine for the
// intended shape (a long-running daemon owns it, short admin commands attach), not for the reverse.

import fs from 'node:fs/promises';
import path from 'node:path';
import getPort, { clearLockedPorts } from 'get-port';
import { findPostgresBinaries } from './binaries.js';
import { checkClusterVersion, clusterMajor, ensurePassword, initCluster, readFileOrUndefined, stateFiles } from './cluster.js';
import { buildUrl, ensureDatabase, LOOPBACK } from './connection.js';
import { acquireLock } from './lock.js';
import { chownTree, prepareParent, reachableBinaries, serverUser } from './os-user.js';
import { attachIfRunning, launch, settleLeftoverServer, type EmbeddedServer } from './postmaster.js';

export { findPostgresBinaries, REGISTRY_PACKAGE, type PostgresBinaries } from './binaries.js';
export type { EmbeddedServer } from './postmaster.js';

export interface EmbeddedOptions {
  dataDir: string;
  port?: number;
  database?: string;
  fsync?: boolean;
  log?: (message: string) => void;
  extraConfig?: Record<string, string>;
  /**
   * false: never create a cluster, throw NoClusterError instead. Admin commands pass it: a new empty
   * cluster would answer "not tracked" for everything, from a folder the daemon never used.
   */
  create?: boolean;
}

/** There is no cluster in `dataDir` and the caller asked not to create one. */
export class NoClusterError extends Error {
  constructor(readonly dataDir: string) {
    super(`there is no embedded PostgreSQL cluster in ${dataDir}`);
    this.name = 'NoClusterError';
  }
}

const DEFAULT_DATABASE = 'ratelimit';
const DEFAULT_MAX_CONNECTIONS = 200;

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const dataDir = path.resolve(opts.dataDir);
  const database = opts.database ?? DEFAULT_DATABASE;
  const log = opts.log ?? (() => undefined);
  const files = stateFiles(dataDir);

  // Fast path without the lock, so `ratelimit status` next to a running daemon never queues behind a start.
  const running = await attachIfRunning(dataDir, files, database, log);
  if (running) return running;
  // Before anything below creates folders or a password file.
  if (opts.create === false && (await clusterMajor(dataDir)) === undefined) throw new NoClusterError(dataDir);

  // An existing cluster can only be run by its own major version, so prefer that one where installed.
  const found = await findPostgresBinaries(process.env, await clusterMajor(dataDir));
  const user = await serverUser(log);
  await prepareParent(path.dirname(dataDir), user);
  const binaries = await reachableBinaries(found, user, dataDir, log);

  const release = await acquireLock(files.lock, log);
  try {
    const wonByOther = await attachIfRunning(dataDir, files, database, log);
    if (wonByOther) return wonByOther;
    const leftover = await settleLeftoverServer(dataDir, files, log);
    if (leftover) return attachIfRunning(dataDir, files, database, log).then((s) => s ?? notAttachable(dataDir));

    if (opts.create === false && (await clusterMajor(dataDir)) === undefined) throw new NoClusterError(dataDir);
    const password = await ensurePassword(files, dataDir);
    if ((await clusterMajor(dataDir)) === undefined) {
      await initCluster(dataDir, files, binaries, password, opts.fsync ?? true, user, log);
    } else {
      await checkClusterVersion(dataDir, binaries);
      if (user) {
        const st = await fs.stat(dataDir);
        if (st.uid !== user.uid) await chownTree(dataDir, user);
      }
    }

    // The last run's port when free, so URLs in operators' shells stay valid across restarts.
    const lastPort = Number((await readFileOrUndefined(files.port))?.trim()) || undefined;
    // get-port holds every port it hands out for 15 s within the process, which would push a restart in the
    // same process (tests, `revive`) off the port that is ours; under our lock nobody else wants it.
    if (opts.port === undefined && lastPort) clearLockedPorts();
    const port = opts.port ?? (await getPort({ host: LOOPBACK, ...(lastPort ? { port: lastPort } : {}) }));
    const source = found.fromPackage ? ' (from the npm package)' : '';
    log(`starting embedded PostgreSQL ${binaries.version}${source} on ${LOOPBACK}:${port} (data in ${dataDir})`);
    const settings: Record<string, string> = {
      port: String(port),
      listen_addresses: LOOPBACK,
      // No unix socket: nothing of ours uses it, and the default /var/run/postgresql may not exist or be ours.
      unix_socket_directories: '',
      max_connections: String(DEFAULT_MAX_CONNECTIONS),
      fsync: opts.fsync === false ? 'off' : 'on',
      ...opts.extraConfig,
    };
    const server = await launch({ dataDir, files, binaries, port, user, settings });
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
