// What the conversion rules know of outcomes, for the decision path (docs/protocol.md *Policy*,
// `conversion`): whether they are engaged (an outcome recorded within
// CONVERSION_ENGAGED_WITHIN_MS; idle rules count nothing) and the baseline's limit per region.
// Read from rate_limit_outcomes at start, then at most once a minute; an outcome this daemon
// records engages the rules at once, so the first one reported starts the counting without
// waiting for the next read. Other daemons learn of it at their next read (src/db/outcomes.ts
// ENGAGED_MARGIN_MS allows for that).

import type { Logger } from 'pino';
import { CONVERSION_IDLE, type ConversionState } from '../core/policy/counters.js';
import { CONVERSION_ENGAGED_WITHIN_MS, type Policy } from '../core/policy/types.js';
import { errForLog } from '../db/errors.js';
import { CONVERSION_IDLE_MESSAGE, conversionEngaged, readBaselineLimits } from '../db/outcomes.js';
import type { Pool } from '../db/pool.js';

/** How often the engagement is read again (one step down an index). */
export const CONVERSION_REFRESH_MS = 60_000;
/**
 * How often the baseline is read again: it scans every outcome of its history (about 0.4 s for
 * 300,000 rows here), and a maximum over days of history barely moves in minutes. A new policy,
 * or rules that just engaged, read it at once.
 */
export const BASELINE_REFRESH_MS = 15 * 60_000;

export interface ConversionStateOptions {
  pool: Pool;
  /** The policy in force: its baseline (window, history, factor, floor) shapes the limits. */
  policies: { readonly current: { readonly policy: Pick<Policy, 'conversion'> } };
  logger: Logger;
  /** For tests: read this often instead of CONVERSION_REFRESH_MS. */
  refreshMs?: number;
  /** For tests: read the baseline this often instead of BASELINE_REFRESH_MS. */
  baselineRefreshMs?: number;
}

export class ConversionStateSource {
  private state: ConversionState = CONVERSION_IDLE;
  /**
   * The policy of the latest read (successful or not): another one reads again at once. Set when
   * a read starts, so a database that is down is asked once per new policy and then at the
   * periodic reads, not on every decision.
   */
  private computedFor: Pick<Policy, 'conversion'> | undefined;
  private reading: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failedLogged = false;
  /** Date.now() when this daemon last recorded or kept an outcome (one kept in the spool is not in the database yet). */
  private recordedHereAtMs = -Infinity;
  /** performance.now() of the last baseline read, and whether the rules were engaged then. */
  private baselineReadAtMs = -Infinity;
  private baselineEngaged = false;

  constructor(private readonly opts: ConversionStateOptions) {}

  /** The provider the decision engine reads per decision: never waits, never throws. */
  current = (): ConversionState => {
    if (this.timer && this.computedFor !== this.opts.policies.current.policy && !this.reading) void this.refresh();
    return this.state;
  };

  /** Reads the state once (a database that is down leaves the rules as they were: idle at start), then keeps it fresh. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer ??= setInterval(() => void this.refresh(), this.opts.refreshMs ?? CONVERSION_REFRESH_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** This daemon recorded (or kept, during an outage) a new outcome: the rules are engaged now. */
  recorded(): void {
    this.recordedHereAtMs = Date.now();
    if (!this.state.engaged) {
      this.state = { ...this.state, engaged: true };
      this.opts.logger.info('conversion rules engaged: an outcome was reported');
    }
  }

  /** One read; concurrent callers share it. Never rejects. */
  refresh(): Promise<void> {
    return (this.reading ??= this.read().finally(() => (this.reading = undefined)));
  }

  private async read(): Promise<void> {
    const policy = this.opts.policies.current.policy;
    const conversion = policy.conversion;
    const newPolicy = this.computedFor !== policy;
    this.computedFor = policy;
    try {
      const engaged = await conversionEngaged(this.opts.pool);
      let limits: ReadonlyMap<string, number> = this.state.baselineLimits;
      const due =
        newPolicy || engaged !== this.baselineEngaged || performance.now() - this.baselineReadAtMs >= (this.opts.baselineRefreshMs ?? BASELINE_REFRESH_MS);
      if (due) {
        limits = engaged && conversion ? await readBaselineLimits(this.opts.pool, conversion) : new Map<string, number>();
        this.baselineReadAtMs = performance.now();
        this.baselineEngaged = engaged;
      }
      // An outcome recorded here while the read ran, or kept in the spool, engages the rules
      // whatever the read saw.
      const was = this.state.engaged;
      this.state = { engaged: engaged || Date.now() - this.recordedHereAtMs < CONVERSION_ENGAGED_WITHIN_MS, baselineLimits: limits };
      if (was !== this.state.engaged) {
        this.opts.logger.info({ engaged: this.state.engaged }, this.state.engaged ? 'conversion rules engaged' : CONVERSION_IDLE_MESSAGE);
      }
      this.failedLogged = false;
    } catch (err) {
      // The baseline is read again at the next read that works.
      this.baselineReadAtMs = -Infinity;
      if (!this.failedLogged) this.opts.logger.warn({ err: errForLog(err) }, 'could not read the conversion state; keeping the last one');
      this.failedLogged = true;
    }
  }
}
