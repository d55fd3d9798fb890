// What this instance remembers of numbers and aggregate counters, bounded: the numbers' state
// as the database last showed it (for the deny cache and the fallback), and the counters'
// buckets. While the database is unreachable the fallback decides from here with the same pure
// model the SQL implements (decideConsume), so the same policy applies; the aggregates are then
// per instance (what this instance saw plus what it allowed since).

import { addCall, EMPTY_BUCKETS } from '../../core/policy/aggregate.js';
import { counterMapKey } from '../../core/policy/counters.js';
import { decideCheck, decideConsume, EMPTY_NUMBER, type DecideInput, type DecideResult, type DecisionPolicy, type NumberState } from '../../core/policy/decide.js';
import type { AggregateCounter, Buckets } from '../../core/policy/types.js';
import { LRUCache } from 'lru-cache';

export class MemoryState {
  private readonly numbers: LRUCache<string, NumberState>;
  private readonly counters: LRUCache<string, Buckets>;

  constructor(numberCapacity: number, counterCapacity: number) {
    this.numbers = new LRUCache({ max: numberCapacity });
    this.counters = new LRUCache({ max: counterCapacity });
  }

  log(hash: string): readonly number[] | undefined {
    return this.numbers.get(hash)?.log;
  }

  /** Keeps the newest state seen for a number (a later log never gives way to an older one). */
  learnNumber(hash: string, state: NumberState): void {
    const known = this.numbers.get(hash);
    if (!known || (state.log.at(-1) ?? 0) >= (known.log.at(-1) ?? 0)) this.numbers.set(hash, state);
  }

  learnCounter(c: AggregateCounter, buckets: Buckets): void {
    const key = counterMapKey(c.rule.id, c.key);
    const known = this.counters.get(key);
    if (!known || (buckets.ts.at(-1) ?? 0) >= (known.ts.at(-1) ?? 0)) this.counters.set(key, buckets);
  }

  /**
   * Counts a call memory did not decide: one a statement may have committed (its connection died
   * with the outcome unknown), or one replayed from a spool. Kept in time order; beyond the
   * log's capacity the oldest go, as appendCall() does.
   */
  admit(hash: string, atMs: number, counters: readonly AggregateCounter[], policy: DecisionPolicy): void {
    const known = this.numbers.get(hash) ?? EMPTY_NUMBER;
    const { capacity, horizonMs } = policy.number.log;
    const newest = Math.max(atMs, known.log.at(-1) ?? atMs);
    const log = [...known.log, atMs].filter((t) => t > newest - horizonMs).sort((a, b) => a - b);
    this.numbers.set(hash, { ...known, log: log.length > capacity ? log.slice(log.length - capacity) : log });
    this.addToCounters(counters, atMs);
  }

  /** Adds one allowed call to aggregate counters (a database decision folded in during an outage). */
  addToCounters(counters: readonly AggregateCounter[], atMs: number): void {
    for (const c of counters) {
      const key = counterMapKey(c.rule.id, c.key);
      this.counters.set(key, addCall(this.counters.get(key) ?? EMPTY_BUCKETS, atMs, c.rule));
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
    this.numbers.set(hash, state.number);
    input.counters.forEach((c, i) => this.counters.set(counterMapKey(c.rule.id, c.key), state.buckets[i]!));
    return result;
  }

  private state(hash: string, counters: readonly AggregateCounter[]) {
    return {
      number: this.numbers.get(hash) ?? EMPTY_NUMBER,
      buckets: counters.map((c) => this.counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS),
    };
  }
}
