// `ratelimit policy check FILE --against 1h`: replays the calls the database kept for the window
// through a candidate policy, in time order, and says how many each rule would have denied, by
// country. Pure: src/db/traffic.ts reads the calls. A call one rule denies spends nothing on the
// others (as in the daemon), and the first rule in decision order takes the denial.
//
// What the rows keep decides what can be replayed: allowed calls with their times (a number's
// row keeps them for the active policy's longest number window), its country, and its mask (so
// its 1,000-number range, when the mask is in the range form). Not kept, so not replayed: the
// calls the active policy denied (counted, not timed), number types, client IPs, outcomes (so
// conversion rules), allow-list entries. Sweep rules are replayed: a range's distinct numbers are
// the calls' number ids under its key.
import { allRules } from './rules.js';
import { destinationDenial } from './subject.js';
import type { LimitRule, Policy } from './types.js';
import { UNKNOWN_REGION } from './types.js';

export interface ReplayCall {
  /** Any id that is the same for one number's calls (its hash). */
  number: string;
  country: string;
  /** The range mask (`+14155552•••`), or null for an older mask. */
  range: string | null;
  t: number;
}

export interface RuleOutcome {
  rule: string;
  shadow: boolean;
  denied: number;
  byCountry: Record<string, number>;
}

export interface WhatIf {
  calls: number;
  numbers: number;
  denied: number;
  /** Calls each country made, for shares. */
  callsByCountry: Record<string, number>;
  /** Largest first. */
  rules: RuleOutcome[];
  /** What the replay could not do for this policy. */
  notReconstructed: string[];
}

class Window {
  private readonly times: number[] = [];
  private start = 0;
  count(t: number, windowMs: number): number {
    while (this.start < this.times.length && this.times[this.start]! <= t - windowMs) this.start++;
    return this.times.length - this.start;
  }
  add(t: number): void {
    this.times.push(t);
  }
}

/**
 * Distinct numbers with a call in the window (sweep): a number counts once, at its newest call,
 * as the daemon's `distinct` counters do (docs/protocol.md *Policy*).
 */
class DistinctWindow {
  private readonly calls: { t: number; number: string }[] = [];
  private start = 0;
  private readonly newest = new Map<string, number>();
  count(t: number, windowMs: number): number {
    while (this.start < this.calls.length && this.calls[this.start]!.t <= t - windowMs) {
      const old = this.calls[this.start++]!;
      // Only a number's newest call leaves with it; an older one was moved on already.
      if (this.newest.get(old.number) === old.t) this.newest.delete(old.number);
    }
    return this.newest.size;
  }
  /** Inside the window (after count()): never denied, its newest call just moves. */
  has(number: string): boolean {
    return this.newest.has(number);
  }
  add(t: number, number: string): void {
    this.calls.push({ t, number });
    this.newest.set(number, t);
  }
}

function rangeKey(range: string, digits: number): string | null {
  const shown = range.replace(/•+$/, '');
  const hidden = range.length - shown.length;
  // The mask hides `hidden` digits; a prefix rule of `digits` >= hidden is the mask's digits less the difference.
  if (digits < hidden) return null;
  return shown.slice(0, shown.length - (digits - hidden)) || null;
}

/**
 * Whether a call whose stored range is `range` (`+14155552•••`) is under a safe prefix: 'safe'
 * when a prefix covers the whole range, 'unknown' when one is longer than the range and could
 * cover the number or not.
 */
function safeMatch(prefixes: readonly string[], range: string): 'safe' | 'not' | 'unknown' {
  const shown = range.replace(/•+$/, '');
  let result: 'safe' | 'not' | 'unknown' = 'not';
  for (const p of prefixes) {
    if (shown.startsWith(p)) return 'safe';
    if (p.startsWith(shown)) result = 'unknown';
  }
  return result;
}

export function replayPolicy(policy: Policy, calls: readonly ReplayCall[]): WhatIf {
  const sorted = [...calls].sort((a, b) => a.t - b.t);
  const windows = new Map<string, Window>();
  const win = (key: string) => {
    let w = windows.get(key);
    if (!w) windows.set(key, (w = new Window()));
    return w;
  };
  const distinctWindows = new Map<string, DistinctWindow>();
  const distinct = (key: string) => {
    let w = distinctWindows.get(key);
    if (!w) distinctWindows.set(key, (w = new DistinctWindow()));
    return w;
  };
  const outcomes = new Map<string, RuleOutcome>();
  const deny = (rule: string, shadow: boolean, country: string) => {
    let o = outcomes.get(rule);
    if (!o) outcomes.set(rule, (o = { rule, shadow, denied: 0, byCountry: {} }));
    o.denied++;
    o.byCountry[country] = (o.byCountry[country] ?? 0) + 1;
  };
  const notReconstructed = new Set<string>();
  if (policy.destinations.blockTypes.length > 0)
    notReconstructed.add(`destination types (${policy.destinations.blockTypes.join(', ')}): number types are not stored`);
  if (policy.ip.length > 0) notReconstructed.add('ip rules: client addresses are not stored');
  if (policy.blockAfter) notReconstructed.add('number.block_after: only its first denials are replayed, not the blocks they would start');
  const conversionIds = allRules(policy)
    .filter((r) => r.group === 'conversion')
    .map((r) => r.id);
  if (conversionIds.length > 0) notReconstructed.add(`conversion rules (${conversionIds.join(', ')}): outcomes are not replayed`);
  if (policy.blocks && policy.sweep) notReconstructed.add('blocks: only the sweep denials that would start an automatic block are replayed, not the block');
  if (policy.sweep) notReconstructed.add('allow-listed numbers are counted by sweep rules as any other');
  let unranged = 0;
  let unmatchedSafe = 0;
  const callsByCountry: Record<string, number> = {};
  let denied = 0;
  for (const c of sorted) {
    const country = c.country || UNKNOWN_REGION;
    callsByCountry[country] = (callsByCountry[country] ?? 0) + 1;
    const checks: Array<{ rule: LimitRule; key: string }> = [];
    for (const r of policy.number) checks.push({ rule: r, key: `n:${r.id}:${c.number}` });
    let rangeless = false;
    if (policy.prefix) {
      const key = c.range === null ? null : rangeKey(c.range, policy.prefix.digits);
      if (key === null) rangeless = true;
      else for (const r of policy.prefix.rules) checks.push({ rule: r, key: `p:${r.id}:${key}` });
    }
    if (policy.country) for (const r of policy.country.overrides.get(country) ?? policy.country.rules) checks.push({ rule: r, key: `c:${r.id}:${country}` });
    for (const r of policy.global) checks.push({ rule: r, key: `g:${r.id}` });
    const sweeps: Array<{ rule: LimitRule; key: string }> = [];
    if (policy.sweep) {
      const key = c.range === null ? null : rangeKey(c.range, policy.sweep.digits);
      const safe = policy.safe.prefixes.length === 0 ? 'not' : c.range === null ? 'unknown' : safeMatch(policy.safe.prefixes, c.range);
      if (safe === 'unknown') unmatchedSafe++;
      if (key === null) rangeless = true;
      else if (safe !== 'safe') for (const r of policy.sweep.rules) sweeps.push({ rule: r, key: `s:${r.id}:${key}` });
    }
    if (rangeless) unranged++;

    const dest = destinationDenial(policy, country, undefined);
    let deniedBy: string | null = dest ? dest.rule : null;
    const over = (rule: LimitRule) => {
      if (rule.shadow) deny(rule.id, true, country);
      else deniedBy ??= rule.id;
    };
    for (const { rule, key } of checks) if (win(key).count(c.t, rule.windowMs) >= rule.limit) over(rule);
    for (const { rule, key } of sweeps) {
      const w = distinct(key);
      if (w.count(c.t, rule.windowMs) >= rule.limit && !w.has(c.number)) over(rule);
    }
    if (deniedBy !== null) {
      deny(deniedBy, false, country);
      denied++;
      continue;
    }
    for (const { key } of checks) win(key).add(c.t);
    for (const { key } of sweeps) distinct(key).add(c.t, c.number);
  }
  if (unranged > 0)
    notReconstructed.add(`prefix and sweep rules: ${unranged} calls to numbers whose stored mask names no range (older rows) were not counted against them`);
  if (unmatchedSafe > 0)
    notReconstructed.add(
      `safe.prefixes: ${unmatchedSafe} calls could not be matched (a stored range shows fewer digits than the prefix) and were counted by sweep rules`,
    );
  return {
    calls: sorted.length,
    numbers: new Set(sorted.map((c) => c.number)).size,
    denied,
    callsByCountry,
    rules: [...outcomes.values()].sort((a, b) => Number(a.shadow) - Number(b.shadow) || b.denied - a.denied || a.rule.localeCompare(b.rule)),
    notReconstructed: [...notReconstructed],
  };
}

/**
 * The share of `numbersByCountry` (a day's active numbers per 10-minute epoch, by country) that
 * the policy's country allow/deny list would deny: what `policy apply` warns about.
 */
export function countryListShare(policy: Policy, numbersByCountry: ReadonlyMap<string, number>): { share: number; countries: Array<[string, number]> } | null {
  if (!policy.destinations.countries) return null;
  let total = 0;
  let denied = 0;
  const hit: Array<[string, number]> = [];
  for (const [country, n] of numbersByCountry) {
    total += n;
    if (destinationDenial(policy, country, undefined)) {
      denied += n;
      hit.push([country, n]);
    }
  }
  if (total === 0) return null;
  return { share: denied / total, countries: hit.sort((a, b) => b[1] - a[1]) };
}
