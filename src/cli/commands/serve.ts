// `ratelimit serve`: starts the daemon (src/daemon/start.ts) and owns only its output: the
// logger's destination, the start-up lines, and waiting for a stop signal (src/cli/signals.ts).

import { pino, type Logger } from 'pino';
import type { Config } from '../../core/config.js';
import { describeFailure, RateLimitError } from '../../core/errors.js';
import type { Command } from 'commander';
import { instanceIdentity, startDaemon, type Daemon } from '../../daemon/start.js';
import { configFrom, VERSION, type Io } from '../context.js';
import { onLastResort, onStopSignals } from '../signals.js';
import { flagHelp, serveEnvironmentHelp } from '../serve-env.js';

export { instanceIdentity };

export interface ServeHandle {
  daemon: Daemon;
  logger: Logger;
  address: { host: string; port: number };
  /** Graceful stop within the configured deadline; resolves true when it finished in time with every decision written. Idempotent. */
  stop(opts?: { timeoutMs?: number }): Promise<boolean>;
  /** Settles when the daemon must stop on its own (a wrong hashing key found after an outage). */
  failed: Promise<RateLimitError>;
}

const FAILED_STOP_TIMEOUT_MS = 1_500;

export function createLogger(config: Config, instanceId: string, version: string): Logger {
  return pino({ level: config.logLevel, base: { instance: instanceId, version } });
}

/**
 * Starts the daemon: key, database (embedded when no URL), migrations, listener. A database
 * that is down at start does not stop the daemon: it starts on its in-memory fallback and
 * migrates and catches up when the database appears.
 */
export async function startServe(config: Config, env: Readonly<Record<string, string | undefined>>, version: string): Promise<ServeHandle> {
  const identity = instanceIdentity(env);
  const logger = createLogger(config, identity.instanceId, version);
  let handle;
  try {
    handle = await startDaemon(config, { version, logger, identity });
  } catch (err) {
    // In the log, where whoever runs the daemon is looking: the same sentence and code an admin
    // command would print (src/core/errors.ts). The CLI's one stderr line follows (src/cli/main.ts),
    // for whoever started it by hand.
    const { code, message } = describeFailure(err);
    logger.fatal(env.DEBUG ? { code, err } : { code }, message);
    throw err;
  }
  const { address } = handle;
  if (config.apiTokens.length === 0) {
    // Only reached on loopback outside production, or with RATELIMIT_ALLOW_ANONYMOUS=1 (src/core/config.ts).
    logger.warn('RATELIMIT_API_TOKENS is not set: any client that can reach this port may consume (fine on 127.0.0.1, not on a network)');
  }
  logger.info(
    {
      host: address.host,
      port: address.port,
      database: handle.databaseTarget,
      // What is enforced is logged by the policy source ("policy version N in force").
      policyVersion: handle.daemon.policyVersion,
      host_name: identity.host,
      ...(handle.daemon.metricsAddress ? { metricsPort: handle.daemon.metricsAddress.port } : {}),
    },
    `ratelimit listening on http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port} (WebSocket at /ws)`,
  );
  return { daemon: handle.daemon, logger, address, stop: (opts) => handle.stop(opts), failed: handle.failed };
}

export function register(program: Command, io: Io): void {
  program
    .command('serve')
    .description('run the daemon (HTTP + WebSocket) until SIGTERM/SIGINT')
    .option('--port <port>', flagHelp('PORT'))
    .option('--host <host>', flagHelp('HOST'))
    .option('--ip-limit <n>', flagHelp('RATE_LIMIT_IP_MAX'))
    .option('--ip-window <duration>', flagHelp('RATE_LIMIT_IP_WINDOW'))
    .addHelpText('after', serveEnvironmentHelp())
    .action(async (_opts, cmd: Command) => {
      // { serve: true }: no tokens in production or off loopback refuses to start (src/core/config.ts).
      const config = configFrom(cmd, io, { serve: true });
      const handle = await startServe(config, io.env, VERSION);
      let failure: RateLimitError | undefined;
      const clean = await new Promise<boolean>((resolve) => {
        onLastResort({
          fatal: (err, origin) => {
            handle.logger.fatal({ err, origin }, `${origin}: a bug escaped its request; draining and exiting non-zero so a supervisor restarts the daemon`);
            failure = new RateLimitError('internal_error', `the daemon stopped after an ${origin} (see the log for its stack); it drained before exiting`, {
              cause: err,
            });
            void handle.stop().then(resolve);
          },
          again: (err) => handle.logger.error({ err }, 'another uncaught error while draining after the first'),
        });
        void handle.failed.then((err) => {
          failure = err;
          // Nothing may be written under the wrong key (the pool is closed already): no drain to wait for.
          void handle.stop({ timeoutMs: FAILED_STOP_TIMEOUT_MS }).then(resolve);
        });
        onStopSignals({
          graceful: (signal) => {
            handle.logger.info({ signal }, 'signal received');
            void handle.stop().then(resolve);
          },
          beforeImmediateExit: (signal) => handle.logger.warn({ signal }, 'second signal: exiting now'),
        });
      });
      if (failure) throw failure;
      if (!clean)
        throw new RateLimitError(
          'database_error',
          'shutdown was not clean: past RATELIMIT_SHUTDOWN_TIMEOUT, or decisions made from memory left unwritten (see the log)',
        );
    });
}
