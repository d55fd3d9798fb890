// A key's call log and the rules decided on it. The limit's promise (docs/protocol.md): at most
// `limit` allowed consumes in ANY rolling window of `windowMs`. A counter per clock-aligned
// window cannot keep it (2×limit slip through around a boundary), so each key keeps a short log:
// the timestamps of its latest allowed calls. With the latest `capacity = max(rule.limit)`
// timestamps every rule over that key is decided exactly, whatever its window, so a number can
// carry "2 an hour" and "5 a day" at once.
//
// The number rules of a Policy (types.ts) are decided on such a log (decide.ts), in memory and
// by ratelimit_decide_v3 (src/db/functions/decide_v3.sql); the per-IP limits use it too.
// test/db/decisions.test.ts ("agrees with the pure policy, request by request") holds the SQL
// to these functions.

/** A rule over a log; a LimitRule (types.ts) is one. */
export interface LogRule {
  /** Stable name, reported when this rule is the one that denies. */
  readonly id: string;
  readonly limit: number;
  readonly windowMs: number;
}

/** Rules decided together on one log. */
export interface LogPolicy {
  readonly rules: readonly LogRule[];
  /** How many timestamps a key must keep to decide every rule exactly. */
  readonly capacity: number;
  /** The longest window: timestamps older than this can never count again. */
  readonly horizonMs: number;
}

export function makeLogPolicy(rules: readonly LogRule[]): LogPolicy {
  if (rules.length === 0) throw new RangeError('a policy needs at least one rule');
  for (const rule of rules) {
    if (!Number.isSafeInteger(rule.limit) || rule.limit < 1) {
      throw new RangeError(`rule ${rule.id}: limit must be a positive integer, got ${rule.limit}`);
    }
    if (!Number.isSafeInteger(rule.windowMs) || rule.windowMs < 1) {
      throw new RangeError(`rule ${rule.id}: window must be a positive number of ms, got ${rule.windowMs}`);
    }
  }
  return {
    rules: [...rules],
    capacity: Math.max(...rules.map((r) => r.limit)),
    horizonMs: Math.max(...rules.map((r) => r.windowMs)),
  };
}

export interface Decision {
  allowed: boolean;
  /** The rule whose numbers are reported: the one that denies, else the one closest to denying. */
  ruleId: string;
  limit: number;
  used: number;
  remaining: number;
  /** ms since epoch: when the next call becomes possible (denied) or the oldest counted call leaves the window. */
  resetTime: number;
  retryAfterMs: number;
}

/** One rule's state at an instant: everything evaluate() needs from a log for that rule. */
export interface RuleState {
  /** Calls inside the window. */
  used: number;
  /** used < limit: when the oldest counted call leaves (now when none); else when one more call fits. */
  resetTime: number;
}

/** `log` ascending. A call at t counts while now < t + windowMs. */
export function ruleState(log: readonly number[], nowMs: number, rule: LogRule): RuleState {
  const since = nowMs - rule.windowMs;
  let first = log.length;
  while (first > 0 && log[first - 1]! > since) first--;
  const used = log.length - first;
  if (used < rule.limit) return { used, resetTime: used > 0 ? log[first]! + rule.windowMs : nowMs };
  // One more call fits once the limit-th most recent call has left the window. After an outage
  // merge `used` can exceed `limit`; this still names the right call.
  return { used, resetTime: log[log.length - rule.limit]! + rule.windowMs };
}

/**
 * Describes a key's state at `nowMs`. `allowed` is whether a consume now would be allowed.
 */
export function evaluate(log: readonly number[], nowMs: number, policy: LogPolicy): Decision {
  return evaluateStates((rule) => ruleState(log, nowMs, rule), nowMs, policy);
}

/**
 * evaluate() from each rule's state rather than from the log (the database computes the states
 * and ships those instead of the log: issue #12).
 */
export function evaluateStates(stateOf: (rule: LogRule) => RuleState, nowMs: number, policy: LogPolicy): Decision {
  let binding: { rule: LogRule; used: number; resetTime: number } | undefined;
  let denied = false;
  for (const rule of policy.rules) {
    const state = { rule, ...stateOf(rule) };
    if (state.used >= rule.limit) {
      if (!denied || state.resetTime > binding!.resetTime) binding = state;
      denied = true;
    } else if (!denied && (binding === undefined || rule.limit - state.used < binding.rule.limit - binding.used)) {
      binding = state;
    }
  }
  const b = binding!;
  return {
    allowed: !denied,
    ruleId: b.rule.id,
    limit: b.rule.limit,
    used: b.used,
    remaining: Math.max(0, b.rule.limit - b.used),
    resetTime: b.resetTime,
    retryAfterMs: denied ? Math.max(0, b.resetTime - nowMs) : 0,
  };
}

/**
 * The decision instant for a key: never before its latest recorded call, so a log stays
 * ascending (and the window never moves backwards) even when clocks or transactions interleave.
 */
export function decisionTime(log: readonly number[], nowMs: number): number {
  const last = log.length > 0 ? log[log.length - 1]! : nowMs;
  return last > nowMs ? last : nowMs;
}

/** Appends a call at `atMs` and drops what can never count again. Returns a new array. */
export function appendCall(log: readonly number[], atMs: number, policy: LogPolicy): number[] {
  const since = atMs - policy.horizonMs;
  const next = log.filter((t) => t > since);
  next.push(atMs);
  return next.length > policy.capacity ? next.slice(next.length - policy.capacity) : next;
}
