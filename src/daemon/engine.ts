import type { Logger } from 'pino';
import { performance } from 'node:perf_hooks';
import type { Pool } from '../db/pool.js';
import { consumeBatch, peekLogs, recordEvents, type ConsumeOutcome, type ConsumeRequest, type RecordedEvent } from '../db/queries.js';
import { isConnectionError } from '../db/errors.js';
import { listenForResets, type ResetListener } from '../db/notify.js';
import { consume as consumeLog, evaluate, type Decision, type Policy } from '../core/policy.js';
import { hashPrefix } from '../core/phone.js';
import { Batcher } from './batcher.js';
import { LruMap } from './memory.js';
import type { Metrics, MetricSource } from './metrics.js';

export interface PhoneSubject {
  hash: string;
  region: string | undefined;
  masked: string;
}

export interface PhoneDecision extends Decision {
  /** What the reply says: `database`, or `memory` while the database is unreachable. */
  source: 'database' | 'memory';
  /** Finer, for metrics: `cache` when a number known to be at its limit was denied locally. */
  metricSource: MetricSource;
}

export type EngineMode = 'database' | 'memory';

export interface EngineOptions {
  pool: Pool;
  /** For the LISTEN connection; omit to disable reset notifications (and the deny cache). */
  url?: string;
  policy: Policy;
  logger: Logger;
  metrics: Metrics;
  denyCache: boolean;
  maxBatch?: number;
  maxInFlight?: number;
  /** Numbers whose last-known logs are kept for the fallback and the deny cache. */
  memoryKeys?: number;
  /** Decisions made from memory awaiting their write; beyond this the oldest are dropped (and logged). */
  maxPendingWrites?: number;
  probeInitialDelayMs?: number;
  probeMaxDelayMs?: number;
  flushIntervalMs?: number;
  /** Runs at each probe, before replay (restart an embedded server, apply migrations missed at start). */
  beforeRecovery?: () => Promise<void>;
}

const DEFAULT_MEMORY_KEYS = 200_000;
const DEFAULT_MAX_PENDING_WRITES = 1_000_000;
const REPLAY_CHUNK = 1_000;
const DRAIN_RETRY_MS = 250;

interface PeekResult {
  nowMs: number;
  log: number[];
}

/**
 * Decides for phone numbers. In `database` mode every decision is made by PostgreSQL (group
 * committed); when the database stops answering it switches to `memory` mode, deciding from
 * the logs it last saw and queueing what it decided, probes with backoff, replays the queue
 * once the database is back, and only then returns to `database` mode.
 */
export class DecisionEngine {
  mode: EngineMode = 'database';
  allowedTotal = 0;
  deniedTotal = 0;
  /** Smoothed round-trip time of decision statements, for the heartbeat. */
  dbLatencyMs: number | null = null;

  private readonly logs: LruMap<string, number[]>;
  private readonly deniedUntil: LruMap<string, number>;
  private pending: RecordedEvent[] = [];
  private droppedWrites = 0;
  private clockOffsetMs = 0;
  private readonly consumer: Batcher<ConsumeRequest, ConsumeOutcome>;
  private readonly peeker: Batcher<string, PeekResult>;
  private probeTimer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private listener: ResetListener | undefined;
  private stopped = false;

  constructor(private readonly opts: EngineOptions) {
    this.logs = new LruMap(opts.memoryKeys ?? DEFAULT_MEMORY_KEYS);
    this.deniedUntil = new LruMap(opts.memoryKeys ?? DEFAULT_MEMORY_KEYS);
    const batch = { maxBatch: opts.maxBatch ?? 256, maxInFlight: opts.maxInFlight ?? 2 };
    this.consumer = new Batcher((reqs) => this.timed('consume', reqs.length, () => consumeBatch(opts.pool, reqs, opts.policy)), {
      ...batch,
      // One number's consumes are decided in the order they arrived.
      keyOf: (r) => r.hash,
    });
    this.peeker = new Batcher(async (hashes) => {
      const unique = [...new Set(hashes)];
      const peek = await this.timed('check', unique.length, () => peekLogs(opts.pool, unique));
      return hashes.map((h) => ({ nowMs: peek.nowMs, log: peek.logs.get(h) ?? [] }));
    }, batch);
    if (opts.url && opts.denyCache) {
      this.listener = listenForResets({
        url: opts.url,
        onReset: (hash) => this.forget(hash),
        // Resets announced while the listener was down were missed: trust nothing cached.
        onReconnect: () => this.deniedUntil.clear(),
        onError: (err) => opts.logger.warn({ err: err.message }, 'reset listener lost its connection; retrying'),
      });
    }
    this.flushTimer = setInterval(() => void this.flushInBackground(), opts.flushIntervalMs ?? 1_000);
    this.flushTimer.unref();
  }

  get pendingWrites(): number {
    return this.pending.length;
  }

  /** The database's clock as best this process knows it. */
  dbNow(): number {
    return Date.now() + this.clockOffsetMs;
  }

  async check(s: PhoneSubject): Promise<PhoneDecision> {
    if (this.mode === 'memory') return this.fromMemory(s, false);
    const cached = this.cachedDenial(s);
    if (cached) return cached;
    try {
      const { nowMs, log } = await this.peeker.submit(s.hash);
      this.learn(s.hash, log, nowMs);
      return { ...evaluate(log, nowMs, this.opts.policy), source: 'database', metricSource: 'database' };
    } catch (err) {
      if (!isConnectionError(err)) throw err;
      this.enterMemoryMode(err);
      return this.fromMemory(s, false);
    }
  }

  async consume(s: PhoneSubject): Promise<PhoneDecision> {
    if (this.mode === 'memory') return this.count(this.fromMemory(s, true));
    const cached = this.cachedDenial(s);
    if (cached) {
      // The denial still belongs in the database's counts; it rides with the next flush.
      this.queueWrite({ hash: s.hash, region: s.region, masked: s.masked, atMs: this.dbNow(), allowed: false });
      return this.count(cached);
    }
    try {
      const out = await this.consumer.submit({ hash: s.hash, region: s.region, masked: s.masked });
      this.learn(s.hash, out.log, out.atMs);
      const after = evaluate(out.log, out.atMs, this.opts.policy);
      const decision: Decision = out.allowed ? { ...after, allowed: true, retryAfterMs: 0 } : after;
      return this.count({ ...decision, source: 'database', metricSource: 'database' });
    } catch (err) {
      if (!isConnectionError(err)) throw err;
      // A statement that timed out may still have committed: answering from memory can then
      // count this call twice, never zero times.
      this.enterMemoryMode(err);
      return this.count(this.fromMemory(s, true));
    }
  }

  /** Drops what this process remembers of a number (after a reset anywhere). */
  forget(hash: string): void {
    this.deniedUntil.delete(hash);
    this.logs.delete(hash);
  }

  /**
   * For shutdown: waits for statements in flight, then writes what was decided from memory,
   * retrying until `untilMs` if the database is down. Returns how many decisions could not
   * be written.
   */
  async drain(untilMs = Date.now()): Promise<number> {
    await Promise.all([this.consumer.idle(), this.peeker.idle()]);
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

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    if (this.flushTimer) clearInterval(this.flushTimer);
    await this.listener?.close();
  }

  private count(d: PhoneDecision): PhoneDecision {
    if (d.allowed) this.allowedTotal++;
    else this.deniedTotal++;
    return d;
  }

  private async timed<T>(op: string, size: number, fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await fn();
    } finally {
      const ms = performance.now() - start;
      this.opts.metrics.dbLatency.observe({ op }, ms / 1000);
      this.opts.metrics.batchSize.observe({ op }, size);
      this.dbLatencyMs = this.dbLatencyMs === null ? ms : this.dbLatencyMs * 0.9 + ms * 0.1;
    }
  }

  /** Remembers the newest log seen for a number, and whether its next call would be denied. */
  private learn(hash: string, log: number[], atMs: number): void {
    this.clockOffsetMs = atMs - Date.now();
    const known = this.logs.get(hash);
    if (!known || (log.at(-1) ?? 0) >= (known.at(-1) ?? 0)) this.logs.set(hash, log);
    if (this.opts.denyCache && this.listener) {
      const next = evaluate(log, atMs, this.opts.policy);
      if (!next.allowed) this.deniedUntil.set(hash, next.resetTime);
    }
  }

  private cachedDenial(s: PhoneSubject): PhoneDecision | undefined {
    const until = this.deniedUntil.get(s.hash);
    if (until === undefined) return undefined;
    const now = this.dbNow();
    if (now >= until) {
      this.deniedUntil.delete(s.hash);
      return undefined;
    }
    const d = evaluate(this.logs.get(s.hash) ?? [], now, this.opts.policy);
    if (d.allowed) {
      // The log fell out of memory: do not guess, ask the database.
      this.deniedUntil.delete(s.hash);
      return undefined;
    }
    return { ...d, source: 'database', metricSource: 'cache' };
  }

  private fromMemory(s: PhoneSubject, spend: boolean): PhoneDecision {
    const now = this.dbNow();
    const log = this.logs.get(s.hash) ?? [];
    if (!spend) return { ...evaluate(log, now, this.opts.policy), source: 'memory', metricSource: 'memory' };
    const r = consumeLog(log, now, this.opts.policy);
    this.logs.set(s.hash, r.log);
    this.queueWrite({ hash: s.hash, region: s.region, masked: s.masked, atMs: r.atMs, allowed: r.decision.allowed });
    return { ...r.decision, source: 'memory', metricSource: 'memory' };
  }

  private queueWrite(e: RecordedEvent): void {
    this.pending.push(e);
    const max = this.opts.maxPendingWrites ?? DEFAULT_MAX_PENDING_WRITES;
    if (this.pending.length > max) {
      const dropped = this.pending.length - max;
      this.pending.splice(0, dropped);
      if (this.droppedWrites === 0) {
        this.opts.logger.error({ max }, 'too many decisions waiting for the database; dropping the oldest (their calls will not be counted)');
      }
      this.droppedWrites += dropped;
    }
    this.opts.metrics.pendingWrites.set(this.pending.length);
  }

  /** Starts (or switches) in memory mode, e.g. when the database is down as the daemon starts. */
  enterMemoryMode(err: unknown): void {
    if (this.mode === 'memory' || this.stopped) return;
    this.mode = 'memory';
    this.opts.metrics.fallbackActive.set(1);
    this.opts.metrics.fallbackTransitions.inc({ state: 'memory' });
    this.opts.logger.error({ err: (err as Error).message }, 'database unreachable: answering from memory (per instance) until it is back');
    this.scheduleProbe(this.opts.probeInitialDelayMs ?? 250);
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
      await this.flush();
      // flush() returned with nothing pending, and this tick runs to its end: no memory decision
      // can slip in between the last write and the switch.
      if (this.pending.length > 0) throw new Error('writes still pending');
      this.mode = 'database';
      this.deniedUntil.clear();
      this.opts.metrics.fallbackActive.set(0);
      this.opts.metrics.fallbackTransitions.inc({ state: 'database' });
      this.opts.logger.info({ droppedWrites: this.droppedWrites }, 'database is back: decisions made from memory written, deciding in the database again');
      this.droppedWrites = 0;
    } catch (err) {
      if (this.stopped) return;
      this.opts.logger.debug({ err: (err as Error).message }, 'database still unreachable');
      this.scheduleProbe(Math.min(delayMs * 2, this.opts.probeMaxDelayMs ?? 5_000));
    }
  }

  /** Writes queued decisions; one writer at a time, so order and counts are kept. */
  private flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => (this.pending.length > 0 ? this.flush() : undefined));
    this.flushing = (async () => {
      try {
        while (this.pending.length > 0) {
          const chunk = this.pending.slice(0, REPLAY_CHUNK);
          await this.timed('record', chunk.length, () => recordEvents(this.opts.pool, chunk, this.opts.policy));
          this.pending.splice(0, chunk.length);
          this.opts.metrics.pendingWrites.set(this.pending.length);
        }
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  private async flushInBackground(): Promise<void> {
    // In memory mode the probe owns replay; here only cached denials ride along.
    if (this.mode !== 'database' || this.pending.length === 0) return;
    try {
      await this.flush();
    } catch (err) {
      if (isConnectionError(err)) this.enterMemoryMode(err);
      else this.opts.logger.error({ err: (err as Error).message, sample: hashPrefix(this.pending[0]?.hash ?? '') }, 'could not write queued decisions');
    }
  }
}
