// Decisions made without a database statement (from memory, or cached denials) queued for
// their write, flushed in order by one writer at a time. Separate from the fallback state
// machine: the queue has its own bound, ordering and drain-at-exit rules.

import type { Logger } from 'pino';
import type { DecisionPolicy } from '../../core/policy/decide.js';
import { recordDecisions, type DecisionEvent } from '../../db/decisions.js';
import type { Pool } from '../../db/pool.js';
import type { Metrics } from '../metrics.js';

export interface WriteBehindOptions {
  pool: Pool;
  /** The policy in force when a chunk is written (its number rules size the stored logs). */
  policy: () => DecisionPolicy;
  logger: Logger;
  metrics: Metrics;
  /** Beyond this the oldest are dropped (and logged). */
  maxPendingWrites: number;
  /** Wraps each statement, for latency metrics. */
  timed: <T>(op: string, size: number, fn: () => Promise<T>) => Promise<T>;
}

const REPLAY_CHUNK = 1_000;
const DRAIN_RETRY_MS = 250;

export class WriteBehind {
  private pending: DecisionEvent[] = [];
  private dropped = 0;
  private flushing: Promise<void> | undefined;

  constructor(private readonly opts: WriteBehindOptions) {}

  get size(): number {
    return this.pending.length;
  }

  /** The hash of the oldest queued decision, for error logs. */
  get oldestHash(): string | undefined {
    return this.pending[0]?.hash;
  }

  /** How many were dropped since the last call, resetting the count. */
  takeDropped(): number {
    const n = this.dropped;
    this.dropped = 0;
    return n;
  }

  queue(e: DecisionEvent): void {
    this.pending.push(e);
    const max = this.opts.maxPendingWrites;
    if (this.pending.length > max) {
      const dropped = this.pending.length - max;
      this.pending.splice(0, dropped);
      if (this.dropped === 0) {
        this.opts.logger.error({ max }, 'too many decisions waiting for the database; dropping the oldest (their calls will not be counted)');
      }
      this.dropped += dropped;
    }
    this.opts.metrics.pendingWrites.set(this.pending.length);
  }

  /** Writes queued decisions; one writer at a time, so order and counts are kept. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => (this.pending.length > 0 ? this.flush() : undefined));
    this.flushing = (async () => {
      try {
        while (this.pending.length > 0) {
          const chunk = this.pending.slice(0, REPLAY_CHUNK);
          await this.opts.timed('record', chunk.length, () => recordDecisions(this.opts.pool, chunk, this.opts.policy()));
          this.pending.splice(0, chunk.length);
          this.opts.metrics.pendingWrites.set(this.pending.length);
        }
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  /**
   * For shutdown: writes everything, retrying until `untilMs` if the database is down.
   * Returns how many decisions could not be written.
   */
  async drain(untilMs: number): Promise<number> {
    for (;;) {
      try {
        await this.flush();
        return 0;
      } catch (err) {
        if (Date.now() + DRAIN_RETRY_MS >= untilMs) {
          this.opts.logger.error({ err: (err as Error).message, unwritten: this.pending.length }, 'could not write decisions made from memory before exit');
          return this.pending.length;
        }
        await new Promise((r) => setTimeout(r, DRAIN_RETRY_MS));
      }
    }
  }
}
