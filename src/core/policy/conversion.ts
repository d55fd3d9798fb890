// What an outcome does to the conversion rules (docs/protocol.md *Policy*, `conversion`), pure so
// that the daemon (in memory, during an outage) and the database (src/db/outcomes.ts) take the
// same calls back from the same counters.
//
// Every allowed consume counts against the `unconverted` counters it falls under; a converted
// outcome reported within pending_after of its decision takes that call back out (removeCall in
// aggregate.ts). The outcome does not name the number: its decision id carries the number's hash,
// its region and its 1,000-number range (src/core/decision-id.ts), and those are enough to name
// every conversion counter, whose keys are ranges of at least 1,000 numbers and regions.

import { DECISION_ID_HORIZON_MS, RANGE_DIGITS } from '../decision-id.js';
import { MIN_PREFIX_DIGITS, UNKNOWN_REGION, type AggregateCounter, type ConversionBaseline, type ConversionPolicy, type Policy } from './types.js';

/** Converted = `verified`, or `answered` for at least answered_at_least. */
export function isConverted(outcome: string, durationMs: number | null | undefined, conversion: Pick<ConversionPolicy, 'answeredAtLeastMs'>): boolean {
  return outcome === 'verified' || (outcome === 'answered' && durationMs != null && durationMs >= conversion.answeredAtLeastMs);
}

/**
 * A conversion.prefix counter's key from the 1,000-number range a decision id carries (the E.164
 * number without its last RANGE_DIGITS digits): the same key prefixKey(e164, digits) in
 * counters.ts gives, since a wider range only drops more digits off the end.
 */
export function prefixKeyOfRange(range: string, digits: number): string {
  const drop = Math.max(digits, MIN_PREFIX_DIGITS) - RANGE_DIGITS;
  return range.slice(0, Math.max(2, range.length - drop));
}

/** The region's baseline limit: max(floor, ceil(factor × the most converted calls in one window over history)). */
export function baselineLimit(baseline: Pick<ConversionBaseline, 'factor' | 'floor'>, mostConverted: number): number {
  // A factor such as 0.2 is not exact in binary: 0.2 × 100 must be 20, not 21.
  return Math.max(baseline.floor, Math.ceil(Number((baseline.factor * mostConverted).toPrecision(12))));
}

/** The facts of one reported outcome that decide what it takes back. */
export interface ReportedOutcome {
  readonly region: string | undefined;
  /** The 1,000-number range ('' when the id could not carry one). */
  readonly range: string;
  readonly decidedAtMs: number;
  readonly outcome: string;
  readonly durationMs: number | null | undefined;
  /** When the service reported it (kept in the spool through an outage). */
  readonly reportedAtMs: number;
  /**
   * A safe number (policy.safe, or allow-listed; isSafe in counters.ts): its calls get no
   * conversion counters, so it has nothing to take back.
   */
  readonly safe?: boolean;
}

/**
 * The `unconverted` counters this outcome takes its call back from: none unless it converted, was
 * reported within pending_after of the decision and is not a safe number's; else every conversion.prefix rule (keyed by
 * its range), every conversion.country rule and the baseline (keyed by region), in the order the
 * design evaluates them. Each is taken back once, with removeCall at the decision instant.
 */
export function takeBackCounters(policy: Pick<Policy, 'conversion'>, o: ReportedOutcome): AggregateCounter[] {
  const conversion = policy.conversion;
  if (!conversion || o.safe === true || !isConverted(o.outcome, o.durationMs, conversion)) return [];
  if (o.reportedAtMs - o.decidedAtMs > conversion.pendingAfterMs) return [];
  const out: AggregateCounter[] = [];
  if (conversion.prefix && o.range.length > 1) {
    const key = prefixKeyOfRange(o.range, conversion.prefix.digits);
    for (const rule of conversion.prefix.rules) out.push({ rule, key });
  }
  if (conversion.country) {
    const key = o.region ?? UNKNOWN_REGION;
    for (const rule of conversion.country.rules) out.push({ rule, key });
    if (conversion.country.baseline) out.push({ rule: conversion.country.baseline.rule, key });
  }
  return out;
}

/**
 * How long outcomes are kept (src/db/retention.ts): as long as a decision id can still be
 * reported (a repeat must be known as one), and as long as the baseline looks back, plus one of
 * its windows so the oldest bin of the history is whole.
 */
export function outcomeRetentionMs(policy: Pick<Policy, 'conversion'>): number {
  const baseline = policy.conversion?.country?.baseline;
  return Math.max(DECISION_ID_HORIZON_MS, baseline ? baseline.historyMs + baseline.rule.windowMs : 0);
}
