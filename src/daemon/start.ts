// Starting and stopping a whole daemon: phone key, database (embedded when no URL), migrations,
// the Daemon's listener, the fleet heartbeat, and the graceful stop with its deadline. Separate
// from src/cli so the daemon can be started by anything (the CLI, tests, an embedding app).

import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import { explainListenError, RateLimitError } from '../core/errors.js';
import { errForLog, explainDatabaseError, isConnectionError } from '../db/errors.js';
import { loadPhoneKey } from '../db/key-file.js';
import { verifyKey } from '../db/keys.js';
import { migrate, migrationName } from '../db/migrate.js';
import { openDatabase } from '../db/open.js';
import { databaseIdentity } from '../db/identity.js';
import { hasSessionPooling } from '../db/pool.js';
import { Spool } from './engine/spool.js';
import { startHeartbeat } from './heartbeat.js';
import { startRetention } from './retention.js';
import { Daemon } from './daemon.js';

export { Daemon } from './daemon.js';

export interface InstanceIdentity {
  /** Stable per machine on Fly; otherwise host, pid and a few random bytes. */
  instanceId: string;
  host: string;
}

export function instanceIdentity(env: Readonly<Record<string, string | undefined>>): InstanceIdentity {
  const host = hostname();
  return {
    instanceId: env.FLY_MACHINE_ID ?? `${host}-${process.pid}-${randomBytes(2).toString('hex')}`,
    host,
  };
}

export interface StartDaemonOptions {
  version: string;
  /** Where the daemon logs; the caller decides the destination (the CLI: stdout). */
  logger: Logger;
  identity: InstanceIdentity;
}

export interface DaemonHandle {
  daemon: Daemon;
  logger: Logger;
  address: { host: string; port: number };
  /** What the daemon decides in, for the start-up log line (URLs redacted). */
  databaseTarget: string;
  /**
   * Graceful stop within `timeoutMs` (default: config.shutdownTimeoutMs); resolves true when it
   * finished in time with every decision written. Idempotent: later calls get the first outcome.
   */
  stop(opts?: { timeoutMs?: number }): Promise<boolean>;
  /**
   * Settles when the daemon must stop on its own: the database, reached after an outage at start,
   * records another hashing key (docs/protocol.md *Keys*). By then the pool is closed, so nothing is
   * written under the wrong key; the caller stops the daemon and exits 1.
   */
  failed: Promise<RateLimitError>;
}

/** Behind PgBouncer in transaction mode: refused at start (docs/self-hosting.md says why). */
function transactionPooling(target: string): RateLimitError {
  return new RateLimitError(
    'invalid_config',
    `${target} shares server connections between clients per transaction (PgBouncer pool_mode = transaction or statement): ` +
      'ratelimit needs session pooling (its prepared statements, session settings and migration lock live in the session); ' +
      'set pool_mode = session for this database in pgbouncer.ini (Supabase: the session pooler on port 5432), or point DATABASE_URL at PostgreSQL itself',
  );
}

// Left at the end of the stop deadline for closing the pool.
const POOL_CLOSE_RESERVE_MS = 1_000;

/**
 * A database that is down at start does not stop the daemon: it starts on its in-memory
 * fallback and migrates and catches up when the database appears.
 */
export async function startDaemon(config: Config, opts: StartDaemonOptions): Promise<DaemonHandle> {
  const { logger, version } = opts;
  const { instanceId, host } = opts.identity;
  let lastCapacityWarningMs = 0;
  // Said at most once a minute: a full server refuses connection after connection.
  const capacityWarning = (err: Error) => {
    if (Date.now() - lastCapacityWarningMs < 60_000) return;
    lastCapacityWarningMs = Date.now();
    logger.warn(
      { err: err.message, poolSize: config.dbPoolSize },
      'the database refused a connection for capacity (too many connections), retrying within RATELIMIT_DB_TIMEOUT: not an outage. ' +
        "Size max_connections (or the pooler's default_pool_size) to at least (RATELIMIT_DB_POOL_SIZE + 1) x daemons + admin commands",
    );
  };
  const key = await loadPhoneKey(config, (m) => logger.warn(m));
  const db = await openDatabase(config, {
    poolSize: config.dbPoolSize,
    statementTimeoutMs: config.dbStatementTimeoutMs,
    applicationName: `ratelimit serve ${instanceId}`,
    // An outage reports itself once through the engine's state change; one line per pooled
    // connection would only bury it.
    onIdleError: (err) => logger.debug({ err: errForLog(err) }, 'idle database connection failed'),
    // No reply waits on a connection longer than on a statement (RATELIMIT_DB_TIMEOUT); the
    // client library's default request timeout is set to match (src/client).
    connectTimeoutMs: config.dbStatementTimeoutMs,
    onCapacity: (err) => capacityWarning(err),
    verify: false,
    log: (m) => logger.info(m),
  });
  const databaseUrl = db.embedded?.url ?? config.databaseUrl!;
  let migrated = false;
  let keyVerified = false;
  let poolingChecked = false;
  let databaseId: string | undefined;
  let spool: Spool | undefined;
  let engine: Daemon['engine'] | undefined;
  let fail: (err: RateLimitError) => void = () => undefined;
  const failed = new Promise<RateLimitError>((resolve) => (fail = resolve));
  // Migrations, then the key (its record is one of them), before anything is decided in the
  // database. A daemon must never write under a wrong key: at start a mismatch stops it (exit 1);
  // after an outage at start, the mismatch is found here before the first replay, and the daemon
  // closes its pool (what memory decided under that key is dropped, never written) and stops.
  const ensureReady = async () => {
    await db.revive();
    // The check holds two connections at once: a pool of one cannot make it.
    if (!poolingChecked && config.dbPoolSize >= 2) {
      if (!(await hasSessionPooling(db.pool))) throw transactionPooling(db.target);
      poolingChecked = true;
    }
    if (!migrated) {
      const report = await migrate(db.pool);
      migrated = true;
      if (report.applied.length > 0) logger.info({ applied: report.applied.map(migrationName) }, 'applied migrations');
    }
    if (databaseId === undefined) {
      const id = await databaseIdentity(db.pool);
      // A spool opened while the database was down, under the scope its URL had last time.
      if (spool && !(await spool.identify(id))) {
        throw new RateLimitError(
          'invalid_config',
          `${db.target} is not the database this URL reached before (its id differs): the decisions spooled for that one in ${config.dataDir} are not written here; ` +
            'start a daemon with the URL of that database to replay them, or move the data dir aside',
        );
      }
      databaseId = id;
      // The database's own spools (of daemons that stopped during the outage, under any URL)
      // join what is replayed before this daemon decides in the database again.
      if (spool) await engine?.adoptSpools();
    }
    if (keyVerified) return;
    const check = await verifyKey(db.pool, { current: key, previous: config.previousPhoneKey });
    keyVerified = true;
    for (const w of check.warnings) logger.warn(w);
    if (check.outcome === 'recorded') logger.info({ key: check.fingerprint }, 'recorded the hashing key (first use of this database)');
    else if (check.outcome === 'rotated')
      logger.warn({ key: check.fingerprint, previous: check.previousFingerprint }, 'started a key rotation: see ratelimit key status');
    else logger.info({ key: check.fingerprint, previous: check.previousFingerprint }, 'hashing key matches the database');
  };
  const ensureMigrated = async () => {
    try {
      await ensureReady();
    } catch (err) {
      if (err instanceof RateLimitError && (err.code === 'key_mismatch' || err.code === 'invalid_config')) {
        logger.fatal(
          { err: err.message },
          err.code === 'key_mismatch' ? 'wrong hashing key: stopping without writing anything' : 'cannot use this database: stopping without writing anything',
        );
        await db.pool.end().catch(() => undefined);
        fail(err);
      }
      throw err;
    }
  };
  let startError: unknown;
  try {
    await ensureReady();
  } catch (err) {
    if (!isConnectionError(err)) {
      await db.close();
      // The same sentence an admin command prints for this database (a refused password, say).
      throw explainDatabaseError(err, db.target);
    }
    startError = err;
  }

  try {
    spool = await Spool.open({
      dataDir: config.dataDir,
      // The configured URL (not one host of it): what a daemon started during an outage looks up.
      scope: { databaseUrl: config.databaseUrl ?? databaseUrl, phoneKey: key, ...(databaseId !== undefined ? { databaseId } : {}) },
      instanceId,
      maxBytes: config.spoolMaxBytes,
      logger,
    });
  } catch (err) {
    await db.close();
    throw new RateLimitError(
      'invalid_config',
      `cannot write the spool in ${config.dataDir} (${(err as Error).message}): decisions made while the database is unreachable must survive a restart; set RATELIMIT_DATA_DIR (or --data-dir) to a writable directory`,
      { cause: err },
    );
  }
  const daemon = new Daemon({
    spool,
    config,
    pool: db.pool,
    databaseUrl: config.listenUrl ?? databaseUrl,
    phoneKey: key,
    logger,
    version,
    engine: { beforeRecovery: ensureMigrated },
  });
  engine = daemon.engine;
  if (startError) daemon.engine.startInMemory(startError);
  // Decide with the applied policy from the first request on, unless the database is down: then
  // the default one, said in the log, until the policy can be read.
  await daemon.policies.start(!startError);
  // Whether the conversion rules count (an outcome reported lately) and their baselines.
  await daemon.conversion.start();
  // Before the first answer: what daemons that stopped during an outage allowed counts now.
  await daemon.engine.adoptSpools(true);

  let address;
  try {
    address = await daemon.listen();
  } catch (err) {
    await daemon.engine.stop();
    daemon.policies.stop();
    daemon.conversion.stop();
    await db.close();
    throw explainListenError(err, config.host, config.port);
  }
  const heartbeat = startHeartbeat({
    pool: db.pool,
    intervalMs: config.heartbeatIntervalMs,
    identity: { instanceId, host, flyRegion: config.flyRegion, version, pid: process.pid, startedAt: new Date() },
    snapshot: () => {
      const counters = daemon.decisionCounters();
      return {
        connections: daemon.connectionCount,
        allowedTotal: counters.allowed,
        deniedTotal: counters.denied,
        fallback: daemon.engine.mode === 'memory',
        dbLatencyMs: daemon.engine.dbLatencyMs,
        counters,
        policyVersion: daemon.policyVersion,
      };
    },
    onError: (err) => logger.warn({ err: errForLog(err) }, 'heartbeat not written'),
  });
  const retention = startRetention({ pool: db.pool, config, logger });

  let stopping: Promise<boolean> | undefined;
  const stop = ({ timeoutMs = config.shutdownTimeoutMs }: { timeoutMs?: number } = {}) =>
    (stopping ??= (async () => {
      const started = Date.now();
      logger.info('shutting down: no new connections, answering what is in flight');
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      });
      const graceful = (async () => {
        const unwritten = await daemon.shutdown(started + timeoutMs - POOL_CLOSE_RESERVE_MS);
        await heartbeat.stop();
        await retention.stop();
        await db.close();
        return unwritten === 0;
      })();
      const outcome = await Promise.race([graceful.then((clean) => (clean ? 'clean' : 'unwritten')), deadline.then(() => 'late' as const)]);
      clearTimeout(timer);
      if (outcome === 'unwritten') {
        logger.error('shut down with decisions made from memory neither written nor spooled (the database stayed unreachable and the spool failed)');
        return false;
      }
      const inTime = outcome === 'clean';
      if (!inTime) {
        logger.error({ deadlineMs: timeoutMs }, 'shutdown deadline passed; closing everything now');
        daemon.terminate();
        await Promise.race([db.close(), new Promise((r) => setTimeout(r, POOL_CLOSE_RESERVE_MS))]);
      } else {
        logger.info({ ms: Date.now() - started }, 'shut down cleanly');
      }
      return inTime;
    })());

  return { daemon, logger, address: { host: address.address, port: address.port }, databaseTarget: db.target, stop, failed };
}
