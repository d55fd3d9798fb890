// Decides for phone numbers by composing the parts in this folder: the batchers in front of
// PostgreSQL, the deny cache, the write-behind queue and the database/memory fallback. Its
// state is private; the daemon reads it through getters and changes it only through methods.

import type { Logger } from 'pino';
import { performance } from 'node:perf_hooks';
import type { Pool } from '../../db/pool.js';
import { consumeBatch, peekLogs, type ConsumeOutcome, type ConsumeRequest } from '../../db/queries.js';
import { isConnectionError } from '../../db/errors.js';
import { listenForResets, type ResetListener } from '../../db/notify.js';
import { consume as consumeLog, evaluate, type Decision, type Policy } from '../../core/policy.js';
import { hashPrefix } from '../../core/phone.js';
import { LRUCache } from 'lru-cache';
import type { Metrics, MetricSource } from '../metrics.js';
import { Batcher } from './batcher.js';
import { DenyCache } from './deny-cache.js';
import { Fallback, type EngineMode } from './fallback.js';
import { WriteBehind } from './write-behind.js';

export type { EngineMode };

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

interface PeekResult {
  nowMs: number;
  log: number[];
}

/**
 * In `database` mode every decision is made by PostgreSQL (group committed); when the database
 * stops answering it switches to `memory` mode, deciding from the logs it last saw and queueing
 * what it decided, probes with backoff, replays the queue once the database is back, and only
 * then returns to `database` mode.
 */
export class DecisionEngine {
  private allowed = 0;
  private denied = 0;
  private latencyMs: number | null = null;
  private clockOffsetMs = 0;
  private stopped = false;

  private readonly logs: LRUCache<string, number[]>;
  /** Only while reset notifications can be heard: without them a cached denial could outlive a reset. */
  private readonly denyCache: DenyCache | undefined;
  private readonly writes: WriteBehind;
  private readonly fallback: Fallback;
  private readonly consumer: Batcher<ConsumeRequest, ConsumeOutcome>;
  private readonly peeker: Batcher<string, PeekResult>;
  private readonly flushTimer: NodeJS.Timeout;
  private readonly listener: ResetListener | undefined;

  constructor(private readonly opts: EngineOptions) {
    const memoryKeys = opts.memoryKeys ?? DEFAULT_MEMORY_KEYS;
    this.logs = new LRUCache({ max: memoryKeys });
    const timed = <T>(op: string, size: number, fn: () => Promise<T>) => this.timed(op, size, fn);
    this.writes = new WriteBehind({
      pool: opts.pool,
      policy: opts.policy,
      logger: opts.logger,
      metrics: opts.metrics,
      maxPendingWrites: opts.maxPendingWrites ?? DEFAULT_MAX_PENDING_WRITES,
      timed,
    });
    this.fallback = new Fallback({
      pool: opts.pool,
      logger: opts.logger,
      metrics: opts.metrics,
      probeInitialDelayMs: opts.probeInitialDelayMs,
      probeMaxDelayMs: opts.probeMaxDelayMs,
      beforeRecovery: opts.beforeRecovery,
      replay: () => this.writes.flush(),
      pendingWrites: () => this.writes.size,
      onRecovered: () => {
        this.denyCache?.clear();
        return { droppedWrites: this.writes.takeDropped() };
      },
    });
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
      const denyCache = new DenyCache(memoryKeys, opts.policy);
      this.denyCache = denyCache;
      this.listener = listenForResets({
        url: opts.url,
        onReset: (hash) => this.forget(hash),
        // Resets announced while the listener was down were missed: trust nothing cached.
        onReconnect: () => denyCache.clear(),
        onError: (err) => opts.logger.warn({ err: err.message }, 'reset listener lost its connection; retrying'),
      });
    }
    this.flushTimer = setInterval(() => void this.flushInBackground(), opts.flushIntervalMs ?? 1_000);
    this.flushTimer.unref();
  }

  get mode(): EngineMode {
    return this.fallback.mode;
  }

  get allowedTotal(): number {
    return this.allowed;
  }

  get deniedTotal(): number {
    return this.denied;
  }

  /** Smoothed round-trip time of decision statements, for the heartbeat. */
  get dbLatencyMs(): number | null {
    return this.latencyMs;
  }

  get pendingWrites(): number {
    return this.writes.size;
  }

  /** For the start-up path: the database was unreachable at start, so begin in memory mode. */
  startInMemory(err: unknown): void {
    this.fallback.enter(err);
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
      this.fallback.enter(err);
      return this.fromMemory(s, false);
    }
  }

  async consume(s: PhoneSubject): Promise<PhoneDecision> {
    if (this.mode === 'memory') return this.count(this.fromMemory(s, true));
    const cached = this.cachedDenial(s);
    if (cached) {
      // The denial still belongs in the database's counts; it rides with the next flush.
      this.writes.queue({ hash: s.hash, region: s.region, masked: s.masked, atMs: this.dbNow(), allowed: false });
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
      this.fallback.enter(err);
      return this.count(this.fromMemory(s, true));
    }
  }

  /** Drops what this process remembers of a number (after a reset anywhere). */
  forget(hash: string): void {
    this.denyCache?.forget(hash);
    this.logs.delete(hash);
  }

  /**
   * For shutdown: waits for statements in flight, then writes what was decided from memory,
   * retrying until `untilMs` if the database is down. Returns how many decisions could not
   * be written.
   */
  async drain(untilMs = Date.now()): Promise<number> {
    await Promise.all([this.consumer.idle(), this.peeker.idle()]);
    return this.writes.drain(untilMs);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.fallback.stop();
    clearInterval(this.flushTimer);
    await this.listener?.close();
  }

  private count(d: PhoneDecision): PhoneDecision {
    if (d.allowed) this.allowed++;
    else this.denied++;
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
      this.latencyMs = this.latencyMs === null ? ms : this.latencyMs * 0.9 + ms * 0.1;
    }
  }

  /** Remembers the newest log seen for a number, and whether its next call would be denied. */
  private learn(hash: string, log: number[], atMs: number): void {
    this.clockOffsetMs = atMs - Date.now();
    const known = this.logs.get(hash);
    if (!known || (log.at(-1) ?? 0) >= (known.at(-1) ?? 0)) this.logs.set(hash, log);
    this.denyCache?.note(hash, log, atMs);
  }

  private cachedDenial(s: PhoneSubject): PhoneDecision | undefined {
    const d = this.denyCache?.lookup(s.hash, this.dbNow(), (h) => this.logs.get(h));
    return d ? { ...d, source: 'database', metricSource: 'cache' } : undefined;
  }

  private fromMemory(s: PhoneSubject, spend: boolean): PhoneDecision {
    const now = this.dbNow();
    const log = this.logs.get(s.hash) ?? [];
    if (!spend) return { ...evaluate(log, now, this.opts.policy), source: 'memory', metricSource: 'memory' };
    const r = consumeLog(log, now, this.opts.policy);
    this.logs.set(s.hash, r.log);
    this.writes.queue({ hash: s.hash, region: s.region, masked: s.masked, atMs: r.atMs, allowed: r.decision.allowed });
    return { ...r.decision, source: 'memory', metricSource: 'memory' };
  }

  private async flushInBackground(): Promise<void> {
    // In memory mode the probe owns replay; here only cached denials ride along.
    if (this.mode !== 'database' || this.writes.size === 0) return;
    try {
      await this.writes.flush();
    } catch (err) {
      if (isConnectionError(err)) this.fallback.enter(err);
      else this.opts.logger.error({ err: (err as Error).message, sample: hashPrefix(this.writes.oldestHash ?? '') }, 'could not write queued decisions');
    }
  }
}
