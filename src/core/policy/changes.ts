// What `policy apply` says changed, one human line per rule, so the operator can confirm the
// new policy does what they meant before traffic tells them otherwise.

import { formatDurationMs } from '../duration.js';
import type { BlockAfter, LimitRule, Policy } from './types.js';

function allRules(policy: Policy): LimitRule[] {
  return [
    ...policy.number,
    ...(policy.prefix?.rules ?? []),
    ...(policy.country?.rules ?? []),
    ...[...(policy.country?.overrides.values() ?? [])].flat(),
    ...policy.global,
    ...policy.ip,
  ];
}

const describeRule = (r: LimitRule): string => `${r.limit} per ${r.window}${r.shadow ? ', shadow' : ''}`;
const mode = (shadow: boolean): string => (shadow ? 'shadow' : 'enforcing');
const describeBlockAfter = (b: BlockAfter): string => `${b.denials} denials within ${formatDurationMs(b.withinMs)} block for ${formatDurationMs(b.forMs)}`;

function ruleChanges(before: Policy, after: Policy): string[] {
  const lines: string[] = [];
  const old = new Map(allRules(before).map((r) => [r.id, r]));
  const now = new Map(allRules(after).map((r) => [r.id, r]));
  for (const [id, r] of old) if (!now.has(id)) lines.push(`removed ${id} (${describeRule(r)})`);
  for (const [id, r] of now) {
    const was = old.get(id);
    if (!was) {
      lines.push(`added ${id} (${describeRule(r)})`);
      continue;
    }
    if (was.limit !== r.limit) lines.push(`${id} limit ${was.limit} -> ${r.limit}`);
    if (was.shadow !== r.shadow) lines.push(`${id} ${mode(was.shadow)} -> ${mode(r.shadow)}`);
  }
  return lines;
}

function blockAfterChange(before: BlockAfter | undefined, after: BlockAfter | undefined): string[] {
  const id = 'number:block_after';
  if (!before && !after) return [];
  if (!before) return [`added ${id} (${describeBlockAfter(after as BlockAfter)})`];
  if (!after) return [`removed ${id} (${describeBlockAfter(before)})`];
  const parts: string[] = [];
  if (before.denials !== after.denials) parts.push(`denials ${before.denials} -> ${after.denials}`);
  if (before.withinMs !== after.withinMs) parts.push(`within ${formatDurationMs(before.withinMs)} -> ${formatDurationMs(after.withinMs)}`);
  if (before.forMs !== after.forMs) parts.push(`for ${formatDurationMs(before.forMs)} -> ${formatDurationMs(after.forMs)}`);
  return parts.length > 0 ? [`${id} ${parts.join(', ')}`] : [];
}

function destinationChanges(before: Policy, after: Policy): string[] {
  const lines: string[] = [];
  const describe = (c: Policy['destinations']['countries']): string => (c ? `${c.mode} ${c.regions.join(', ')}` : 'every country');
  const was = before.destinations.countries;
  const is = after.destinations.countries;
  // The order of a list is not a change: it decides nothing.
  const same = was?.mode === is?.mode && [...(was?.regions ?? [])].sort().join() === [...(is?.regions ?? [])].sort().join();
  if (!same) lines.push(`destination:country ${describe(was)} -> ${describe(is)}`);
  const oldTypes = new Set(before.destinations.blockTypes);
  const newTypes = new Set(after.destinations.blockTypes);
  for (const t of oldTypes) if (!newTypes.has(t)) lines.push(`removed destination:${t} (${t} numbers can be called)`);
  for (const t of newTypes) if (!oldTypes.has(t)) lines.push(`added destination:${t} (${t} numbers are denied)`);
  return lines;
}

/** One line per change from `before` to `after`; empty when they enforce the same rules. */
export function describePolicyChanges(before: Policy, after: Policy): string[] {
  const lines: string[] = [];
  if (before.prefix && after.prefix && before.prefix.digits !== after.prefix.digits) {
    // Every prefix counter starts over: its keys are other ranges now.
    lines.push(`prefix digits ${before.prefix.digits} -> ${after.prefix.digits} (prefix counts start over)`);
  }
  lines.push(...ruleChanges(before, after), ...blockAfterChange(before.blockAfter, after.blockAfter), ...destinationChanges(before, after));
  return lines;
}
