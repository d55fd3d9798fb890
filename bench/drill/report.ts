// What the drill measured, per policy and per attack, and the targets (issue #19) marked
// met or missed. Pure: from the traffic and the decisions.

import { rangeLabel } from '../../src/core/decision-id.js';
import { costOf, CURRENCY } from './prices.js';
import { ATTACK_PLAN, ATTACKS, type Attack, type DrillTraffic, type SimCall } from './traffic.js';
import type { CallResult } from './harness.js';

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;

export interface AttackFigures {
  attack: Attack;
  attempts: number;
  allowed: number;
  /** 1,000-number ranges the attack called, and the most calls allowed into one of them. */
  ranges: number;
  maxPerRange: number;
  money: number;
  /** From the attack's first call to the decision of its last allowed one; 0 when nothing was allowed. */
  containmentMs: number;
  /** From the attack's first call to its last one. */
  spanMs: number;
  /** The most calls allowed within any one hour (sliding). */
  maxPerHour: number;
  /** Denials by rule id, most first. */
  deniedBy: Array<[string, number]>;
}

export interface LegitFigures {
  calls: number;
  denied: number;
  deniedPercent: number;
  deniedBy: Array<[string, number]>;
  /** Denials by the number's country and rule, most first (where the collateral falls). */
  deniedWhere: Array<[string, number]>;
  /** Denied by the destination rules (a country allow-list denies every user elsewhere by design). */
  deniedByDestination: number;
  convertedShare: number;
}

export interface PolicyFigures {
  policy: string;
  attacks: AttackFigures[];
  legit: LegitFigures;
  statements: number;
  wallMs: number;
}

function tally(rules: Array<string | null>): Array<[string, number]> {
  const m = new Map<string, number>();
  for (const r of rules) m.set(r ?? '?', (m.get(r ?? '?') ?? 0) + 1);
  return [...m].sort((a, b) => b[1] - a[1]);
}

function maxInWindow(times: readonly number[], windowMs: number): number {
  let best = 0;
  for (let lo = 0, hi = 0; hi < times.length; hi++) {
    while (times[hi]! - times[lo]! >= windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

export function figures(policy: string, traffic: DrillTraffic, results: readonly CallResult[], run: { statements: number; wallMs: number }): PolicyFigures {
  const bySource = (src: SimCall['source']) => traffic.calls.filter((c) => c.source === src);
  const attacks = ATTACKS.map((attack): AttackFigures => {
    const calls = bySource(attack);
    const allowed = calls.filter((c) => results[c.seq]!.allowed);
    const perRange = new Map<string, number>();
    for (const c of allowed) perRange.set(rangeLabel(c.phone), (perRange.get(rangeLabel(c.phone)) ?? 0) + 1);
    const first = calls[0]?.atMs ?? 0;
    return {
      attack,
      attempts: calls.length,
      allowed: allowed.length,
      ranges: new Set(calls.map((c) => rangeLabel(c.phone))).size,
      maxPerRange: Math.max(0, ...perRange.values()),
      money: allowed.reduce((s, c) => s + costOf(c.country, c.channel, c.answeredMs, c.premium), 0),
      containmentMs: allowed.length > 0 ? results[allowed[allowed.length - 1]!.seq]!.decidedAtMs - first : 0,
      spanMs: calls.length > 0 ? calls[calls.length - 1]!.atMs - first : 0,
      // At the decision instants: what the rules saw (a call is decided up to one tick after it arrives).
      maxPerHour: maxInWindow(
        allowed.map((c) => results[c.seq]!.decidedAtMs),
        HOUR_MS,
      ),
      deniedBy: tally(calls.filter((c) => !results[c.seq]!.allowed).map((c) => results[c.seq]!.rule)),
    };
  });
  const legitCalls = bySource('legit');
  const denied = legitCalls.filter((c) => !results[c.seq]!.allowed);
  const deniedBy = tally(denied.map((c) => results[c.seq]!.rule));
  return {
    policy,
    attacks,
    legit: {
      calls: legitCalls.length,
      denied: denied.length,
      deniedPercent: (100 * denied.length) / Math.max(1, legitCalls.length),
      deniedBy,
      deniedWhere: tally(denied.map((c) => `${c.country} ${results[c.seq]!.rule ?? '?'}`)),
      deniedByDestination: denied.filter((c) => results[c.seq]!.rule?.startsWith('destination')).length,
      convertedShare: legitCalls.filter((c) => c.converted).length / Math.max(1, legitCalls.length),
    },
    statements: run.statements,
    wallMs: run.wallMs,
  };
}

export interface Target {
  what: string;
  met: boolean;
  value: string;
}

const money = (x: number) => `$${x.toFixed(2)}`;
const minutes = (ms: number) => `${(ms / MINUTE_MS).toFixed(1)} min`;

/** The targets: the attacks under the default policy, legitimate denials under every policy. */
export function targets(all: readonly PolicyFigures[]): Target[] {
  const out: Target[] = [];
  const def = all.find((p) => p.policy === 'default');
  if (def) {
    const a = Object.fromEntries(def.attacks.map((x) => [x.attack, x])) as Record<Attack, AttackFigures>;
    out.push({
      what: 'default policy, sweep: <= 50 allowed per 1,000-number range and <= $5 in total',
      met: a.sweep.maxPerRange <= 50 && a.sweep.money <= 5,
      value: `${a.sweep.maxPerRange} per range at most (${a.sweep.allowed} in ${a.sweep.ranges} ranges), ${money(a.sweep.money)}`,
    });
    out.push({ what: 'default policy, premium-rate: 0 calls', met: a.premium.allowed === 0, value: `${a.premium.allowed} calls, ${money(a.premium.money)}` });
    out.push({
      what: 'default policy, hammered victim: <= 2 calls per hour',
      met: a.victim.maxPerHour <= 2,
      value: `${a.victim.maxPerHour} in the worst hour`,
    });
    out.push({
      what: 'default policy, slow sweep: contained within 10 min of its start',
      met: a.slow.containmentMs <= 10 * MINUTE_MS,
      value: a.slow.allowed === 0 ? 'nothing allowed' : `last allowed call ${minutes(a.slow.containmentMs)} after its start (${a.slow.allowed} allowed)`,
    });
  }
  for (const p of all) {
    out.push({
      what: `${p.policy} policy: legitimate calls denied <= 0.5%`,
      met: p.legit.deniedPercent <= 0.5,
      value: `${p.legit.deniedPercent.toFixed(2)}% (${p.legit.denied} of ${p.legit.calls})`,
    });
  }
  return out;
}

const top = (rules: Array<[string, number]>, n = 3) =>
  rules
    .slice(0, n)
    .map(([r, k]) => `${r} ${k}`)
    .join(', ') || '–';

export function renderTables(all: readonly PolicyFigures[]): string {
  const lines = [
    `| policy | attack | calls | allowed | ranges | most allowed in a range | cost (${CURRENCY}) | first call → last allowed | most allowed in 1 h | denied by (top 3) |`,
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const p of all) {
    for (const a of p.attacks) {
      const contained = a.allowed === 0 ? 'none allowed' : `${minutes(a.containmentMs)} of ${minutes(a.spanMs)}`;
      lines.push(
        `| ${p.policy} | ${a.attack} | ${a.attempts} | ${a.allowed} | ${a.ranges} | ${a.maxPerRange} | ${money(a.money)} | ${contained} | ${a.maxPerHour} | ${top(a.deniedBy)} |`,
      );
    }
  }
  lines.push(
    '',
    '| policy | legitimate calls | denied | denied % | of which by destination rules | denied by (top 3) | where (country, rule; top 3) | converted share |',
    '|---|---:|---:|---:|---:|---|---|---:|',
  );
  for (const p of all) {
    const l = p.legit;
    lines.push(
      `| ${p.policy} | ${l.calls} | ${l.denied} | ${l.deniedPercent.toFixed(2)}% | ${l.deniedByDestination} | ${top(l.deniedBy)} | ${top(l.deniedWhere)} | ${(100 * l.convertedShare).toFixed(1)}% |`,
    );
  }
  return lines.join('\n');
}

export function renderTargets(ts: readonly Target[]): string {
  return ts.map((t) => `- ${t.met ? 'MET' : 'MISSED'} ${t.what}: ${t.value}`).join('\n');
}

export function renderAttacks(): string {
  return ATTACKS.map((a) => `- **${a}** (from ${ATTACK_PLAN[a].startMs / HOUR_MS} h): ${ATTACK_PLAN[a].what}`).join('\n');
}
