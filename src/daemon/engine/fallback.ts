// The engine's two modes and the moves between them: enter memory mode when the database stops
// answering, probe with jittered exponential backoff, and switch back only once what memory
// decided is written. Separate so the state machine's rules sit in one place, with one owner.

import { errForLog } from '../../db/errors.js';
import type { Logger } from 'pino';
import type { Pool } from '../../db/pool.js';
import type { Metrics } from '../metrics.js';

export type EngineMode = 'database' | 'memory';

export interface FallbackOptions {
  pool: Pool;
  logger: Logger;
  metrics: Metrics;
  probeInitialDelayMs?: number;
  probeMaxDelayMs?: number;
  /** Runs at each probe, before replay (restart an embedded server, apply migrations missed at start). */
  beforeRecovery?: () => Promise<void>;
  /** Writes what memory decided (the write-behind queue's flush). */
  replay: () => Promise<void>;
  /** Decisions still waiting for their write. */
  pendingWrites: () => number;
  /** Runs in the same tick as the switch back; returns how many writes were dropped meanwhile. */
  onRecovered: () => { droppedWrites: number };
}

const DEFAULT_PROBE_INITIAL_DELAY_MS = 250;
const DEFAULT_PROBE_MAX_DELAY_MS = 5_000;

export class Fallback {
  private current: EngineMode = 'database';
  private probeTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: FallbackOptions) {}

  get mode(): EngineMode {
    return this.current;
  }

  /** Switches to memory mode (no-op if already there or stopped) and starts probing. */
  enter(err: unknown): void {
    if (this.current === 'memory' || this.stopped) return;
    this.current = 'memory';
    this.opts.metrics.fallbackActive.set(1);
    this.opts.metrics.fallbackTransitions.inc({ state: 'memory' });
    this.opts.logger.error({ err: errForLog(err) }, 'database unreachable: answering from memory (per instance) until it is back');
    this.scheduleProbe(this.opts.probeInitialDelayMs ?? DEFAULT_PROBE_INITIAL_DELAY_MS);
  }

  stop(): void {
    this.stopped = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
  }

  private scheduleProbe(delayMs: number): void {
    if (this.stopped) return;
    const jittered = delayMs * (0.8 + Math.random() * 0.4);
    this.probeTimer = setTimeout(() => void this.probe(delayMs), jittered);
    this.probeTimer.unref();
  }

  private async probe(delayMs: number): Promise<void> {
    try {
      await this.opts.beforeRecovery?.();
      await this.opts.pool.query('SELECT 1');
      await this.opts.replay();
      // replay() returned with nothing pending, and this tick runs to its end: no memory
      // decision can slip in between the last write and the switch.
      if (this.opts.pendingWrites() > 0) throw new Error('writes still pending');
      this.current = 'database';
      const { droppedWrites } = this.opts.onRecovered();
      this.opts.metrics.fallbackActive.set(0);
      this.opts.metrics.fallbackTransitions.inc({ state: 'database' });
      this.opts.logger.info({ droppedWrites }, 'database is back: decisions made from memory written, deciding in the database again');
    } catch (err) {
      if (this.stopped) return;
      this.opts.logger.debug({ err: errForLog(err) }, 'database still unreachable');
      this.scheduleProbe(Math.min(delayMs * 2, this.opts.probeMaxDelayMs ?? DEFAULT_PROBE_MAX_DELAY_MS));
    }
  }
}
