// The limit's promise (PROTOCOL.md): at most `max` allowed consumes in ANY rolling window of
// `windowMs`. A counter per clock-aligned window cannot keep it (2×max slip through around a
// boundary), so each key keeps a short log: the timestamps of its latest allowed calls. With
// the latest `capacity = max(rule.max)` timestamps every rule over that key is decided exactly,
// whatever its window, so a number can carry "2 an hour" and "5 a day" at once.
//
// The SQL in src/db/migrations implements the same decision for the database path; the
// in-memory fallback and the per-IP limits use these functions. test/db/decisions.test.ts
// ("agrees with the pure policy, request by request") holds the two to each other.

export interface Rule {
  /** Stable name, reported when this rule is the one that denies. */
  readonly id: string;
  readonly max: number;
  readonly windowMs: number;
}

export interface Policy {
  readonly rules: readonly Rule[];
  /** How many timestamps a key must keep to decide every rule exactly. */
  readonly capacity: number;
  /** The longest window: timestamps older than this can never count again. */
  readonly horizonMs: number;
}

export function makePolicy(rules: readonly Rule[]): Policy {
  if (rules.length === 0) throw new RangeError('a policy needs at least one rule');
  for (const rule of rules) {
    if (!Number.isSafeInteger(rule.max) || rule.max < 1) {
      throw new RangeError(`rule ${rule.id}: max must be a positive integer, got ${rule.max}`);
    }
    if (!Number.isSafeInteger(rule.windowMs) || rule.windowMs < 1) {
      throw new RangeError(`rule ${rule.id}: window must be a positive number of ms, got ${rule.windowMs}`);
    }
  }
  return {
    rules: [...rules],
    capacity: Math.max(...rules.map((r) => r.max)),
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
  /** used < max: when the oldest counted call leaves (now when none); else when one more call fits. */
  resetTime: number;
}

/** `log` ascending. A call at t counts while now < t + windowMs. */
export function ruleState(log: readonly number[], nowMs: number, rule: Rule): RuleState {
  const since = nowMs - rule.windowMs;
  let first = log.length;
  while (first > 0 && log[first - 1]! > since) first--;
  const used = log.length - first;
  if (used < rule.max) return { used, resetTime: used > 0 ? log[first]! + rule.windowMs : nowMs };
  // One more call fits once the max-th most recent call has left the window. After an outage
  // merge `used` can exceed `max`; this still names the right call.
  return { used, resetTime: log[log.length - rule.max]! + rule.windowMs };
}

/**
 * Describes a key's state at `nowMs`. `allowed` is whether a consume now would be allowed.
 */
export function evaluate(log: readonly number[], nowMs: number, policy: Policy): Decision {
  return evaluateStates((rule) => ruleState(log, nowMs, rule), nowMs, policy);
}

/**
 * evaluate() from each rule's state rather than from the log (the database computes the states
 * and ships those instead of the log: issue #12).
 */
export function evaluateStates(stateOf: (rule: Rule) => RuleState, nowMs: number, policy: Policy): Decision {
  let binding: { rule: Rule; used: number; resetTime: number } | undefined;
  let denied = false;
  for (const rule of policy.rules) {
    const state = { rule, ...stateOf(rule) };
    if (state.used >= rule.max) {
      if (!denied || state.resetTime > binding!.resetTime) binding = state;
      denied = true;
    } else if (!denied && (binding === undefined || rule.max - state.used < binding.rule.max - binding.used)) {
      binding = state;
    }
  }
  const b = binding!;
  return {
    allowed: !denied,
    ruleId: b.rule.id,
    limit: b.rule.max,
    used: b.used,
    remaining: Math.max(0, b.rule.max - b.used),
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
export function appendCall(log: readonly number[], atMs: number, policy: Policy): number[] {
  const since = atMs - policy.horizonMs;
  const next = log.filter((t) => t > since);
  next.push(atMs);
  return next.length > policy.capacity ? next.slice(next.length - policy.capacity) : next;
}
