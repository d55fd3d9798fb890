// What a valid policy may still get wrong: said at `policy check` and `policy apply`, never an
// error, because each of these can be meant.

import { DEFAULT_BLOCK_TYPES, type LimitRule, type Policy } from './types.js';
import { ruleLists } from './rules.js';
import { formatDurationMs } from '../duration.js';

const TYPE_RISK: Record<string, string> = {
  premium_rate: 'premium-rate numbers (the IRSF fraud target) can be called',
  shared_cost: 'shared-cost numbers (revenue-share fraud) can be called',
};

/**
 * A rule that another rule of its list always outlasts never decides anything: the other one
 * allows no more calls over a window at least as long, so it denies first (or together).
 */
function shadowedBy(list: readonly LimitRule[]): string[] {
  const out: string[] = [];
  list.forEach((rule, i) => {
    const stricter = list.find((other, j) => j !== i && other.windowMs >= rule.windowMs && other.limit <= rule.limit && other.shadow === rule.shadow);
    if (stricter) {
      out.push(`${rule.id} (${rule.limit} per ${rule.window}) never decides: ${stricter.id} allows at most ${stricter.limit} over a window as long or longer`);
    }
  });
  return out;
}

export function policyWarnings(policy: Policy): string[] {
  const warnings: string[] = [];
  const hasLimit =
    policy.number.length > 0 ||
    policy.blockAfter !== undefined ||
    policy.prefix !== undefined ||
    policy.country !== undefined ||
    policy.global.length > 0 ||
    policy.ip.length > 0 ||
    policy.conversion !== undefined ||
    policy.sweep !== undefined;
  if (!hasLimit) warnings.push('the policy has no rate limit: every consume is allowed unless a destination control denies it');
  for (const list of ruleLists(policy)) {
    warnings.push(...shadowedBy(list));
  }
  warnings.push(...blocksWarnings(policy));
  // Not non_geographic: files written before it existed list [premium_rate, shared_cost] as "the
  // default" (docs/protocol.md's example does); they keep working without a warning, and the shipped
  // examples list it.
  for (const type of DEFAULT_BLOCK_TYPES.filter((t) => t !== 'non_geographic')) {
    if (!policy.destinations.blockTypes.includes(type)) {
      warnings.push(`destinations.block_types leaves out ${type}: ${TYPE_RISK[type] ?? `${type} numbers can be called`}`);
    }
  }
  return warnings;
}

/** `blocks` and `safe` only act through other rules: said when those are missing. */
function blocksWarnings(policy: Policy): string[] {
  const warnings: string[] = [];
  const rangeRules = [...(policy.sweep?.rules ?? []), ...(policy.conversion?.prefix?.rules ?? [])];
  const blocking = policy.blockAfter !== undefined || rangeRules.some((r) => !r.shadow);
  if (policy.blocks && !blocking) {
    warnings.push(
      'blocks has nothing to escalate: automatic blocks are made by number.block_after and by enforcing sweep and conversion.prefix rules, and the policy has none',
    );
  }
  const capMs = policy.blockAfter?.forMs;
  const blocks = policy.blocks;
  if (capMs !== undefined && blocks && blocks.escalateMs.length > 1 && capMs <= blocks.escalateMs[0]!) {
    warnings.push(
      `number.block_after.for (${formatDurationMs(capMs)}) caps every blocks.escalate step, so a number's blocks never grow: raise it above ${blocks.escalate[0]} or remove it`,
    );
  }
  if (policy.safe.prefixes.length > 0 && !policy.conversion && !policy.sweep && !policy.blocks) {
    warnings.push('safe.prefixes exempt numbers from conversion, sweep and automatic blocks only, and the policy has none of them: the list changes nothing');
  }
  return warnings;
}
