import { consume, evaluate, type Decision, type Policy } from '../core/policy.js';
import { LruMap } from './memory.js';

/**
 * Per-client-IP limit on consumes, in memory and per instance (as in the original design): a
 * stolen web form is throttled by address even when it cycles through victims' numbers.
 * A slot is reserved before the phone decision and refunded if the phone limit denies, so
 * concurrent requests from one address cannot overshoot while a database answer is pending.
 */
export class IpLimiter {
  private readonly logs: LruMap<string, number[]>;
  constructor(
    private readonly policy: Policy,
    capacity = 100_000,
  ) {
    this.logs = new LruMap(capacity);
  }

  reserve(ip: string, nowMs = Date.now()): { decision: Decision; atMs: number } {
    const r = consume(this.logs.get(ip) ?? [], nowMs, this.policy);
    if (r.decision.allowed) this.logs.set(ip, r.log);
    return { decision: r.decision, atMs: r.atMs };
  }

  refund(ip: string, atMs: number): void {
    const log = this.logs.get(ip);
    if (!log) return;
    const i = log.lastIndexOf(atMs);
    if (i >= 0) this.logs.set(ip, [...log.slice(0, i), ...log.slice(i + 1)]);
  }

  peek(ip: string, nowMs = Date.now()): Decision {
    return evaluate(this.logs.get(ip) ?? [], nowMs, this.policy);
  }
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
