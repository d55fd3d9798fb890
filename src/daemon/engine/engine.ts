// Longer than 350 lines because it is the one place the database and memory paths meet; the
// parts it composes live beside it (batcher, fallback, write-behind, deadline, notifications).
// Decides for phone numbers by composing the parts in this folder: the batchers in front of
// PostgreSQL, the deny cache, the memory of numbers and counters, the write-behind queue and the
// database/memory fallback. Every decision runs the whole policy in force (number rules,
// block_after, prefix, country, global) at once; lists, destinations and ip are the Decider's.
// Its state is private; the daemon reads it through getters and changes it only through methods.

import type { Logger } from 'pino';
import { performance } from 'node:perf_hooks';
import type { Pool } from '../../db/pool.js';
import { decideBatch, type DecideOutcome, type DecideRequest } from '../../db/decisions.js';
import { errForLog, isConnectionError } from '../../db/errors.js';
import type { Listener } from '../../db/notify.js';
import { applicableCounters, CONVERSION_IDLE, isSafe, type ConversionState } from '../../core/policy/counters.js';
import { decideCheckFromSnapshot, type DecideInput } from '../../core/policy/decide.js';
import { hashPrefix } from '../../core/phone.js';
import type { Metrics, TimedQuery } from '../metrics.js';
import type { ActivePolicy } from '../policy-source.js';
import { Batcher } from './batcher.js';
import { withDeadline } from './deadline.js';
import { listenForChanges } from './notifications.js';
import { peekBatch, type CheckRequest, type CheckSnapshot } from './peek.js';
import { DenyCache } from './deny-cache.js';
import { Fallback, type EngineMode } from './fallback.js';
import { InFlight } from './in-flight.js';
import { MemoryState } from './memory.js';
import { NotSent, Outage } from './outage.js';
import { SpoolUnavailableError, type Spool } from './spool.js';
import type { OutcomeEvent } from '../../db/outcomes.js';
import type { AggregateCounter } from '../../core/policy/types.js';
import { fromOutcome, verdictOf, type PhoneSubject, type Verdict } from './verdict.js';
import { WriteBehind } from './write-behind.js';

export type { EngineMode, PhoneSubject, Verdict };

export interface EngineOptions {
  pool: Pool;
  /** For the LISTEN connection; omit to disable reset and change notifications (and the deny cache). */
  url?: string;
  /** The policy in force, read at each decision (PolicySource, or a fixed one in tests). */
  policies: { readonly current: ActivePolicy };
  logger: Logger;
  metrics: Metrics;
  denyCache: boolean;
  /** A policy or list change was announced (NOTIFY), or the listener reconnected and may have missed one. */
  onAnnouncedChange?: () => void;
  maxBatch?: number;
  maxInFlight?: number;
  /** Numbers whose last-known state is kept for the fallback and the deny cache. */
  memoryKeys?: number;
  /** Aggregate counters (rule, key) kept in memory for the fallback. */
  memoryCounters?: number;
  /** Decisions made from memory awaiting their write; beyond this the oldest are dropped (and logged). */
  maxPendingWrites?: number;
  probeInitialDelayMs?: number;
  probeMaxDelayMs?: number;
  flushIntervalMs?: number;
  /** Runs at each probe, before replay (restart an embedded server, apply migrations missed at start). */
  beforeRecovery?: () => Promise<void>;
  /** Where decisions made from memory are made durable before they are answered. */
  spool: Spool;
  /** How often spools of daemons that died are looked for (and taken over). */
  spoolScanIntervalMs?: number;
  /**
   * Each database operation (waiting for a connection, opening one, the statement) gives up after
   * this long: an outage, its outcome unknown (Outage). Else a reply could wait out the connect
   * timeout and then the statement's.
   */
  operationDeadlineMs?: number;
  /**
   * The conversion rules' state at each decision (engaged, per-region baseline limits; see
   * applicableCounters in src/core/policy/counters.ts). Read once per decision, so it must be
   * cheap; absent: conversion rules stay idle.
   */
  conversionState?: () => ConversionState;
}

// Consume statements overlap only when the one in flight is slow (stuck on a row lock): else the
// requests arriving meanwhile make the next batch bigger, which costs less per decision than two
// smaller overlapping ones (BENCHMARKS.md, "one statement at a time": +10-20 %). A 256-decision
// statement takes 15-30 ms here.
const CONSUMES_IN_FLIGHT = 2;
const CONSUMES_OVERLAP_AFTER_MS = 50;
// Checks write nothing and are not measured by the bench: left as they were.
const CHECKS_IN_FLIGHT = 2;
const DEFAULT_MEMORY_KEYS = 200_000;
const DEFAULT_MEMORY_COUNTERS = 50_000;
const DEFAULT_MAX_PENDING_WRITES = 1_000_000;
const DEFAULT_SPOOL_SCAN_INTERVAL_MS = 10_000;

/**
 * In `database` mode every decision is made by PostgreSQL (group committed); when the database
 * stops answering it switches to `memory` mode, deciding from the state it last saw and queueing
 * what it decided, probes with backoff, replays the queue once the database is back, and only
 * then returns to `database` mode.
 */
export class DecisionEngine {
  private latencyMs: number | null = null;
  private clockOffsetMs = 0;
  private stopped = false;
  /** The listener's start-up check found that notifications do not arrive. */
  private deaf = false;

  private readonly memory: MemoryState;
  private readonly inFlight = new InFlight();
  private readonly spoolTimer: NodeJS.Timeout;
  private readonly outage: Outage;
  /** Only while notifications can be heard: without them a cached denial could outlive a reset. */
  private readonly denyCache: DenyCache | undefined;
  private readonly writes: WriteBehind;
  private readonly fallback: Fallback;
  private readonly consumer: Batcher<DecideRequest, { out: DecideOutcome; policy: ActivePolicy }>;
  private readonly peeker: Batcher<CheckRequest, CheckSnapshot>;
  private readonly flushTimer: NodeJS.Timeout;
  private readonly listener: Listener | undefined;
  private listening = false;

  constructor(private readonly opts: EngineOptions) {
    const memoryKeys = opts.memoryKeys ?? DEFAULT_MEMORY_KEYS;
    this.memory = new MemoryState(memoryKeys, opts.memoryCounters ?? DEFAULT_MEMORY_COUNTERS);
    const timed: TimedQuery = (op, size, fn) => this.timed(op, size, fn);
    this.writes = new WriteBehind({
      pool: opts.pool,
      policy: () => opts.policies.current.decision,
      logger: opts.logger,
      metrics: opts.metrics,
      maxPendingWrites: opts.maxPendingWrites ?? DEFAULT_MAX_PENDING_WRITES,
      timed,
      spool: opts.spool,
    });
    this.outage = new Outage({
      memory: this.memory,
      inFlight: this.inFlight,
      writes: this.writes,
      spool: opts.spool,
      logger: opts.logger,
      inMemory: () => this.mode === 'memory',
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
    const maxBatch = opts.maxBatch ?? 256;
    this.consumer = new Batcher(
      (reqs) => this.decideInDatabase(reqs),
      // One number's consumes are decided in the order they arrived.
      { maxBatch, maxInFlight: opts.maxInFlight ?? CONSUMES_IN_FLIGHT, overlapAfterMs: CONSUMES_OVERLAP_AFTER_MS, keyOf: (r) => r.hash },
    );
    this.peeker = new Batcher(peekBatch(opts.pool, opts.policies, timed), { maxBatch, maxInFlight: opts.maxInFlight ?? CHECKS_IN_FLIGHT });
    if (opts.url) {
      if (opts.denyCache) this.denyCache = new DenyCache(memoryKeys);
      const changed = () => {
        this.denyCache?.clear();
        opts.onAnnouncedChange?.();
      };
      this.listener = listenForChanges({
        url: opts.url,
        pool: opts.pool,
        logger: opts.logger,
        forget: (hash) => this.forget(hash),
        changed,
        // While deaf, cached denials are not used (they could outlive an unheard reset); hearing
        // again follows a reconnection, which clears the cache.
        deaf: (isDeaf) => (this.deaf = isDeaf),
        listening: (up) => (this.listening = up),
      });
    }
    this.flushTimer = setInterval(() => void this.flushInBackground(), opts.flushIntervalMs ?? 1_000);
    this.flushTimer.unref();
    this.spoolTimer = setInterval(() => void this.adoptSpools(), opts.spoolScanIntervalMs ?? DEFAULT_SPOOL_SCAN_INTERVAL_MS);
    this.spoolTimer.unref();
  }

  get mode(): EngineMode {
    return this.fallback.mode;
  }

  /** Smoothed round-trip time of decision statements, for the heartbeat. */
  get dbLatencyMs(): number | null {
    return this.latencyMs;
  }

  /** True while the notification listener is connected: changes reach this daemon as NOTIFYs. */
  get changesAnnounced(): boolean {
    return this.listening && !this.deaf;
  }

  get pendingWrites(): number {
    return this.writes.size;
  }

  /** For the start-up path: the database was unreachable at start, so begin in memory mode. */
  startInMemory(err: unknown): void {
    this.enterMemory(err);
  }

  /**
   * Takes over the spools of daemons that are gone (at start, before the first answer, and
   * then periodically; see Outage.adopt). At start, with the database up, what was adopted is
   * written before any answer, so the database decides with it; if that fails the engine
   * starts in memory mode.
   */
  async adoptSpools(atStart = false): Promise<number> {
    if (this.stopped) return 0;
    const adopted = await this.outage.adopt(() => this.opts.policies.current.decision);
    if (atStart && this.mode === 'database' && this.writes.size > 0) {
      try {
        await this.writes.flush();
      } catch (err) {
        if (!isConnectionError(err)) throw err;
        this.enterMemory(err);
      }
    }
    return adopted;
  }

  /** The database's clock as best this process knows it. */
  dbNow(): number {
    return Date.now() + this.clockOffsetMs;
  }

  /** The policy or the lists changed: cached denials may no longer hold. */
  policyChanged(): void {
    this.denyCache?.clear();
  }

  /**
   * What a consume now would do; changes nothing. `learn`: keep what the database said of the
   * number and its counters for the fallback (services only: the Decider says why).
   */
  async check(s: PhoneSubject, allowlisted = false, learn = true): Promise<Verdict> {
    const p = this.opts.policies.current;
    const input = this.input(s, p, allowlisted);
    if (this.mode === 'memory') return this.checkFromMemory(s, input, p);
    const cached = input.safe === true ? undefined : this.cachedDenial(s, p);
    if (cached) return cached;
    try {
      const { nowMs, number, buckets, policy } = await this.peeker.submit({ hash: s.hash, counters: input.counters });
      this.clockOffsetMs = nowMs - Date.now();
      if (learn) {
        this.memory.learnNumber(s.hash, number.summary, number.blockedUntil, number.blockLevel);
        input.counters.forEach((c, i) => this.memory.learnCounter(c, buckets[i]!));
      }
      return verdictOf(decideCheckFromSnapshot(number, buckets, input, policy.decision), { source: 'database', metricSource: 'database' });
    } catch (err) {
      if (!isConnectionError(err)) throw err;
      this.enterMemory(err);
      return this.checkFromMemory(s, input, p);
    }
  }

  /** One consume against every rule of the policy: allowed counts everywhere, a denial nowhere. */
  async consume(s: PhoneSubject, allowlisted = false): Promise<Verdict> {
    const p = this.opts.policies.current;
    const input = this.input(s, p, allowlisted);
    if (this.mode === 'memory') return this.consumeFromMemory(s, input, p);
    const cached = input.safe === true ? undefined : this.cachedDenial(s, p);
    if (cached) {
      // The denial still belongs in the database's counts; it rides with the next flush.
      this.recordDenial(s);
      return cached;
    }
    try {
      const { out, policy } = await this.consumer.submit({
        hash: s.hash,
        region: s.region,
        masked: s.masked,
        allowlisted,
        safe: input.safe,
        counters: input.counters,
      });
      // Not for safe numbers: block_after does not apply to them, and the cache would replay it.
      if (input.safe !== true) this.denyCache?.note(s.hash, out.rules, out.atMs, out.blockedUntil, policy.decision);
      return verdictOf(fromOutcome(out, input.counters, policy.decision), { source: 'database', metricSource: 'database' });
    } catch (err) {
      // Never sent, or sent and failed: decideInDatabase already counted what an unknown
      // outcome may have admitted, so memory decides this request afresh.
      if (!(err instanceof NotSent) && !isConnectionError(err)) throw err;
      return this.consumeFromMemory(s, input, p);
    }
  }

  /** One statement of the consume batcher; Outage.inDatabase says how each request's fate is kept single. */
  private decideInDatabase(reqs: DecideRequest[]): Promise<Array<{ out: DecideOutcome; policy: ActivePolicy }>> {
    // One policy for the whole statement, the one its replies are then read with.
    const policy = this.opts.policies.current;
    return this.outage
      .inDatabase(reqs, policy.decision, {
        run: () => this.timed('consume', reqs.length, () => decideBatch(this.opts.pool, reqs, policy.decision)),
        nowMs: () => this.dbNow(),
        failed: (err) => this.enterMemory(err),
        decided: (atMs) => (this.clockOffsetMs = atMs - Date.now()),
      })
      .then((outs) => outs.map((out) => ({ out, policy })));
  }

  /** Switches to memory mode; consumes not yet sent are decided from memory instead. */
  private enterMemory(err: unknown): void {
    this.fallback.enter(err);
    if (this.mode === 'memory') this.consumer.cancelWaiting(new NotSent('decided from memory'));
  }

  /** An outcome kept until the database is back: spooled (resolves once on disk), replayed with decisions. */
  async queueOutcome(e: OutcomeEvent): Promise<void> {
    if (!this.opts.spool.hasRoomFor(1)) throw new SpoolUnavailableError('the spool is full or unwritable');
    await this.writes.queueDurable([e]);
  }

  /** This decision's outcome, if one is kept and not written yet. */
  pendingOutcome = (decisionId: string): OutcomeEvent | undefined => this.writes.pendingOutcome(decisionId);

  /**
   * Takes back from memory's counters one call counted at `callAtMs` (a converted outcome for
   * a call, received while the database is unreachable or replayed from a spool): `counters`
   * are the number's `unconverted` counters as applicableCounters() gives them. The database's
   * counters are corrected by the outcome's own write; this only keeps memory's in step.
   * Returns how many counters gave a call back.
   */
  takeBackCall(counters: readonly AggregateCounter[], callAtMs: number): number {
    return this.memory.removeCall(counters, callAtMs, this.dbNow());
  }

  /** A consume denied before the engine (list, destination, ip): counted as a denial of the number. */
  recordDenial(s: PhoneSubject): void {
    this.writes.queue({ hash: s.hash, region: s.region, masked: s.masked, atMs: this.dbNow(), allowed: false, counters: [] });
  }

  /** Drops what this process remembers of a number (after a reset anywhere). */
  forget(hash: string): void {
    this.denyCache?.forget(hash);
    this.memory.forget(hash);
  }

  /**
   * For shutdown: waits for statements in flight, then writes what was decided from memory,
   * retrying until `untilMs` if the database is down. Returns how many decisions could not
   * be written.
   */
  async drain(untilMs = Date.now()): Promise<{ lost: number; spooled: number }> {
    await Promise.all([this.consumer.idle(), this.peeker.idle()]);
    return this.writes.drain(untilMs);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.fallback.stop();
    clearInterval(this.flushTimer);
    clearInterval(this.spoolTimer);
    await this.listener?.close();
    // Deleted when empty; otherwise left, unlocked, for the next daemon with this data dir.
    await this.opts.spool.close();
  }

  /** Safe numbers (policy.safe, or allow-listed) get no conversion or sweep counters and no automatic blocks. */
  private input(s: PhoneSubject, p: ActivePolicy, allowlisted: boolean): DecideInput {
    const safe = allowlisted || isSafe(p.policy, s.e164);
    const conversion = this.opts.conversionState?.() ?? CONVERSION_IDLE;
    return { counters: applicableCounters(p.policy, s.e164, s.region, { conversion, safe }), allowlisted, safe };
  }

  private async timed<T>(op: string, size: number, fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await withDeadline(fn(), this.opts.operationDeadlineMs);
    } finally {
      const ms = performance.now() - start;
      this.opts.metrics.dbLatency.observe({ op }, ms / 1000);
      this.opts.metrics.batchSize.observe({ op }, size);
      this.latencyMs = this.latencyMs === null ? ms : this.latencyMs * 0.9 + ms * 0.1;
    }
  }

  private cachedDenial(s: PhoneSubject, p: ActivePolicy): Verdict | undefined {
    if (this.deaf) return undefined;
    const d = this.denyCache?.lookup(s.hash, this.dbNow(), p.decision, (h) => this.memory.summary(h));
    return d ? { ...d, source: 'database', metricSource: 'cache' } : undefined;
  }

  private checkFromMemory(s: PhoneSubject, input: DecideInput, p: ActivePolicy): Verdict {
    return verdictOf(this.memory.check(s.hash, input, p.decision, this.dbNow()), { source: 'memory', metricSource: 'memory' });
  }

  private async consumeFromMemory(s: PhoneSubject, input: DecideInput, p: ActivePolicy): Promise<Verdict> {
    const r = await this.outage.consume(s, input, p.decision, () => this.dbNow());
    // The database came back while this consume waited for a statement to settle.
    if (!r) return this.consume(s, input.allowlisted);
    return verdictOf(r, { source: 'memory', metricSource: 'memory' });
  }

  private async flushInBackground(): Promise<void> {
    // In memory mode the probe owns replay; here only cached (and early) denials ride along.
    if (this.mode !== 'database' || this.writes.size === 0) return;
    try {
      await this.writes.flush();
    } catch (err) {
      if (isConnectionError(err)) this.enterMemory(err);
      else this.opts.logger.error({ err: errForLog(err), sample: hashPrefix(this.writes.oldestHash ?? '') }, 'could not write queued decisions');
    }
  }
}
