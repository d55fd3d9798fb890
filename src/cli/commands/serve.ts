// `ratelimit serve`: starts the daemon (src/daemon/index.ts) and owns only its output: the
// logger's destination and the start-up lines. Signals are handled by the caller (main.ts).

import { pino, type Logger } from 'pino';
import type { Config } from '../../core/config.js';
import { formatDurationMs } from '../../core/duration.js';
import { instanceIdentity, startDaemon, type Daemon } from '../../daemon/index.js';

export { instanceIdentity };

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

/**
 * Starts the daemon: key, database (embedded when no URL), migrations, listener. A database
 * that is down at start does not stop the daemon: it starts on its in-memory fallback and
 * migrates and catches up when the database appears.
 */
export async function startServe(config: Config, env: Readonly<Record<string, string | undefined>>, version: string): Promise<ServeHandle> {
  const identity = instanceIdentity(env);
  const logger = createLogger(config, identity.instanceId, version);
  const handle = await startDaemon(config, { version, logger, identity });
  const { address } = handle;
  if (config.apiTokens.length === 0) {
    logger.warn('RATELIMIT_API_TOKENS is not set: any client that can reach this port may consume (fine on 127.0.0.1, not on a network)');
  }
  logger.info(
    {
      host: address.host,
      port: address.port,
      database: handle.databaseTarget,
      phoneLimit: `${config.phonePolicy.rules[0]!.max}/${formatDurationMs(config.phonePolicy.rules[0]!.windowMs)}`,
      ipLimit: `${config.ipPolicy.rules[0]!.max}/${formatDurationMs(config.ipPolicy.rules[0]!.windowMs)}`,
      host_name: identity.host,
    },
    `ratelimit listening on http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port} (WebSocket at /ws)`,
  );
  return { daemon: handle.daemon, logger, address, stop: () => handle.stop() };
}
