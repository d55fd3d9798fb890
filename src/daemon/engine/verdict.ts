// What a decision says to the client, whoever made it (PostgreSQL, memory, the deny cache, or
// the daemon's own checks before them: lists, destinations, ip). One shape so the reply, the
// metrics and the heartbeat read every decision the same way.

import { evaluateStates, type Decision } from '../../core/policy/log.js';
import { stateLookup } from '../../core/policy/log-summary.js';
import type { AggregateView } from '../../core/policy/aggregate.js';
import { aggregateReason, BLOCK_AFTER_RULE, type DecideResult, type DecisionPolicy } from '../../core/policy/decide.js';
import { AUTO_BLOCK_RULE, GROUP_DENY_REASON, groupOfRuleId, type AggregateCounter, type NumberType } from '../../core/policy/types.js';
import type { DecideOutcome } from '../../db/decisions.js';
import type { DenyReason } from '../../protocol/wire.js';
import type { MetricSource } from '../metrics.js';

export interface PhoneSubject {
  hash: string;
  region: string | undefined;
  /** e.g. +14155552•••, for dashboards. */
  masked: string;
  e164: string;
  /** libphonenumber's type, for destination controls; undefined when it cannot tell. */
  type: NumberType | undefined;
  /** During a key rotation: the number's hash under the previous key (src/daemon/key-rotation.ts). */
  previousHash?: string | undefined;
}

/** limit/used/remaining/resetTime of one rule; times null for a block without an end. */
export interface View {
  limit: number;
  used: number;
  remaining: number;
  resetTime: number | null;
  retryAfterMs: number | null;
}

export interface Verdict extends View {
  allowed: boolean;
  reason: DenyReason | null;
  /** The denying rule's id; null when allowed. */
  rule: string | null;
  /** Shadow rules that would have denied. */
  shadow: string[];
  /** The number's own view (its binding number rule): what browser origins see instead of aggregate counts. */
  own: View;
  source: 'database' | 'memory';
  /** Finer, for metrics: `cache` when a number known to be denied was denied from memory. */
  metricSource: MetricSource;
}

/** For a policy without number rules: there is no count of the number's own to show. */
function noView(atMs: number): View {
  return { limit: 0, used: 0, remaining: 0, resetTime: atMs, retryAfterMs: 0 };
}

function viewOf(d: Decision | AggregateView): View {
  return { limit: d.limit, used: d.used, remaining: d.remaining, resetTime: d.resetTime, retryAfterMs: d.retryAfterMs };
}

/** The reason a denial by `rule` gives; for `auto:block`, `blockedBy` is the blocked counter's rule id. */
export function reasonOf(rule: string, blockedBy: string | null = null): DenyReason {
  if (rule === BLOCK_AFTER_RULE) return 'number_blocked';
  const group = groupOfRuleId(rule === AUTO_BLOCK_RULE && blockedBy !== null ? blockedBy : rule);
  return group === undefined || group === 'number' || group === 'ip' ? GROUP_DENY_REASON.number : aggregateReason(group);
}

type Source = Pick<Verdict, 'source' | 'metricSource'>;

/** From the pure model's result (memory mode, checks) or fromOutcome's. */
export function verdictOf(r: DecideResult, source: Source): Verdict {
  const own = r.number ? viewOf(r.number) : noView(r.atMs);
  if (r.allowed) return verdict(r, own, source, own.limit, own.used, own.remaining, own.resetTime, 0);
  if (r.reason === 'number_blocked' && r.blockedUntil !== null) {
    return verdict(r, own, source, own.limit, own.used, 0, r.blockedUntil, Math.max(0, r.blockedUntil - r.atMs));
  }
  const shown = r.aggregate ?? own;
  return verdict(r, own, source, shown.limit, shown.used, shown.remaining, shown.resetTime, shown.retryAfterMs);
}

// Every verdict is built here, field by field in one order: object spreads cost ~3% of the
// daemon's time on the decision path (profile, ws uniform 256) and gave verdicts many shapes.
function verdict(
  r: Pick<Verdict, 'allowed' | 'reason' | 'rule' | 'shadow'>,
  own: View,
  source: Source,
  limit: number,
  used: number,
  remaining: number,
  resetTime: number | null,
  retryAfterMs: number | null,
): Verdict {
  return {
    allowed: r.allowed,
    reason: r.reason,
    rule: r.rule,
    shadow: r.shadow,
    own,
    limit,
    used,
    remaining,
    resetTime,
    retryAfterMs,
    source: source.source,
    metricSource: source.metricSource,
  };
}

/** ratelimit_decide_v3's outcome as the pure model's result, so both paths reply alike. */
export function fromOutcome(o: DecideOutcome, counters: readonly AggregateCounter[], policy: DecisionPolicy): DecideResult {
  const view = policy.number.view ? evaluateStates(stateLookup(policy.number.rules, o.rules), o.atMs, policy.number.view) : null;
  const number = view && o.allowed ? { ...view, allowed: true, retryAfterMs: 0 } : view;
  let aggregate: AggregateView | null = null;
  if (!o.allowed && o.aggregateUsed !== null && o.rule !== null) {
    const counterRule = o.rule === AUTO_BLOCK_RULE ? o.blockedBy : o.rule;
    const limit = counters.find((c) => c.rule.id === counterRule)?.rule.limit ?? o.aggregateUsed;
    const resetTime = o.aggregateResetTime ?? o.atMs;
    aggregate = {
      ruleId: o.rule,
      allowed: false,
      limit,
      used: o.aggregateUsed,
      remaining: Math.max(0, limit - o.aggregateUsed),
      resetTime,
      retryAfterMs: Math.max(0, resetTime - o.atMs),
    };
  }
  return {
    allowed: o.allowed,
    atMs: o.atMs,
    rule: o.rule,
    reason: o.allowed || o.rule === null ? null : (reasonOf(o.rule, o.blockedBy) as DecideResult['reason']),
    shadow: o.shadow,
    number,
    aggregate,
    blockedUntil: o.blockedUntil,
    blockedBy: o.blockedBy,
  };
}

/**
 * A denial decided before the database (list block, destination, ip): `view` is that rule's,
 * or, for a block, its end (null: until unlisted).
 */
export function earlyDenial(reason: DenyReason, rule: string, view: View, source: Source): Verdict {
  return verdict({ allowed: false, reason, rule, shadow: [] }, view, source, view.limit, view.used, view.remaining, view.resetTime, view.retryAfterMs);
}

export function blockView(untilMs: number | null, nowMs: number): View {
  return { limit: 0, used: 0, remaining: 0, resetTime: untilMs, retryAfterMs: untilMs === null ? null : Math.max(0, untilMs - nowMs) };
}
