// Numbers known to be denied by their own rules (a number rule, or block_after), denied without
// asking the database until their reset time. Separate from the engine because its correctness
// rests on rules of its own: it is trusted only while reset and change notifications are being
// heard, and it is cleared on every policy or list change and on resets (the engine does that);
// the list lookup runs before it, so an allowlisted or newly unlisted number never reaches it.
//
// With block_after in the policy, number-rule denials are NOT cached: block_after counts the
// denials the database decides, and a cached denial never reaches ratelimit_decide_v3.

import { evaluateStates, type Decision, type LogPolicy, type RuleState } from '../../core/policy/log.js';
import { stateLookup, summaryRuleState, type LogSummary } from '../../core/policy/log-summary.js';
import { BLOCK_AFTER_RULE, type DecisionPolicy } from '../../core/policy/decide.js';
import type { LRUCache } from 'lru-cache';
import { boundedCache } from '../bounded-cache.js';
import type { Verdict } from './verdict.js';

interface Entry {
  untilMs: number;
  /** block_after, rather than a number rule. */
  blocked: boolean;
}

export class DenyCache {
  private readonly entries: LRUCache<string, Entry>;

  constructor(capacity: number) {
    this.entries = boundedCache(capacity);
  }

  /**
   * After the database decided (not for allowlisted numbers): remembers whether its next call
   * would be denied. `rules`: each number rule's state after the decision (DecideOutcome.rules).
   */
  note(hash: string, rules: readonly RuleState[], atMs: number, blockedUntil: number | null, policy: DecisionPolicy): void {
    if (blockedUntil !== null && blockedUntil > atMs) {
      this.entries.set(hash, { untilMs: blockedUntil, blocked: true });
      return;
    }
    if (policy.blockAfter || !policy.number.enforcing) return;
    const next = evaluateStates(stateLookup(policy.number.rules, rules), atMs, policy.number.enforcing);
    if (!next.allowed) this.entries.set(hash, { untilMs: next.resetTime, blocked: false });
  }

  /**
   * The denial the database would give now, or undefined when it must be asked. `summaryOf` is
   * read only for cached numbers, so a miss does not touch the engine's LRU order. The summary is
   * read as memory's expanded log would be (summaryRuleState), without expanding it.
   */
  lookup(
    hash: string,
    nowMs: number,
    policy: DecisionPolicy,
    summaryOf: (hash: string) => LogSummary | undefined,
  ): Omit<Verdict, 'source' | 'metricSource'> | undefined {
    const e = this.entries.get(hash);
    if (e === undefined) return undefined;
    if (nowMs >= e.untilMs) {
      this.entries.delete(hash);
      return undefined;
    }
    const summary = summaryOf(hash) ?? NO_CALLS;
    const view = policy.number.view ? evaluateSummary(summary, nowMs, policy.number.view) : undefined;
    if (e.blocked) {
      const own = ownView(view, nowMs);
      return {
        allowed: false,
        reason: 'number_blocked',
        rule: BLOCK_AFTER_RULE,
        shadow: [],
        own,
        ...own,
        remaining: 0,
        resetTime: e.untilMs,
        retryAfterMs: e.untilMs - nowMs,
      };
    }
    const d = policy.number.enforcing ? evaluateSummary(summary, nowMs, policy.number.enforcing) : undefined;
    if (!d || d.allowed) {
      // The log fell out of memory: do not guess, ask the database.
      this.entries.delete(hash);
      return undefined;
    }
    // The reset time noted is the database's, exact; the log in memory may be a summary that
    // frees up later (memory.ts), so the entry's time is the one reported.
    const own = { ...ownView(d, nowMs), resetTime: e.untilMs, retryAfterMs: e.untilMs - nowMs };
    return { allowed: false, reason: 'phone_rate_limit_exceeded', rule: d.ruleId, shadow: [], own, ...own };
  }

  forget(hash: string): void {
    this.entries.delete(hash);
  }

  clear(): void {
    this.entries.clear();
  }
}

const NO_CALLS: LogSummary = { calls: [], counts: null };

/** evaluate(expandLog(summary), nowMs, policy), as memory decides from it. */
function evaluateSummary(summary: LogSummary, nowMs: number, policy: LogPolicy): Decision {
  return evaluateStates((rule) => summaryRuleState(summary, nowMs, rule), nowMs, policy);
}

function ownView(d: Decision | undefined, nowMs: number) {
  return d
    ? { limit: d.limit, used: d.used, remaining: d.remaining, resetTime: d.resetTime, retryAfterMs: d.retryAfterMs }
    : { limit: 0, used: 0, remaining: 0, resetTime: nowMs, retryAfterMs: 0 };
}
