import type { Decision, LogPolicy } from '../core/policy/log.js';
import type { LRUCache } from 'lru-cache';
import { boundedCache } from './bounded-cache.js';

/** Buckets per window: memory per address is fixed, whatever the limit. */
const IP_BUCKETS = 60;
// A window of IP_BUCKETS buckets, unaligned, touches up to one more.
const RING = IP_BUCKETS + 1;

/**
 * An address's live buckets as [bucket, calls] pairs, oldest first, flat: [j0, c0, j1, c1, ...].
 * Sparse because most addresses make a call or two: two typed rings per address (61 slots each)
 * cost ~1.2 KB, and with a fresh address per request the 100k addresses held 118 MB of a
 * 245 MB heap (heap snapshot after 400k distinct numbers); a pair costs 16 bytes. Pruned to the
 * last RING buckets on every reserve, so an address never holds more than RING pairs.
 */
type Buckets = number[];

/**
 * Where addresses count when the table is full of live state (see IpLimiter.keyFor): not an
 * address, so it never collides with one.
 */
export const OVERFLOW_KEY = '(overflow)';

/**
 * Per-client-IP limit on consumes, in memory and per instance (as in the original design): a
 * stolen web form is throttled by address even when it cycles through victims' numbers.
 *
 * Calls are counted in IP_BUCKETS buckets per window rather than logged one by one, so an
 * address costs the same memory and time at a limit of 10 000 as at 20. A bucket that overlaps
 * the window at all counts whole: the promise (at most `max` in any rolling window) holds
 * exactly, and a call may be refused up to one bucket (window / 60) early.
 *
 * A slot is reserved before the phone decision and refunded if the phone limit denies, so
 * concurrent requests from one address cannot overshoot while a database answer is pending.
 */
export class IpLimiter {
  private readonly byIp: LRUCache<string, Buckets>;
  /** OVERFLOW_KEY's buckets: outside the table, so using it never evicts an address. */
  private overflow: Buckets | undefined;
  private readonly max: number;
  private readonly windowMs: number;
  private readonly bucketMs: number;

  /**
   * `onFull`: called each time a new address finds the table full of live counts and counts in
   * the shared overflow entry instead (for a metric).
   */
  constructor(
    policy: LogPolicy,
    private readonly capacity = 100_000,
    private readonly onFull?: () => void,
  ) {
    const rule = policy.rules[0]!;
    this.max = rule.limit;
    this.windowMs = rule.windowMs;
    this.bucketMs = Math.max(1, Math.ceil(rule.windowMs / IP_BUCKETS));
    this.byIp = boundedCache(capacity);
  }

  /**
   * Buckets that overlap (now - window, now], oldest first, with their calls; after the clock
   * stepped back, also the buckets "ahead" of now: those calls happened, so they count.
   */
  private live(b: Buckets | undefined, nowMs: number): Array<[bucket: number, calls: number]> {
    if (!b) return [];
    const newest = Math.floor(nowMs / this.bucketMs);
    const oldest = Math.max(Math.floor((nowMs - this.windowMs) / this.bucketMs), newest - RING + 1);
    const out: Array<[number, number]> = [];
    for (let i = 0; i < b.length; i += 2) {
      const j = b[i]!;
      if (j >= oldest && b[i + 1]! > 0) out.push([j, b[i + 1]!]);
    }
    return out;
  }

  private decide(b: Buckets | undefined, nowMs: number): Decision {
    const live = this.live(b, nowMs);
    const used = live.reduce((n, [, c]) => n + c, 0);
    const leaves = (bucket: number) => (bucket + 1) * this.bucketMs + this.windowMs;
    if (used < this.max) {
      return {
        allowed: true,
        ruleId: 'ip',
        limit: this.max,
        used,
        remaining: this.max - used,
        resetTime: live.length ? leaves(live[0]![0]) : nowMs,
        retryAfterMs: 0,
      };
    }
    // One more call fits once enough of the oldest buckets have left the window.
    let left = used;
    let resetTime = nowMs;
    for (const [bucket, calls] of live) {
      left -= calls;
      resetTime = leaves(bucket);
      if (left < this.max) break;
    }
    return { allowed: false, ruleId: 'ip', limit: this.max, used, remaining: 0, resetTime, retryAfterMs: Math.max(0, resetTime - nowMs) };
  }

  /** Entries held now (for tests and metrics). */
  get size(): number {
    return this.byIp.size;
  }

  private get(key: string): Buckets | undefined {
    return key === OVERFLOW_KEY ? this.overflow : this.byIp.get(key);
  }

  private set(key: string, buckets: Buckets): void {
    if (key === OVERFLOW_KEY) this.overflow = buckets;
    else this.byIp.set(key, buckets);
  }

  /**
   * The key an address counts under. Counting state is never evicted while it can still deny:
   * an LRU that silently dropped the oldest address under a flood of fresh ones would hand the
   * dropped address a fresh quota. When the table is full, the least recently used entry (the
   * one touched longest ago) goes if its counts have all left the window; if even it is live,
   * every entry is, and the new address counts in one shared overflow entry with this limit:
   * under such a flood new addresses share one quota (fail closed), which `onFull` reports.
   */
  private keyFor(ip: string, nowMs: number): string {
    if (ip === OVERFLOW_KEY || this.byIp.size < this.capacity || this.byIp.has(ip)) return ip;
    const oldest = this.byIp.rkeys().next();
    if (!oldest.done && this.live(this.byIp.peek(oldest.value), nowMs).length === 0) {
      this.byIp.delete(oldest.value);
      return ip;
    }
    this.onFull?.();
    return OVERFLOW_KEY;
  }

  /** Calls in live buckets: what live() would sum, without building it. */
  private used(b: Buckets, nowMs: number): number {
    const newest = Math.floor(nowMs / this.bucketMs);
    const oldest = Math.max(Math.floor((nowMs - this.windowMs) / this.bucketMs), newest - RING + 1);
    let used = 0;
    for (let i = 0; i < b.length; i += 2) if (b[i]! >= oldest && b[i + 1]! > 0) used += b[i + 1]!;
    return used;
  }

  /**
   * reserve() for the decision path, which never reads an allowed call's Decision: the key the
   * call was counted under (give it to refund()), or the denial. Builds no Decision when allowed.
   */
  take(address: string, nowMs = Date.now()): string | Decision {
    const ip = this.keyFor(address, nowMs);
    const b = this.get(ip);
    if (b && this.used(b, nowMs) >= this.max) return this.decide(b, nowMs);
    const j = Math.floor(nowMs / this.bucketMs);
    if (!b) this.set(ip, [j, 1]);
    else countCall(b, j);
    return ip;
  }

  /** `key`: where the call was counted (the address, or OVERFLOW_KEY): give it to refund(). */
  reserve(address: string, nowMs = Date.now()): { decision: Decision; atMs: number; key: string } {
    const ip = this.keyFor(address, nowMs);
    const b = this.get(ip);
    const before = this.decide(b, nowMs);
    if (!before.allowed) return { decision: before, atMs: nowMs, key: ip };
    const j = Math.floor(nowMs / this.bucketMs);
    let buckets = b;
    if (!buckets) {
      // A literal has exactly the room it needs; pushing into [] would reserve 17 slots.
      buckets = [j, 1];
      this.set(ip, buckets);
    } else countCall(buckets, j);
    return { decision: { ...this.decide(buckets, nowMs), allowed: true, retryAfterMs: 0 }, atMs: nowMs, key: ip };
  }

  /** `key`: what reserve() returned. An entry left with no calls is dropped (it holds nothing). */
  refund(key: string, atMs: number): void {
    const b = this.get(key);
    if (!b) return;
    const j = Math.floor(atMs / this.bucketMs);
    let calls = 0;
    for (let i = 0; i < b.length; i += 2) {
      if (b[i] === j && b[i + 1]! > 0) b[i + 1]!--;
      calls += b[i + 1]!;
    }
    if (calls === 0 && key !== OVERFLOW_KEY) this.byIp.delete(key);
  }
}

/** One more call in bucket j; drops the pairs no window can reach any more. */
function countCall(buckets: Buckets, j: number): void {
  // Buckets that can never be live again (the clock may step back a little, never a ring).
  let dead = 0;
  while (dead < buckets.length && buckets[dead]! <= j - RING) dead += 2;
  if (dead > 0) buckets.splice(0, dead);
  // Usually the last pair, or a new one after it; an earlier pair only after a clock step back.
  let i = buckets.length - 2;
  while (i >= 0 && buckets[i]! > j) i -= 2;
  if (i >= 0 && buckets[i] === j) buckets[i + 1]!++;
  else buckets.splice(i + 2, 0, j, 1);
}

/** Open connections per address, so one host cannot hold every socket. */
export class ConnectionCounter {
  private readonly counts = new Map<string, number>();
  constructor(private readonly maxPerIp: number) {}

  acquire(ip: string): boolean {
    const n = this.counts.get(ip) ?? 0;
    if (n >= this.maxPerIp) return false;
    this.counts.set(ip, n + 1);
    return true;
  }

  release(ip: string): void {
    const n = (this.counts.get(ip) ?? 1) - 1;
    if (n <= 0) this.counts.delete(ip);
    else this.counts.set(ip, n);
  }
}

/** Messages per second on one connection, with a burst of twice the rate. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    private readonly ratePerS: number,
    private readonly burst = ratePerS * 2,
    nowMs = Date.now(),
  ) {
    this.tokens = burst;
    this.last = nowMs;
  }

  take(nowMs = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.last) / 1000) * this.ratePerS);
    this.last = nowMs;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
