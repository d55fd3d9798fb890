import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import type { Config } from '../../core/config.js';
import { formatDurationMs } from '../../core/duration.js';
import { RateLimitError } from '../../core/errors.js';
import { isConnectionError } from '../../db/errors.js';
import { migrate } from '../../db/migrate.js';
import { Daemon } from '../../daemon/server.js';
import { startHeartbeat } from '../../daemon/heartbeat.js';
import { openDatabase } from '../../db/open.js';
import { loadPhoneKey } from '../../db/key-file.js';
import type { Command } from 'commander';
import { configFrom, VERSION, type Io } from '../context.js';
import { onStopSignals } from '../signals.js';

export interface ServeHandle {
  daemon: Daemon;
  logger: Logger;
  address: { host: string; port: number };
  /** Graceful stop within the configured deadline; resolves true when it finished in time with every decision written. Idempotent. */
  stop(): Promise<boolean>;
}

export function createLogger(config: Config, instanceId: string, version: string): Logger {
  return pino({ level: config.logLevel, base: { instance: instanceId, version } });
}

export function instanceIdentity(env: Readonly<Record<string, string | undefined>>) {
  const host = hostname();
  return {
    // Fly gives each machine a stable id; elsewhere host + pid + a few random bytes.
    instanceId: env.FLY_MACHINE_ID ?? `${host}-${process.pid}-${randomBytes(2).toString('hex')}`,
    host,
  };
}

/**
 * Starts the daemon: key, database (embedded when no URL), migrations, listener. A database
 * that is down at start does not stop the daemon: it starts on its in-memory fallback and
 * migrates and catches up when the database appears.
 */
export async function startServe(config: Config, env: Readonly<Record<string, string | undefined>>, version: string): Promise<ServeHandle> {
  const { instanceId, host } = instanceIdentity(env);
  const logger = createLogger(config, instanceId, version);
  const key = await loadPhoneKey(config, (m) => logger.warn(m));
  const db = await openDatabase(config, {
    poolSize: config.dbPoolSize,
    statementTimeoutMs: config.dbStatementTimeoutMs,
    applicationName: `ratelimit serve ${instanceId}`,
    // An outage reports itself once through the engine's state change; one line per pooled
    // connection would only bury it.
    onIdleError: (err) => logger.debug({ err: err.message }, 'idle database connection failed'),
    verify: false,
    log: (m) => logger.info(m),
  });
  const databaseUrl = db.embedded?.url ?? config.databaseUrl!;
  let migrated = false;
  const ensureMigrated = async () => {
    await db.revive();
    if (migrated) return;
    const report = await migrate(db.pool);
    migrated = true;
    if (report.applied.length > 0) logger.info({ applied: report.applied.map((m) => `${m.id}_${m.name}`) }, 'applied migrations');
  };
  let startError: unknown;
  try {
    await ensureMigrated();
  } catch (err) {
    if (!isConnectionError(err)) {
      await db.close();
      throw err;
    }
    startError = err;
  }

  const daemon = new Daemon({
    config,
    pool: db.pool,
    databaseUrl,
    phoneKey: key,
    logger,
    version,
    engine: { beforeRecovery: ensureMigrated },
  });
  if (startError) daemon.engine.enterMemoryMode(startError);

  let address;
  try {
    address = await daemon.listen();
  } catch (err) {
    await daemon.engine.stop();
    await db.close();
    throw new RateLimitError('invalid_config', `cannot listen on ${config.host}:${config.port}: ${(err as Error).message}`, { cause: err });
  }
  const heartbeat = startHeartbeat({
    pool: db.pool,
    intervalMs: config.heartbeatIntervalMs,
    identity: { instanceId, host, flyRegion: config.flyRegion, version, pid: process.pid, startedAt: new Date() },
    snapshot: () => ({
      connections: daemon.connectionCount,
      allowedTotal: daemon.engine.allowedTotal,
      deniedTotal: daemon.engine.deniedTotal,
      fallback: daemon.engine.mode === 'memory',
      dbLatencyMs: daemon.engine.dbLatencyMs,
    }),
    onError: (err) => logger.warn({ err: err.message }, 'heartbeat not written'),
  });
  if (config.apiTokens.length === 0) {
    logger.warn('RATELIMIT_API_TOKENS is not set: any client that can reach this port may consume (fine on 127.0.0.1, not on a network)');
  }
  logger.info(
    {
      host: address.address,
      port: address.port,
      database: db.target,
      phoneLimit: `${config.phonePolicy.rules[0]!.max}/${formatDurationMs(config.phonePolicy.rules[0]!.windowMs)}`,
      ipLimit: `${config.ipPolicy.rules[0]!.max}/${formatDurationMs(config.ipPolicy.rules[0]!.windowMs)}`,
      host_name: host,
    },
    `ratelimit listening on http://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port} (WebSocket at /ws)`,
  );

  let stopping: Promise<boolean> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      const started = Date.now();
      logger.info('shutting down: no new connections, answering what is in flight');
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), config.shutdownTimeoutMs);
      });
      const graceful = (async () => {
        // Leave the last second of the deadline for closing the pool.
        const unwritten = await daemon.shutdown(started + config.shutdownTimeoutMs - 1_000);
        await heartbeat.stop();
        await db.close();
        return unwritten === 0;
      })();
      const outcome = await Promise.race([graceful.then((clean) => (clean ? 'clean' : 'unwritten')), deadline.then(() => 'late' as const)]);
      clearTimeout(timer);
      if (outcome === 'unwritten') {
        logger.error('shut down with decisions made from memory unwritten (the database stayed unreachable)');
        return false;
      }
      const inTime = outcome === 'clean';
      if (!inTime) {
        logger.error({ deadlineMs: config.shutdownTimeoutMs }, 'shutdown deadline passed; closing everything now');
        daemon.terminate();
        await Promise.race([db.close(), new Promise((r) => setTimeout(r, 1_000))]);
      } else {
        logger.info({ ms: Date.now() - started }, 'shut down cleanly');
      }
      return inTime;
    })());

  return { daemon, logger, address: { host: address.address, port: address.port }, stop };
}

export function register(program: Command, io: Io): void {
  program
    .command('serve')
    .description('run the daemon (HTTP + WebSocket) until SIGTERM/SIGINT')
    .option('--port <port>', `port to listen on (env PORT, default 8081)`)
    .option('--host <host>', 'address to listen on (env HOST, default 127.0.0.1)')
    .option('--ip-limit <n>', 'consumes allowed per client IP per window (env RATE_LIMIT_IP_MAX)')
    .option('--ip-window <duration>', 'the per-IP rolling window (env RATE_LIMIT_IP_WINDOW)')
    .action(async (_opts, cmd: Command) => {
      const config = configFrom(cmd, io);
      const handle = await startServe(config, io.env, VERSION);
      const clean = await new Promise<boolean>((resolve) => {
        onStopSignals({
          graceful: (signal) => {
            handle.logger.info({ signal }, 'signal received');
            void handle.stop().then(resolve);
          },
          beforeImmediateExit: (signal) => handle.logger.warn({ signal }, 'second signal: exiting now'),
        });
      });
      if (!clean) throw new RateLimitError('database_error', 'shutdown was not clean: past RATELIMIT_SHUTDOWN_TIMEOUT, or decisions made from memory left unwritten (see the log)');
    });
}
