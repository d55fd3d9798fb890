// What the database sends back about a number instead of its whole call log (issue #12: at
// limit 1000 a 256-decision batch returned 2 MB of logs). Two parts, both computed by
// ratelimit_decide_v3 (src/db/functions/decide_v3.sql) exactly as here:
//
// - per number rule, its state at the decision instant (RuleState: used, resetTime), enough
//   for evaluateStates() to give the reply's number view and the deny cache's reset time
//   exactly, whatever the limit;
// - the log itself when it holds at most EXACT_LOG_ENTRIES calls, else a summary of it for the
//   in-memory fallback: the log cut into at most EXACT_LOG_ENTRIES runs of equal length (the
//   last may be shorter), each run carried as its newest call's time and its length.
//
// The fallback decides from expandLog(summary): every call of a run is taken to have happened
// at the run's newest time, i.e. as late as it can have happened. That log has as many calls as
// the real one, in order, each no earlier than the real call in its place, and the same newest
// call. So at any later instant, in any window, it counts at least as many calls as the real
// log, and its max-th newest call is no earlier than the real one's: whenever the real log
// denies, it denies too, and it frees up no sooner. appendCall keeps that relation (both drop
// the same prefix of expired calls or fewer, both keep the newest `capacity`), so a fallback
// deciding from it never allows more calls in any window than one deciding from the real log;
// it may deny early, by less than one run (1/16 of the log). test/core/log-summary.test.ts
// checks this against the real log.

import { ruleState, type LogRule, type RuleState } from './log.js';

export const EXACT_LOG_ENTRIES = 16;

export interface LogSummary {
  /** The log, or each run's newest call time; ascending. */
  readonly calls: readonly number[];
  /** null: `calls` is the log itself. Else each run's length (same order as `calls`). */
  readonly counts: readonly number[] | null;
}

/** The run lengths of a log of `length` calls: null when it is kept whole (see the opening comment). */
export function summaryRunLengths(length: number): number[] | null {
  if (length <= EXACT_LOG_ENTRIES) return null;
  const run = Math.ceil(length / EXACT_LOG_ENTRIES);
  const counts: number[] = [];
  for (let start = 0; start < length; start += run) counts.push(Math.min(run, length - start));
  return counts;
}

/** The summary of an ascending log (see the opening comment). */
export function summarizeLog(log: readonly number[]): LogSummary {
  const counts = summaryRunLengths(log.length);
  if (counts === null) return { calls: [...log], counts: null };
  const calls: number[] = [];
  let end = 0;
  for (const n of counts) calls.push(log[(end += n) - 1]!);
  return { calls, counts };
}

/** A log the fallback may decide from: the log itself, or each run's calls at its newest time. */
export function expandLog(s: LogSummary): number[] {
  if (s.counts === null) return [...s.calls];
  const log: number[] = [];
  s.calls.forEach((t, i) => {
    for (let k = 0; k < s.counts![i]!; k++) log.push(t);
  });
  return log;
}

/**
 * ruleState(expandLog(s), nowMs, rule) without expanding: the deny cache reads a number's state
 * at every cached denial, and at a limit of 1,000 the expanded log was 1,000 numbers allocated
 * and scanned twice per denial. O(runs) here, at most EXACT_LOG_ENTRIES.
 */
export function summaryRuleState(s: LogSummary, nowMs: number, rule: LogRule): RuleState {
  const { calls, counts } = s;
  const since = nowMs - rule.windowMs;
  let used = 0;
  let oldest = 0;
  // Newest run first, stopping at the first run out of the window, as ruleState scans the log.
  for (let i = calls.length - 1; i >= 0; i--) {
    const t = calls[i]!;
    if (t <= since) break;
    const n = counts === null ? 1 : counts[i]!;
    // expandLog adds nothing for a run of 0 (or fewer) calls.
    if (n <= 0) continue;
    used += n;
    oldest = t;
  }
  if (used < rule.limit) return { used, resetTime: used > 0 ? oldest + rule.windowMs : nowMs };
  // The limit-th newest call, as ruleState's log[length - limit].
  let seen = 0;
  for (let i = calls.length - 1; i >= 0; i--) {
    const n = counts === null ? 1 : counts[i]!;
    if (n <= 0) continue;
    seen += n;
    if (seen >= rule.limit) return { used, resetTime: calls[i]! + rule.windowMs };
  }
  return { used, resetTime: nowMs }; // unreachable: used >= limit means the walk reached limit
}

/** Each number rule's state at `atMs`, in `rules` order (what ratelimit_decide_v3 returns per request). */
export function ruleStates(log: readonly number[], atMs: number, rules: readonly LogRule[]): RuleState[] {
  return rules.map((r) => ruleState(log, atMs, r));
}

/**
 * Reads states given in `rules` order by rule, for evaluateStates() over any subset of those
 * rules (the enforcing ones, the view's, one shadow rule).
 */
export function stateLookup(rules: readonly { readonly id: string }[], states: readonly RuleState[]): (rule: { readonly id: string }) => RuleState {
  const index = ruleIndex(rules);
  return (rule) => {
    const i = index.get(rule.id);
    const s = i === undefined ? undefined : states[i];
    if (!s) throw new Error(`no state for number rule ${rule.id}: the states were computed under another policy`);
    return s;
  };
}

// Each decision's reply reads its states by rule id: the index is built once per policy's rule
// list, not once per decision.
const ruleIndexes = new WeakMap<readonly { readonly id: string }[], ReadonlyMap<string, number>>();

function ruleIndex(rules: readonly { readonly id: string }[]): ReadonlyMap<string, number> {
  let index = ruleIndexes.get(rules);
  if (!index) {
    // An id given twice reads the later rule's state, as a Map built from the pairs did.
    index = new Map(rules.map((r, i) => [r.id, i]));
    ruleIndexes.set(rules, index);
  }
  return index;
}
