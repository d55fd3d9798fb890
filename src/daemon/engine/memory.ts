// What this instance remembers of numbers and aggregate counters, bounded: the numbers' state
// as the database last showed it (for the deny cache and the fallback), and the counters'
// buckets. While the database is unreachable the fallback decides from here with the same pure
// model the SQL implements (decideConsume), so the same policy applies; the aggregates are then
// per instance (what this instance saw plus what it allowed since).
//
// The database describes a number by a summary of its log (src/core/policy/log-summary.ts: the
// log itself when short, else runs of calls taken at their newest time), kept as it came and
// expanded only when memory decides or the deny cache reads it. Deciding from the expanded log
// never allows more than the real log would; it may deny early by less than one run.
//
// Automatic blocks live here as in the database: a counter's `block` (Buckets.block) and a
// number's block level, so that blocks made or seen before or during an outage keep applying
// and escalating in memory.

import { addCall, counterTime, EMPTY_BUCKETS, removeCall } from '../../core/policy/aggregate.js';
import { counterMapKey } from '../../core/policy/counters.js';
import {
  decideCheck,
  decideConsume,
  EMPTY_NUMBER,
  type DecideInput,
  type DecideResult,
  type DecisionPolicy,
  type NumberState,
} from '../../core/policy/decide.js';
import { counterKind, type AggregateCounter, type Buckets } from '../../core/policy/types.js';
import { expandLog, type LogSummary } from '../../core/policy/log-summary.js';
import type { LRUCache } from 'lru-cache';
import { boundedCache } from '../bounded-cache.js';

/** A number as last seen: its log (summarized) and its block. */
interface KnownNumber {
  readonly summary: LogSummary;
  readonly blockedUntil: number | null;
  readonly denials: readonly number[];
  /** The escalation step of its latest block (NumberState.blockLevel). */
  readonly blockLevel: number;
}

export class MemoryState {
  private readonly numbers: LRUCache<string, KnownNumber>;
  private readonly counters: LRUCache<string, Buckets>;

  constructor(numberCapacity: number, counterCapacity: number) {
    this.numbers = boundedCache(numberCapacity);
    this.counters = boundedCache(counterCapacity);
  }

  /** A number's log as the database last summarized it (expandLog gives the log memory decides from). */
  summary(hash: string): LogSummary | undefined {
    return this.numbers.get(hash)?.summary;
  }

  /**
   * Keeps the newest state seen for a number (a later log never gives way to an older one;
   * a summary's last entry is the log's newest call). block_after's recent denials are not
   * sent by the database: memory counts only its own.
   */
  learnNumber(hash: string, summary: LogSummary, blockedUntil: number | null, blockLevel?: number): void {
    // peek: the set() below, or the number's next decision, makes it recent; a get here would
    // reorder the LRU once more per decision for nothing.
    const known = this.numbers.peek(hash);
    if (!known || (summary.calls.at(-1) ?? 0) >= (known.summary.calls.at(-1) ?? 0)) {
      // A decision's reply does not carry the level: the one memory knows stays.
      this.numbers.set(hash, { summary, blockedUntil, denials: [], blockLevel: blockLevel ?? known?.blockLevel ?? 0 });
    }
  }

  learnCounter(c: AggregateCounter, buckets: Buckets): void {
    const key = counterMapKey(c.rule.id, c.key);
    const known = this.counters.get(key);
    // The database's block wins even over a later one memory knows: `unlist` ends blocks there.
    if (!known || (buckets.ts.at(-1) ?? 0) >= (known.ts.at(-1) ?? 0)) this.counters.set(key, buckets);
  }

  /**
   * Takes back one call counted at `callAtMs` from memory's counters (removeCall() in
   * src/core/policy/aggregate.ts): for a converted outcome received while the database is
   * unreachable, on the number's `unconverted` counters. Counters memory does not hold, or
   * whose window the call has left, are unchanged. Returns how many counters gave a call back.
   */
  removeCall(counters: readonly AggregateCounter[], callAtMs: number, nowMs: number): number {
    let taken = 0;
    for (const c of counters) {
      const key = counterMapKey(c.rule.id, c.key);
      const known = this.counters.get(key);
      if (!known) continue;
      const after = removeCall(known, callAtMs, nowMs, c.rule);
      if (after !== known) {
        this.counters.set(key, after);
        taken++;
      }
    }
    return taken;
  }

  /**
   * Counts a call memory did not decide: one a statement may have committed (its connection died
   * with the outcome unknown), or one replayed from a spool. Kept in time order; beyond the
   * log's capacity the oldest go, as appendCall() does.
   */
  admit(hash: string, atMs: number, counters: readonly AggregateCounter[], policy: DecisionPolicy): void {
    const known = this.numbers.get(hash);
    const before = known ? expandLog(known.summary) : EMPTY_NUMBER.log;
    const { capacity, horizonMs } = policy.number.log;
    const newest = Math.max(atMs, before.at(-1) ?? atMs);
    const log = [...before, atMs].filter((t) => t > newest - horizonMs).sort((a, b) => a - b);
    const kept = log.length > capacity ? log.slice(log.length - capacity) : log;
    this.numbers.set(hash, {
      summary: { calls: kept, counts: null },
      blockedUntil: known?.blockedUntil ?? null,
      denials: known?.denials ?? [],
      blockLevel: known?.blockLevel ?? 0,
    });
    this.addToCounters(counters, atMs, before.at(-1) ?? null);
  }

  /**
   * Adds one allowed call to aggregate counters (a database decision folded in during an
   * outage). `previousCallMs`: the number's call before this one, when known, so that a
   * `distinct` counter that already counts the number moves it rather than counting it twice
   * (unknown: counted again, which may deny early, never late).
   */
  addToCounters(counters: readonly AggregateCounter[], atMs: number, previousCallMs: number | null = null): void {
    for (const c of counters) {
      const key = counterMapKey(c.rule.id, c.key);
      let b = this.counters.get(key) ?? EMPTY_BUCKETS;
      const block = b.block;
      if (counterKind(c.rule.group) === 'distinct' && previousCallMs !== null && previousCallMs > counterTime(b, atMs) - c.rule.windowMs) {
        b = removeCall(b, previousCallMs, atMs, c.rule);
      }
      const after = addCall(b, atMs, c.rule);
      this.counters.set(key, block ? { ...after, block } : after);
    }
  }

  forget(hash: string): void {
    this.numbers.delete(hash);
  }

  check(hash: string, input: DecideInput, policy: DecisionPolicy, nowMs: number): DecideResult {
    return decideCheck(this.state(hash, input.counters), input, policy, nowMs);
  }

  consume(hash: string, input: DecideInput, policy: DecisionPolicy, nowMs: number): DecideResult {
    const { result, state } = decideConsume(this.state(hash, input.counters), input, policy, nowMs);
    this.numbers.set(hash, {
      summary: { calls: state.number.log, counts: null },
      blockedUntil: state.number.blockedUntil,
      denials: state.number.denials,
      blockLevel: state.number.blockLevel ?? 0,
    });
    input.counters.forEach((c, i) => this.counters.set(counterMapKey(c.rule.id, c.key), state.buckets[i]!));
    return result;
  }

  private state(hash: string, counters: readonly AggregateCounter[]) {
    const known = this.numbers.get(hash);
    const number: NumberState = known
      ? { log: expandLog(known.summary), blockedUntil: known.blockedUntil, denials: known.denials, blockLevel: known.blockLevel }
      : EMPTY_NUMBER;
    return {
      number,
      buckets: counters.map((c) => this.counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS),
    };
  }
}
