// The daemon's retention loop (issue #12): every few minutes, one pass of src/db/retention.ts
// under the effective policy's horizon. Every daemon runs the loop; the advisory lock in
// pruneOnce lets one of them prune at a time, the others skip that round. Separate from the
// heartbeat because its failures mean nothing for the decision path: a round that fails (the
// database is down, say) is logged and the next one tries again.
import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import { outcomeRetentionMs } from '../core/policy/conversion.js';
import { retentionHorizonMs } from '../core/policy/horizon.js';
import { errForLog, isConnectionError } from '../db/errors.js';
import { readEffectivePolicy } from '../db/policies.js';
import type { Pool } from '../db/pool.js';
import { pruneOnce } from '../db/retention.js';

/** Between two rounds; also the delay before the first, so start-up is not slowed. */
export const RETENTION_INTERVAL_MS = 5 * 60 * 1000;

export interface RetentionOptions {
  pool: Pool;
  config: Pick<Config, 'defaultPolicy' | 'auditRetentionMs'>;
  logger: Logger;
  intervalMs?: number;
}

export interface RetentionLoop {
  /** Stops between two batches and resolves once the round in progress, if any, has ended. */
  stop(): Promise<void>;
}

export function startRetention(opts: RetentionOptions): RetentionLoop {
  const intervalMs = opts.intervalMs ?? RETENTION_INTERVAL_MS;
  const abort = new AbortController();
  let running: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;

  const round = async () => {
    try {
      const { policy } = await readEffectivePolicy(opts.pool, opts.config.defaultPolicy);
      const horizonMs = retentionHorizonMs(policy);
      const result = await pruneOnce(opts.pool, {
        horizonMs,
        outcomeRetentionMs: outcomeRetentionMs(policy),
        blockDecayMs: policy.blocks?.decayMs ?? 0,
        auditRetentionMs: opts.config.auditRetentionMs,
        signal: abort.signal,
      });
      const deleted = Object.values(result.counts).reduce((a, b) => a + b, 0);
      if (deleted > 0) opts.logger.info({ deleted: result.counts, horizonMs }, 'retention pruned rows');
      else opts.logger.debug({ ran: result.ran }, 'retention: nothing to prune');
    } catch (err) {
      if (isConnectionError(err)) opts.logger.debug({ err: errForLog(err) }, 'retention skipped: database unreachable');
      else opts.logger.warn({ err: errForLog(err) }, 'retention round failed');
    }
  };
  const schedule = () => {
    if (abort.signal.aborted) return;
    timer = setTimeout(() => {
      running = round().finally(schedule);
    }, intervalMs);
    // Never what keeps the process alive.
    timer.unref();
  };
  schedule();

  return {
    async stop() {
      abort.abort();
      clearTimeout(timer);
      await running;
    },
  };
}
