// `ratelimit status <phone>`: every rule of the EFFECTIVE policy (the database's active one, else
// the RATE_LIMIT_* default) that applies to the number, read without changing anything, and
// the answer a `check` would get now, decided in the daemon's order: the number's list entry
// (allow exempts it from everything), then destination controls, then the stored rules
// (block_after, number windows, prefix, country, global) via decideCheck, the same pure model
// the daemon's fallback and the SQL implement. Printed by status-print.ts; the command is
// src/cli/commands/status.ts.
import type { Pool } from '../db/pool.js';
import { lookupPhone } from '../db/phones.js';
import { readEffectivePolicy } from '../db/policies.js';
import { readListEntries } from '../db/lists.js';
import { peekState } from '../db/decisions.js';
import { foldNumber } from '../db/keys.js';
import { readConversionState, recentOutcomes, type StoredOutcome } from '../db/outcomes.js';
import { hashPhone, maskPhone, normalizePhoneWithType } from '../core/phone.js';
import { decisionTime, evaluate, makeLogPolicy } from '../core/policy/log.js';
import { EMPTY_BUCKETS, evaluateAggregate } from '../core/policy/aggregate.js';
import { counterMapKey, isSafe } from '../core/policy/counters.js';
import { decideCheck, decisionPolicy, EMPTY_NUMBER } from '../core/policy/decide.js';
import { countersFor, destinationDenial } from '../core/policy/subject.js';
import { UNKNOWN_REGION, type Policy } from '../core/policy/types.js';
import { ListIndex } from '../core/lists.js';
import { entryView, type EntryView } from './list-target.js';
import { readBlocksOf } from '../db/guard-stats.js';
import { prefixKey } from '../core/policy/counters.js';
import { conversionRules, rangeLabel, rangeRules, reasonOfRule } from './guard-view.js';

/** One rule that applies to the number, as it stands now. */
export interface RuleStatus {
  id: string;
  group: 'number' | 'prefix' | 'country' | 'global' | 'conversion' | 'sweep';
  /** What the rule counts over: null for number rules (the number itself), else `+1415555`, `US`, `*`. */
  key: string | null;
  limit: number;
  windowMs: number;
  used: number;
  remaining: number;
  /** Denied: when one more call fits; allowed: when the oldest counted call leaves (now if none). */
  resetTime: number;
  /** Whether this rule alone would allow one more call now. */
  allows: boolean;
  /** Reported, never denies. */
  shadow: boolean;
}

export interface StatusReport {
  phoneNumber: string;
  hash: string;
  region: string | null;
  numberType: string | null;
  tracked: boolean;
  policy: { version: number; source: 'database' | 'default' };
  /** Would a consume be allowed now? With the rule and reason (docs/protocol.md ids) when not. */
  allowed: boolean;
  rule: string | null;
  reason: string | null;
  /** Shadow rules that would deny now. */
  shadow: string[];
  /** The number's binding number rule, or the denying rule when another decides; null when neither exists. */
  limit: number | null;
  used: number | null;
  remaining: number | null;
  windowMs: number | null;
  /** When the next call becomes possible (denied) or the oldest counted call leaves; null = no end known. */
  resetTime: number | null;
  retryAfterMs: number | null;
  rules: RuleStatus[];
  /**
   * forMs: without `escalate`, every block's length; with it (a `blocks` group), the cap on each
   * escalation step, null for no cap.
   */
  blockAfter: { denials: number; withinMs: number; forMs: number | null; escalate: string[] | null; recentDenials: number } | null;
  /** block_after: blocked until then (ms), else null. */
  blockedUntil: number | null;
  /** The entry that applies (own number first, else the longest prefix), or null. */
  list: EntryView | null;
  destination: { region: string; numberType: string | null; deniedBy: string | null };
  deniedInWindow: number;
  deniedTotal: number;
  lastCallAt: number | null;
  lastReset: { by: string; reason: string | null; at: string; previousCount: number } | null;
  /** The number's most recent reported outcomes (docs/protocol.md *Outcomes*), newest decision first. */
  outcomes: StoredOutcome[];
  /**
   * Automatic blocks in force on this number (block_after, `number:block_after`) and on its
   * ranges (sweep and conversion.prefix rules): level is the step of blocks.escalate (0: block_after
   * without a `blocks` group). Lifted by `unlist`.
   */
  autoBlocks: Array<{ targetType: 'number' | 'prefix'; target: string; rule: string; reason: string; level: number; until: number }>;
  /** The policy has conversion rules, but no outcome was reported in the last 7 days: they count nothing. */
  conversionIdle: boolean;
  now: number;
}

/** How many of a number's outcomes `status` shows. */
const RECENT_OUTCOMES = 10;

type Verdict = Pick<StatusReport, 'allowed' | 'rule' | 'reason' | 'limit' | 'used' | 'remaining' | 'windowMs' | 'resetTime' | 'retryAfterMs'>;

/** `previousKey`: PHONE_ENCRYPTION_KEY_PREVIOUS during a rotation; the number is folded to its new hash first. */
export async function statusCommand(pool: Pool, key: string, fallback: Policy, phone: string, previousKey?: string): Promise<StatusReport> {
  const { e164, region, type } = normalizePhoneWithType(phone);
  const hash = hashPhone(e164, key);
  await foldNumber(pool, e164, { current: key, previous: previousKey });
  const effective = await readEffectivePolicy(pool, fallback);
  const policy = effective.policy;
  // The counters a daemon would check now: conversion ones only once outcomes engaged them, none
  // of conversion or sweep for a safe number.
  const conversion = await readConversionState(pool, policy.conversion);
  const counters = countersFor(policy, e164, region, { conversion, safe: isSafe(policy, e164) });
  // During a rotation, outcomes of decisions made under the previous key carry its hash.
  const hashes = previousKey ? [hash, hashPhone(e164, previousKey)] : [hash];
  const ranges = rangeRules(policy).map((rule) => ({
    ruleId: rule.id,
    key: prefixKey(e164, rule.group === 'sweep' ? policy.sweep!.digits : policy.conversion!.prefix!.digits),
  }));
  const [peek, { row, lastReset }, lists, outcomes, blocks] = await Promise.all([
    peekState(pool, [hash], counters),
    lookupPhone(pool, hash),
    readListEntries(pool),
    recentOutcomes(pool, hashes, RECENT_OUTCOMES),
    readBlocksOf(pool, hashes, ranges),
  ]);
  const now = peek.nowMs;
  const state = peek.numbers.get(hash) ?? EMPTY_NUMBER;
  const at = decisionTime(state.log, now);

  const index = new ListIndex(lists.entries.map((e) => ({ ...e, expiresAtMs: e.expiresAt?.getTime() ?? null })));
  const match = index.lookup(hash, e164, now);
  const listEntry = match ? lists.entries.find((e) => e.targetType === match.entry.targetType && e.target === match.entry.target) : undefined;
  const destination = destinationDenial(policy, region, type);
  const buckets = counters.map((c) => peek.counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS);
  // Safe as the daemon decides it (src/daemon/engine/engine.ts): a safe prefix or an allow-list
  // entry, so a block_after block or a range's automatic block does not deny here either.
  const allowlisted = match?.kind === 'allow';
  const d = decideCheck({ number: state, buckets }, { counters, allowlisted, safe: allowlisted || isSafe(policy, e164) }, decisionPolicy(policy), now);

  const rules: RuleStatus[] = [
    ...policy.number.map((r): RuleStatus => {
      const v = evaluate(state.log, at, makeLogPolicy([r]));
      return {
        id: r.id,
        group: 'number',
        key: null,
        limit: r.limit,
        windowMs: r.windowMs,
        used: v.used,
        remaining: v.remaining,
        resetTime: v.resetTime,
        allows: v.allowed,
        shadow: r.shadow,
      };
    }),
    ...counters.map((c, i): RuleStatus => {
      const v = evaluateAggregate(buckets[i]!, now, c.rule);
      const group = c.rule.group as RuleStatus['group'];
      // A sweep counter counts distinct numbers: one whose last call is in its window is already
      // counted there, and its next call moves it rather than adding one, so the rule allows it.
      const counted = c.rule.group === 'sweep' && (state.log.at(-1) ?? -Infinity) > now - c.rule.windowMs;
      return {
        id: c.rule.id,
        group,
        key: c.key,
        limit: c.rule.limit,
        windowMs: c.rule.windowMs,
        used: v.used,
        remaining: v.remaining,
        resetTime: v.resetTime,
        allows: v.allowed || counted,
        shadow: c.rule.shadow,
      };
    }),
  ];

  // What the daemon reports: the number's binding number rule, unless another rule decides.
  const numberView: Verdict | null = d.number
    ? {
        allowed: true,
        rule: null,
        reason: null,
        limit: d.number.limit,
        used: d.number.used,
        remaining: d.number.remaining,
        windowMs: policy.number.find((r) => r.id === d.number!.ruleId)?.windowMs ?? null,
        resetTime: d.number.resetTime,
        retryAfterMs: 0,
      }
    : null;
  const base: Verdict = numberView ?? {
    allowed: true,
    rule: null,
    reason: null,
    limit: null,
    used: null,
    remaining: null,
    windowMs: null,
    resetTime: null,
    retryAfterMs: null,
  };
  const until = (resetTime: number | null): Pick<Verdict, 'resetTime' | 'retryAfterMs'> => ({
    resetTime,
    retryAfterMs: resetTime === null ? null : Math.max(0, resetTime - now),
  });
  let verdict: Verdict;
  if (match?.kind === 'allow') verdict = base;
  else if (match?.kind === 'block') verdict = { ...base, allowed: false, rule: 'list:block', reason: 'number_blocked', ...until(match.entry.expiresAtMs) };
  else if (destination) verdict = { ...base, allowed: false, rule: destination.rule, reason: 'destination_blocked', ...until(null) };
  else if (d.allowed) verdict = base;
  else if (d.aggregate) {
    const a = d.aggregate;
    const windowMs = counters.find((c) => c.rule.id === a.ruleId)?.rule.windowMs ?? null;
    verdict = { allowed: false, rule: d.rule, reason: d.reason, limit: a.limit, used: a.used, remaining: a.remaining, windowMs, ...until(a.resetTime) };
  } else if (d.reason === 'number_blocked') verdict = { ...base, allowed: false, rule: d.rule, reason: d.reason, ...until(d.blockedUntil) };
  else verdict = { ...base, allowed: false, rule: d.rule, reason: d.reason, ...until(d.number?.resetTime ?? null) };

  // The window denied_in_window is kept over: the first number rule's (as the SQL), else the longest aggregate's.
  const deniedWindowMs = policy.number[0]?.windowMs ?? Math.max(1, ...counters.map((c) => c.rule.windowMs));
  const b = policy.blockAfter;
  return {
    phoneNumber: maskPhone(e164),
    hash,
    region: row?.region ?? region ?? null,
    numberType: type ?? null,
    tracked: row !== null,
    policy: { version: effective.version, source: effective.source },
    ...verdict,
    shadow: match?.kind === 'allow' ? [] : d.shadow,
    rules,
    blockAfter: b
      ? {
          denials: b.denials,
          withinMs: b.withinMs,
          forMs: b.forMs ?? null,
          escalate: policy.blocks ? [...policy.blocks.escalate] : null,
          recentDenials: state.denials.filter((t) => t > at - b.withinMs).length,
        }
      : null,
    blockedUntil: state.blockedUntil !== null && state.blockedUntil > at ? state.blockedUntil : null,
    list: listEntry ? entryView(listEntry) : null,
    destination: { region: region ?? UNKNOWN_REGION, numberType: type ?? null, deniedBy: destination?.rule ?? null },
    deniedInWindow: row && row.deniedWindowStart > now - deniedWindowMs ? row.deniedInWindow : 0,
    deniedTotal: row?.deniedTotal ?? 0,
    lastCallAt: row?.lastCallAt ?? null,
    lastReset: lastReset
      ? { by: lastReset.resetBy, reason: lastReset.reason, at: lastReset.resetAt.toISOString(), previousCount: lastReset.previousCount }
      : null,
    outcomes,
    autoBlocks: [
      ...(blocks.number
        ? [
            {
              targetType: 'number' as const,
              target: maskPhone(e164),
              rule: 'number:block_after',
              reason: 'number_blocked',
              level: blocks.number.level,
              until: blocks.number.untilMs,
            },
          ]
        : []),
      ...blocks.ranges.map((b) => ({
        targetType: 'prefix' as const,
        target: rangeLabel(policy, b.ruleId, b.key),
        rule: b.ruleId,
        reason: reasonOfRule(b.ruleId),
        level: b.level,
        until: b.untilMs,
      })),
    ],
    // The engagement read above already says it: no second query for the same fact.
    conversionIdle: conversionRules(policy).length > 0 && !conversion.engaged,
    now,
  };
}
