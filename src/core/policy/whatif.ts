// `ratelimit policy check FILE --against 1h`: replays the calls the database kept for the window
// through a candidate policy, in time order, and says how many each rule would have denied, by
// country. Pure: src/db/traffic.ts reads the calls. A call one rule denies spends nothing on the
// others (as in the daemon), and the first rule in decision order takes the denial.
//
// What the rows keep decides what can be replayed: allowed calls with their times (a number's
// row keeps them for the active policy's longest number window), its country, and its mask (so
// its 1,000-number range, when the mask is in the range form). Not kept, so not replayed: the
// calls the active policy denied (counted, not timed), number types, client IPs, outcomes.
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

function rangeKey(range: string, digits: number): string | null {
  const shown = range.replace(/•+$/, '');
  const hidden = range.length - shown.length;
  // The mask hides `hidden` digits; a prefix rule of `digits` >= hidden is the mask's digits less the difference.
  if (digits < hidden) return null;
  return shown.slice(0, shown.length - (digits - hidden)) || null;
}

export function replayPolicy(policy: Policy, calls: readonly ReplayCall[]): WhatIf {
  const sorted = [...calls].sort((a, b) => a.t - b.t);
  const windows = new Map<string, Window>();
  const win = (key: string) => {
    let w = windows.get(key);
    if (!w) windows.set(key, (w = new Window()));
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
  let unranged = 0;
  const callsByCountry: Record<string, number> = {};
  let denied = 0;
  for (const c of sorted) {
    const country = c.country || UNKNOWN_REGION;
    callsByCountry[country] = (callsByCountry[country] ?? 0) + 1;
    const checks: Array<{ rule: LimitRule; key: string }> = [];
    for (const r of policy.number) checks.push({ rule: r, key: `n:${r.id}:${c.number}` });
    if (policy.prefix) {
      const key = c.range === null ? null : rangeKey(c.range, policy.prefix.digits);
      if (key === null) unranged++;
      else for (const r of policy.prefix.rules) checks.push({ rule: r, key: `p:${r.id}:${key}` });
    }
    if (policy.country) for (const r of policy.country.overrides.get(country) ?? policy.country.rules) checks.push({ rule: r, key: `c:${r.id}:${country}` });
    for (const r of policy.global) checks.push({ rule: r, key: `g:${r.id}` });

    const dest = destinationDenial(policy, country, undefined);
    let deniedBy: string | null = dest ? dest.rule : null;
    for (const { rule, key } of checks) {
      if (win(key).count(c.t, rule.windowMs) < rule.limit) continue;
      if (rule.shadow) deny(rule.id, true, country);
      else deniedBy ??= rule.id;
    }
    if (deniedBy !== null) {
      deny(deniedBy, false, country);
      denied++;
      continue;
    }
    for (const { key } of checks) win(key).add(c.t);
  }
  if (unranged > 0)
    notReconstructed.add(`prefix rules: ${unranged} calls to numbers whose stored mask names no range (older rows) were not counted against them`);
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
