// Decisions made without a database statement (from memory, or cached denials) queued for
// their write, flushed in order by one writer at a time. Separate from the fallback state
// machine: the queue has its own bound, ordering and drain-at-exit rules.
//
// Outcomes reported while the database is away ride the same queue (and spool), written in
// runs of their own kind.
//
// Decisions made from memory also go to the spool (queueDurable) before they are answered; once
// a chunk is in the database the spool is told (release), so it only keeps what is unwritten.

import { errForLog } from '../../db/errors.js';
import type { Logger } from 'pino';
import type { DecisionPolicy } from '../../core/policy/decide.js';
import { recordDecisions, type DecisionEvent } from '../../db/decisions.js';
import { recordOutcomes, type OutcomeEvent } from '../../db/outcomes.js';
import type { Pool } from '../../db/pool.js';
import type { Metrics, TimedQuery } from '../metrics.js';
import { isOutcomeEvent, type Spool, type SpoolEvent } from './spool.js';

export interface WriteBehindOptions {
  pool: Pool;
  /** The policy in force when a chunk is written (its number rules size the stored logs). */
  policy: () => DecisionPolicy;
  logger: Logger;
  metrics: Metrics;
  /** Beyond this the oldest are dropped (and logged). */
  maxPendingWrites: number;
  /**
   * Denials queued without the spool (list, destination and ip denials, cached denials) kept at
   * most; beyond, new ones are not recorded (counted in ratelimit_denials_unrecorded_total).
   */
  maxLooseDenials?: number;
  /** Wraps each statement, for latency metrics. */
  timed: TimedQuery;
  spool: Spool;
}

interface Pending {
  event: SpoolEvent;
  /** Its sequence number in the spool; undefined when not spooled (denials cached while the database was up). */
  seq?: number;
}

const REPLAY_CHUNK = 1_000;
// A queued denial is ~0.5 KB: 50,000 of them is ~25 MB, however long an outage lasts.
export const DEFAULT_MAX_LOOSE_DENIALS = 50_000;
const DRAIN_RETRY_MS = 250;

export class WriteBehind {
  private pending: Pending[] = [];
  /** How many of `pending` are not in the spool (seq undefined). */
  private loose = 0;
  /** Outcomes in `pending`, by decision id: a repeat (or a conflicting one) is known before the database has it. */
  private readonly outcomes = new Map<string, OutcomeEvent>();
  private dropped = 0;
  private unrecordedLogged = false;
  private flushing: Promise<void> | undefined;

  constructor(private readonly opts: WriteBehindOptions) {}

  get size(): number {
    return this.pending.length;
  }

  /** The hash of the oldest queued decision, for error logs. */
  get oldestHash(): string | undefined {
    return this.pending[0]?.event.hash;
  }

  /** How many were dropped since the last call, resetting the count. */
  takeDropped(): number {
    const n = this.dropped;
    this.dropped = 0;
    return n;
  }

  /**
   * A denial the database will be told of soon, not spooled. Denials cost nothing to make, so
   * while the database is away a flood of them (a blocked number, an address over its limit)
   * would fill memory, and, past maxPendingWrites, push out the allowed calls memory decided
   * (their spool entries would then be released unwritten). So they have a bound of their own:
   * beyond it a denial is counted in a metric and not recorded; nothing allowed is ever displaced.
   */
  queue(e: DecisionEvent): void {
    if (this.loose >= (this.opts.maxLooseDenials ?? DEFAULT_MAX_LOOSE_DENIALS)) {
      this.opts.metrics.unrecordedDenials.inc();
      if (!this.unrecordedLogged) {
        this.unrecordedLogged = true;
        this.opts.logger.warn(
          { maxLooseDenials: this.opts.maxLooseDenials ?? DEFAULT_MAX_LOOSE_DENIALS },
          'too many denials waiting for the database: further ones are not recorded until it catches up (see ratelimit_denials_unrecorded_total); allowed calls are unaffected',
        );
      }
      return;
    }
    this.loose++;
    this.push([{ event: e }]);
  }

  /**
   * Decisions made without the database: queued for their write and appended to the spool;
   * resolves once they are on disk (rejects when the spool cannot take them).
   */
  queueDurable(events: readonly SpoolEvent[]): Promise<void> {
    const { lastSeq, durable } = this.opts.spool.append(events);
    const first = lastSeq - events.length + 1;
    this.push(events.map((event, i) => ({ event, seq: first + i })));
    return durable;
  }

  /** The outcome queued for this decision (spooled, not yet in the database), if any. */
  pendingOutcome(decisionId: string): OutcomeEvent | undefined {
    return this.outcomes.get(decisionId);
  }

  private push(entries: Pending[]): void {
    for (const e of entries) {
      this.pending.push(e);
      if (isOutcomeEvent(e.event)) this.outcomes.set(e.event.decisionId, e.event);
    }
    const max = this.opts.maxPendingWrites;
    if (this.pending.length > max) {
      const dropped = this.pending.length - max;
      this.forget(this.pending.splice(0, dropped));
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
          // A run of one kind at a time, in queue order: each chunk is one statement, so a
          // failure leaves it wholly unwritten (decisions are not idempotent, outcomes are).
          const outcomes = isOutcomeEvent(this.pending[0]!.event);
          let n = 1;
          while (n < REPLAY_CHUNK && n < this.pending.length && isOutcomeEvent(this.pending[n]!.event) === outcomes) n++;
          const chunk = this.pending.slice(0, n);
          if (outcomes) {
            const events = chunk.map((p) => p.event as OutcomeEvent);
            const kept = await this.opts.timed('record_outcomes', chunk.length, () => recordOutcomes(this.opts.pool, events));
            if (kept > 0)
              this.opts.logger.warn(
                { outcomes: kept },
                'outcomes reported while the database was away were not stored: their decisions already had one (the first reported stands)',
              );
          } else {
            const events = chunk.map((p) => p.event as DecisionEvent);
            await this.opts.timed('record', chunk.length, () => recordDecisions(this.opts.pool, events, this.opts.policy()));
          }
          this.forget(this.pending.splice(0, chunk.length));
          if (this.loose === 0) this.unrecordedLogged = false;
          const lastSeq = chunk.reduce((m, p) => (p.seq !== undefined && p.seq > m ? p.seq : m), -1);
          if (lastSeq >= 0) this.opts.spool.release(lastSeq);
          this.opts.metrics.pendingWrites.set(this.pending.length);
        }
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  /** Entries leaving `pending`: the count of unspooled ones and the outcome index follow. */
  private forget(gone: readonly Pending[]): void {
    for (const p of gone) if (p.seq === undefined) this.loose--;
    for (const p of gone) if (isOutcomeEvent(p.event) && this.outcomes.get(p.event.decisionId) === p.event) this.outcomes.delete(p.event.decisionId);
  }

  /**
   * For shutdown: writes everything. While the database refuses, what is queued is made durable
   * in the spool (the next daemon sharing the data dir writes it), which is as good as written;
   * only when the spool cannot take it either does this keep retrying the database until
   * `untilMs`. Returns how many decisions are neither written nor spooled (lost at exit).
   */
  async drain(untilMs: number): Promise<{ lost: number; spooled: number }> {
    for (;;) {
      try {
        await this.flush();
        return { lost: 0, spooled: 0 };
      } catch (err) {
        const loose = this.pending.filter((p) => p.seq === undefined);
        if (!this.opts.spool.failed) {
          try {
            if (loose.length > 0) {
              const { lastSeq, durable } = this.opts.spool.append(loose.map((p) => p.event));
              loose.forEach((p, i) => (p.seq = lastSeq - loose.length + 1 + i));
              this.loose -= loose.length;
              await durable;
            }
            this.opts.logger.warn(
              { err: errForLog(err), spooled: this.pending.length, spool: this.opts.spool.file },
              'database unreachable at exit: decisions made from memory stay in the spool; the next daemon with this data dir writes them',
            );
            return { lost: 0, spooled: this.pending.length };
          } catch {
            // The spool failed too: fall back to retrying the database until the deadline.
          }
        }
        if (Date.now() + DRAIN_RETRY_MS >= untilMs) {
          const lost = this.pending.filter((p) => p.seq === undefined || this.opts.spool.failed).length;
          this.opts.logger.error({ err: errForLog(err), unwritten: lost }, 'could not write decisions made from memory before exit, nor spool them');
          return { lost, spooled: this.pending.length - lost };
        }
        await new Promise((r) => setTimeout(r, DRAIN_RETRY_MS));
      }
    }
  }
}
