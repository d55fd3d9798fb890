// Aggregate rules (prefix, country, global) count many numbers' calls under one key: a hot
// counter. An exact log would hold `limit` timestamps (10,000 for a daily global budget) and be
// rewritten on every call, so calls are grouped into buckets of at most bucketCalls(rule) calls,
// each carrying its newest call's time (see Buckets in types.ts).
// A bucket counts, whole, until its newest call leaves the window: the count is never below the
// true rolling count (the promise holds) and above it by less than one bucket, so a consume may
// be denied early by < bucketCalls <= ceil(2% of limit) calls, as docs/protocol.md allows.
//
// The SQL function ratelimit_decide_v3 (src/db/functions/decide_v3.sql) implements the
// same arithmetic; test/db/policy-decisions.test.ts holds the two to each other.

import { AGGREGATE_SLACK, type Buckets, type LimitRule } from './types.js';

export const EMPTY_BUCKETS: Buckets = { ts: [], n: [] };

/** Calls one bucket may hold: the most a rule may deny early by, plus one. */
export function bucketCalls(rule: Pick<LimitRule, 'limit'>): number {
  return Math.max(1, Math.ceil(rule.limit * AGGREGATE_SLACK));
}

/**
 * A counter's own clock: never before its newest bucket, so its buckets stay ascending and its
 * window never moves backwards, even when decision times of different numbers (each never
 * before that number's last call) arrive out of order. The number log does the same
 * (decisionTime in src/core/policy/log.ts).
 */
export function counterTime(buckets: Buckets, nowMs: number): number {
  const last = buckets.ts.length > 0 ? buckets.ts[buckets.ts.length - 1]! : nowMs;
  return last > nowMs ? last : nowMs;
}

/** Index of the oldest bucket still counting at `nowMs` (ts.length when none does). */
function firstLive(buckets: Buckets, nowMs: number, rule: Pick<LimitRule, 'windowMs'>): number {
  const since = nowMs - rule.windowMs;
  let first = buckets.ts.length;
  while (first > 0 && buckets.ts[first - 1]! > since) first--;
  return first;
}

/** Calls counted in the window ending at `nowMs`. */
export function used(buckets: Buckets, nowMs: number, rule: Pick<LimitRule, 'windowMs'>): number {
  let sum = 0;
  for (let i = firstLive(buckets, nowMs, rule); i < buckets.n.length; i++) sum += buckets.n[i]!;
  return sum;
}

export interface AggregateView {
  ruleId: string;
  /** Whether one more call fits now (shadow rules included: this says what the rule would do). */
  allowed: boolean;
  limit: number;
  used: number;
  remaining: number;
  /** Denied: when one more call fits. Allowed: when the oldest counted call leaves, or now. */
  resetTime: number;
  retryAfterMs: number;
}

export function evaluateAggregate(buckets: Buckets, nowMs: number, rule: LimitRule): AggregateView {
  const at = counterTime(buckets, nowMs);
  const first = firstLive(buckets, at, rule);
  let count = 0;
  for (let i = first; i < buckets.n.length; i++) count += buckets.n[i]!;
  const allowed = count + 1 <= rule.limit;
  let resetTime: number;
  if (allowed) {
    resetTime = first < buckets.ts.length ? buckets.ts[first]! + rule.windowMs : at;
  } else {
    // After an outage replay `count` can exceed the limit by many buckets: one call fits once
    // enough of the oldest have left.
    let left = count;
    let i = first;
    while (i < buckets.n.length - 1 && left - buckets.n[i]! >= rule.limit) left -= buckets.n[i++]!;
    resetTime = buckets.ts[i]! + rule.windowMs;
  }
  return {
    ruleId: rule.id,
    allowed,
    limit: rule.limit,
    used: count,
    remaining: Math.max(0, rule.limit - count),
    resetTime,
    retryAfterMs: allowed ? 0 : Math.max(0, resetTime - nowMs),
  };
}

/** Counts one call at `atMs`; returns new buckets (the input is not changed). */
export function addCall(buckets: Buckets, atMs: number, rule: LimitRule): Buckets {
  const at = counterTime(buckets, atMs);
  const first = firstLive(buckets, at, rule);
  const ts = buckets.ts.slice(first);
  const n = buckets.n.slice(first);
  const last = ts.length - 1;
  if (last >= 0 && n[last]! < bucketCalls(rule)) {
    n[last] = n[last]! + 1;
    ts[last] = at;
  } else {
    ts.push(at);
    n.push(1);
  }
  return { ts, n };
}

/**
 * Takes back one call counted at `callAtMs` (a converted outcome for an `unconverted` counter; a
 * number's previous call when a `distinct` counter moves it to its newest call). The call sits in
 * the first bucket whose newest call is not before it; when that bucket has left the window at
 * the counter's time the call no longer counts and nothing changes. With several buckets sharing
 * that time the earliest is taken, and a bucket already at 0 stays there: either way the count
 * can only stay above the true one, never below (the promise holds). Returns new buckets.
 */
export function removeCall(buckets: Buckets, callAtMs: number, nowMs: number, rule: Pick<LimitRule, 'windowMs'>): Buckets {
  const at = counterTime(buckets, nowMs);
  if (callAtMs <= at - rule.windowMs) return buckets;
  const first = firstLive(buckets, at, rule);
  let i = first;
  while (i < buckets.ts.length && buckets.ts[i]! < callAtMs) i++;
  if (i === buckets.ts.length || buckets.n[i]! === 0) return buckets;
  const n = buckets.n.slice();
  n[i] = n[i]! - 1;
  return { ...buckets, ts: buckets.ts.slice(), n };
}
