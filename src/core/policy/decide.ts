// Longer than 350 lines because it is the one model decide_v2.sql is held to: judging, blocks and
// their escalation share one Judgement, and split apart each part would re-derive the instant.
// One consume (or check) against every rule of the policy at once: the number's exact windows,
// its block_after state, and each aggregate counter that applies with its automatic block
// (docs/protocol.md *Policy*). A consume is allowed only if every enforcing rule allows it,
// and then it counts everywhere; a denial spends nothing anywhere (a denial may start an
// automatic block, which is not spending: it changes no count).
//
// This is what the daemon's in-memory fallback runs, and what the SQL function ratelimit_decide_v3
// (src/db/functions/decide_v3.sql) computes decision by decision;
// test/db/policy-decisions.test.ts holds the two to each other.

import { appendCall, decisionTime, evaluate, evaluateStates, makeLogPolicy, type Decision, type LogPolicy, type RuleState } from './log.js';
import { addCall, counterTime, evaluateAggregate, removeCall, type AggregateView } from './aggregate.js';
import { stateLookup } from './log-summary.js';
import { blocksRange } from './counters.js';
import {
  AUTO_BLOCK_RULE,
  counterKind,
  GROUP_DENY_REASON,
  type AggregateCounter,
  type AutoBlock,
  type BlockAfter,
  type BlocksPolicy,
  type Buckets,
  type LimitRule,
  type Policy,
  type RuleDenyReason,
} from './types.js';

export const BLOCK_AFTER_RULE = 'number:block_after';

export type DenyReason = Exclude<RuleDenyReason, 'ip_rate_limit_exceeded'>;

/** The number group, prepared once per policy. */
export interface NumberRules {
  /** Enforcing and shadow, in the policy's order. */
  readonly rules: readonly LimitRule[];
  /** Timestamps kept per number and how far back (see appendCall). */
  readonly log: LogPolicy;
  /** The enforcing rules, for evaluate(); undefined when every number rule is shadow (or none). */
  readonly enforcing: LogPolicy | undefined;
  /** What the number view reports: the enforcing rules, else the shadow ones, else nothing. */
  readonly view: LogPolicy | undefined;
  /** Each shadow rule alone, to tell whether it would deny. */
  readonly shadow: readonly LogPolicy[];
}

export function numberRules(rules: readonly LimitRule[]): NumberRules {
  const toLog = (rs: readonly LimitRule[]) => (rs.length > 0 ? makeLogPolicy(rs) : undefined);
  const all = toLog(rules);
  const enforcing = toLog(rules.filter((r) => !r.shadow));
  return {
    rules,
    // Without a number group the log is still kept so stats and status see calls: capacity 1
    // (the latest call) and a 1 ms horizon, which keeps exactly that latest call. The SQL
    // derives the same from an empty rule array (GREATEST(1, …)).
    log: all ?? { rules: [], capacity: 1, horizonMs: 1 },
    enforcing,
    view: enforcing ?? all,
    shadow: rules.filter((r) => r.shadow).map((r) => toLog([r])!),
  };
}

/** The part of the policy decided against stored state (lists, destinations and ip are not). */
export interface DecisionPolicy {
  readonly number: NumberRules;
  readonly blockAfter: BlockAfter | undefined;
  /** Automatic blocks escalate and decay: block_after's and the ranges' (undefined: no range blocks). */
  readonly blocks: BlocksPolicy | undefined;
}

export function decisionPolicy(policy: Pick<Policy, 'number' | 'blockAfter'> & Partial<Pick<Policy, 'blocks'>>): DecisionPolicy {
  return { number: numberRules(policy.number), blockAfter: policy.blockAfter, blocks: policy.blocks };
}

/**
 * The level and end of a block starting at `atMs` (docs/protocol.md *Policy*, `blocks`): one
 * step up from the previous block's level while that block ended less than `decayMs` ago, else
 * the first step; the last step repeats.
 */
export function nextBlock(previous: AutoBlock | null | undefined, atMs: number, blocks: BlocksPolicy): AutoBlock {
  const steps = blocks.escalateMs.length;
  const level = previous && previous.level > 0 && previous.untilMs > atMs - blocks.decayMs ? Math.min(previous.level + 1, steps) : 1;
  return { level, untilMs: atMs + blocks.escalateMs[level - 1]! };
}

export interface NumberState {
  /** Allowed calls, ascending (phone_rate_limits.calls). */
  readonly log: readonly number[];
  /** block_after: denied until then (ms), or null. */
  readonly blockedUntil: number | null;
  /** block_after: recent denial times, ascending, at most blockAfter.denials. */
  readonly denials: readonly number[];
  /**
   * With `blocks`: the escalation step (1-based) of the number's latest block, 0 or absent when
   * never blocked (phone_rate_limits.block_level). blockedUntil is kept after a block ends so
   * that decay can measure the quiet time since.
   */
  readonly blockLevel?: number;
}

export const EMPTY_NUMBER: NumberState = { log: [], blockedUntil: null, denials: [], blockLevel: 0 };

export interface DecideInput {
  /** From applicableCounters(): the order decides which aggregate is reported. */
  readonly counters: readonly AggregateCounter[];
  /** On the allow list: nothing denies, nothing is reported as shadow, everything counts. */
  readonly allowlisted: boolean;
  /**
   * Safe (policy.safe prefixes, or allow-listed): block_after never blocks it and automatic range
   * blocks never deny it. The caller also leaves out its conversion and sweep counters
   * (applicableCounters' `safe`).
   */
  readonly safe?: boolean;
}

export interface DecideState {
  readonly number: NumberState;
  /** One per input.counters, same order (their `block` is the counter's automatic block). */
  readonly buckets: readonly Buckets[];
}

export interface DecideResult {
  allowed: boolean;
  /** The decision instant: never before the number's latest call. */
  atMs: number;
  /** The denying rule's id, or null when allowed. */
  rule: string | null;
  reason: DenyReason | null;
  /** Shadow rules that would have denied, in evaluation order. */
  shadow: string[];
  /** The number's binding number rule (after this call when allowed); null without number rules. */
  number: Decision | null;
  /** The denying aggregate's view, when an aggregate denied. */
  aggregate: AggregateView | null;
  /** Set when the number is blocked (block_after), whether by this denial or before. */
  blockedUntil: number | null;
  /**
   * When the rule is `auto:block`: the id of the counter's rule whose range block denied (its
   * group gives the reason; `aggregate.resetTime` is the block's end). Else null.
   */
  blockedBy: string | null;
}

interface Judgement {
  at: number;
  blocked: boolean;
  numberDenial: Decision | undefined;
  /** The first counter (in evaluation order) that denies: by its limit, or by its range's automatic block (`auto`). */
  aggregateDenial: { view: AggregateView; rule: LimitRule; auto: boolean } | undefined;
  /** Indexes of enforcing range counters whose limit denied this consume: a denial blocks their ranges. */
  trips: number[];
  /** Indexes of `distinct` counters that already count this number (its previous call is in their window). */
  moves: number[];
  shadow: string[];
}

/** How judge() sees the number's calls: its decision instant, its latest call, and evaluate() at that instant. */
interface NumberAt {
  at: number;
  /** The number's latest allowed call before this request (what a `distinct` counter counted), or null. */
  last: number | null;
  evaluate(p: LogPolicy): Decision;
}

function numberAt(log: readonly number[], nowMs: number): NumberAt {
  const at = decisionTime(log, nowMs);
  return { at, last: log.length > 0 ? log[log.length - 1]! : null, evaluate: (p) => evaluate(log, at, p) };
}

function judge(n: NumberAt, blockedUntil: number | null, buckets: readonly Buckets[], input: DecideInput, policy: DecisionPolicy): Judgement {
  const at = n.at;
  const j: Judgement = { at, blocked: false, numberDenial: undefined, aggregateDenial: undefined, trips: [], moves: [], shadow: [] };
  if (input.allowlisted) return j;
  const safe = input.safe === true;
  if (!safe && blockedUntil !== null && blockedUntil > at) {
    j.blocked = true;
    return j;
  }
  if (policy.number.enforcing) {
    const d = n.evaluate(policy.number.enforcing);
    // evaluate() picks, among denying rules, the one that frees up last: that is the rule named.
    if (!d.allowed) j.numberDenial = d;
  }
  for (const single of policy.number.shadow) {
    if (!n.evaluate(single).allowed) j.shadow.push(single.rules[0]!.id);
  }
  input.counters.forEach((c, i) => {
    const b = buckets[i]!;
    const range = policy.blocks !== undefined && !safe && !c.rule.shadow && blocksRange(c);
    if (range && b.block && b.block.untilMs > at) {
      // Blocked ranges deny without counting against their limit (and without tripping again:
      // a block lasts exactly its step).
      if (!j.aggregateDenial) {
        const view = evaluateAggregate(b, at, c.rule);
        const resetTime = blockedRangeReset(b, b.block.untilMs, c.rule, n.last);
        const blocked = { ...view, allowed: false, resetTime, retryAfterMs: Math.max(0, resetTime - at) };
        j.aggregateDenial = { view: blocked, rule: c.rule, auto: true };
      }
      return;
    }
    if (counterKind(c.rule.group) === 'distinct' && n.last !== null && n.last > counterTime(b, at) - c.rule.windowMs) {
      // Already counted in this window: a call to it again moves it, never adds a number.
      j.moves.push(i);
      return;
    }
    const view = evaluateAggregate(b, at, c.rule);
    if (view.allowed) return;
    if (c.rule.shadow) {
      j.shadow.push(c.rule.id);
      return;
    }
    j.aggregateDenial ??= { view, rule: c.rule, auto: false };
    if (range) j.trips.push(i);
  });
  return j;
}

/**
 * When a consume denied by a range's automatic block can next succeed as far as that counter
 * goes: the block's end, or later when the counter that tripped the block would still deny then
 * (docs/protocol.md: `resetTime` is when the next call becomes possible). Nothing counts in a
 * blocked range, so the counter's own reset is already known now. A `distinct` counter never
 * denies a number it still counts at the block's end.
 */
function blockedRangeReset(b: Buckets, untilMs: number, rule: LimitRule, lastCallMs: number | null): number {
  if (counterKind(rule.group) === 'distinct' && lastCallMs !== null && lastCallMs > counterTime(b, untilMs) - rule.windowMs) return untilMs;
  const atEnd = evaluateAggregate(b, untilMs, rule);
  return atEnd.allowed ? untilMs : Math.max(untilMs, atEnd.resetTime);
}

function result(j: Judgement, blockedUntil: number | null, view: Decision | null, allowed: boolean): DecideResult {
  const number = view && allowed ? { ...view, allowed: true, retryAfterMs: 0 } : view;
  const base = {
    atMs: j.at,
    shadow: j.shadow,
    number,
    blockedUntil: blockedUntil !== null && blockedUntil > j.at ? blockedUntil : null,
    blockedBy: null,
  };
  if (allowed) return { ...base, allowed, rule: null, reason: null, aggregate: null };
  if (j.blocked) return { ...base, allowed, rule: BLOCK_AFTER_RULE, reason: 'number_blocked', aggregate: null };
  if (j.numberDenial) return { ...base, allowed, rule: j.numberDenial.ruleId, reason: GROUP_DENY_REASON.number, aggregate: null };
  const { view: agg, rule, auto } = j.aggregateDenial!;
  const reason = aggregateReason(rule.group);
  if (auto) return { ...base, allowed, rule: AUTO_BLOCK_RULE, reason, aggregate: { ...agg, ruleId: AUTO_BLOCK_RULE }, blockedBy: rule.id };
  return { ...base, allowed, rule: rule.id, reason, aggregate: agg };
}

/** The reason a denial by an aggregate counter of `group` gives (its auto:block too). */
export function aggregateReason(group: LimitRule['group']): DenyReason {
  return group === 'prefix' || group === 'country' || group === 'conversion' || group === 'sweep' ? GROUP_DENY_REASON[group] : GROUP_DENY_REASON.global;
}

function denies(j: Judgement): boolean {
  return j.blocked || j.numberDenial !== undefined || j.aggregateDenial !== undefined;
}

/** What a consume now would do, changing nothing (a `check`). */
export function decideCheck(state: DecideState, input: DecideInput, policy: DecisionPolicy, nowMs: number): DecideResult {
  return check(numberAt(state.number.log, nowMs), state.number.blockedUntil, state.buckets, input, policy);
}

/**
 * A number as the database describes it for a check without sending its log
 * (src/db/decisions.ts peekSnapshot): the check's instant (decisionTime) and each number rule's
 * state then, in policy.number.rules order.
 */
export interface NumberSnapshot {
  readonly atMs: number;
  readonly rules: readonly RuleState[];
  readonly blockedUntil: number | null;
  /** The number's latest call (its log's last entry), null when none: `distinct` counters need it. */
  readonly lastCallMs?: number | null;
}

/** decideCheck from a NumberSnapshot taken at decisionTime(log, nowMs) under `policy`: the same result. */
export function decideCheckFromSnapshot(n: NumberSnapshot, buckets: readonly Buckets[], input: DecideInput, policy: DecisionPolicy): DecideResult {
  const stateOf = stateLookup(policy.number.rules, n.rules);
  return check({ at: n.atMs, last: n.lastCallMs ?? null, evaluate: (p) => evaluateStates(stateOf, n.atMs, p) }, n.blockedUntil, buckets, input, policy);
}

function check(n: NumberAt, blockedUntil: number | null, buckets: readonly Buckets[], input: DecideInput, policy: DecisionPolicy): DecideResult {
  const j = judge(n, blockedUntil, buckets, input, policy);
  return result(j, blockedUntil, policy.number.view ? n.evaluate(policy.number.view) : null, !denies(j));
}

/** One consume: the decision, and the state after it. */
export function decideConsume(state: DecideState, input: DecideInput, policy: DecisionPolicy, nowMs: number): { result: DecideResult; state: DecideState } {
  const j = judge(numberAt(state.number.log, nowMs), state.number.blockedUntil, state.buckets, input, policy);
  const viewOf = (log: readonly number[]) => (policy.number.view ? evaluate(log, j.at, policy.number.view) : null);
  if (!denies(j)) {
    const log = appendCall(state.number.log, j.at, policy.number.log);
    const prev = state.number.log.length > 0 ? state.number.log[state.number.log.length - 1]! : null;
    const buckets = input.counters.map((c, i) => {
      const b = state.buckets[i]!;
      // A `distinct` counter moves an already counted number to its newest call.
      const from = prev !== null && j.moves.includes(i) ? removeCall(b, prev, j.at, c.rule) : b;
      return withBlock(addCall(from, j.at, c.rule), b.block);
    });
    const after: DecideState = { number: { ...state.number, log }, buckets };
    return { result: result(j, state.number.blockedUntil, viewOf(log), true), state: after };
  }
  // block_after counts the number's own denials only: an exhausted prefix, country or global
  // budget must not block the innocent numbers it denies (nor does retrying while blocked).
  const number = j.numberDenial === undefined || input.safe === true ? state.number : recordDenial(state.number, j.at, policy);
  const r = result(j, number.blockedUntil, viewOf(state.number.log), false);
  let buckets = state.buckets;
  if (j.trips.length > 0 && policy.blocks) {
    const blocks = policy.blocks;
    buckets = state.buckets.map((b, i) => (j.trips.includes(i) ? { ...b, block: nextBlock(b.block, j.at, blocks) } : b));
  }
  return { result: r, state: { number, buckets } };
}

/** addCall()'s buckets carry no block: the counter keeps its own. */
function withBlock(b: Buckets, block: AutoBlock | null | undefined): Buckets {
  return block ? { ...b, block } : b;
}

/**
 * A block_after block starting at `atMs` (docs/protocol.md *Policy*): without `blocks` it lasts
 * `forMs`; with `blocks` it lasts its escalation step (nextBlock), cut to `forMs` when given. The
 * level is the step's even when cut, so the next block still escalates.
 */
export function blockAfterBlock(previous: AutoBlock | null, atMs: number, blockAfter: BlockAfter, blocks: BlocksPolicy | undefined): AutoBlock {
  // A file cannot leave out `for` without `blocks` (parsePolicyFile); a hand-built policy that
  // leaves it out anyway blocks for no time, as the SQL does (p_block_for 0).
  const capMs = blockAfter.forMs !== undefined && blockAfter.forMs > 0 ? blockAfter.forMs : undefined;
  if (!blocks) return { level: previous?.level ?? 0, untilMs: atMs + (capMs ?? 0) };
  const next = nextBlock(previous, atMs, blocks);
  return capMs === undefined ? next : { level: next.level, untilMs: Math.min(next.untilMs, atMs + capMs) };
}

/**
 * block_after: remembers a denial by a number rule; the `denials`-th within `withinMs` blocks the
 * number (blockAfterBlock) and starts a fresh count. Denials while blocked are not remembered, so
 * a block lasts exactly its length however often the number retries.
 */
function recordDenial(state: NumberState, at: number, policy: DecisionPolicy): NumberState {
  const blockAfter = policy.blockAfter;
  if (!blockAfter) return state;
  const denials = state.denials.filter((t) => t > at - blockAfter.withinMs);
  denials.push(at);
  if (denials.length >= blockAfter.denials) {
    if (!policy.blocks) return { ...state, denials: [], blockedUntil: blockAfterBlock(null, at, blockAfter, undefined).untilMs };
    const previous = state.blockedUntil !== null ? { untilMs: state.blockedUntil, level: state.blockLevel ?? 0 } : null;
    const next = blockAfterBlock(previous, at, blockAfter, policy.blocks);
    return { ...state, denials: [], blockedUntil: next.untilMs, blockLevel: next.level };
  }
  return { ...state, denials: denials.slice(-blockAfter.denials) };
}
