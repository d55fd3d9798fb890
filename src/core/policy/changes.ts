// What `policy apply` says changed, one human line per rule, so the operator can confirm the
// new policy does what they meant before traffic tells them otherwise.

import { formatDurationMs } from '../duration.js';
import { allRules } from './rules.js';
import type { BlockAfter, BlocksPolicy, ConversionBaseline, LimitRule, Policy } from './types.js';

const BASELINE_ID = 'conversion:country:baseline';

const describeBaseline = (b: ConversionBaseline): string =>
  `max(${b.floor}, ${b.factor} x most converted in ${b.rule.window} over ${formatDurationMs(b.historyMs)}) per ${b.rule.window}${b.rule.shadow ? ', shadow' : ''}`;

/** The baseline by its id; its `limit` is the floor, described by baselineChange instead. */
const baselineOf = (policy: Policy): ConversionBaseline | undefined => policy.conversion?.country?.baseline;

const describeRule = (r: LimitRule): string => `${r.limit} per ${r.window}${r.shadow ? ', shadow' : ''}`;
const mode = (shadow: boolean): string => (shadow ? 'shadow' : 'enforcing');
/** How long a block_after block lasts: `for`, or with a `blocks` group the step, capped by `for` when given. */
const blockLength = (b: BlockAfter, blocks: BlocksPolicy | undefined): string => {
  const forText = b.forMs === undefined ? 'no length given' : formatDurationMs(b.forMs);
  if (!blocks) return forText;
  return b.forMs === undefined ? 'the escalation step' : `the escalation step, at most ${forText}`;
};
const describeBlockAfter = (b: BlockAfter, blocks: BlocksPolicy | undefined): string =>
  `${b.denials} denials within ${formatDurationMs(b.withinMs)} block for ${blockLength(b, blocks)}`;
const describeBlocks = (b: BlocksPolicy): string => `blocks last ${b.escalate.join(', then ')}; ${formatDurationMs(b.decayMs)} without one starts over`;

function ruleChanges(before: Policy, after: Policy): string[] {
  const lines: string[] = [];
  const old = new Map(allRules(before).map((r) => [r.id, r]));
  const now = new Map(allRules(after).map((r) => [r.id, r]));
  const describe = (r: LimitRule, policy: Policy): string => {
    const b = baselineOf(policy);
    return r.id === BASELINE_ID && b ? describeBaseline(b) : describeRule(r);
  };
  for (const [id, r] of old) if (!now.has(id)) lines.push(`removed ${id} (${describe(r, before)})`);
  for (const [id, r] of now) {
    const was = old.get(id);
    if (!was) {
      lines.push(`added ${id} (${describe(r, after)})`);
      continue;
    }
    if (id === BASELINE_ID) lines.push(...baselineChange(baselineOf(before), baselineOf(after)));
    else if (was.limit !== r.limit) lines.push(`${id} limit ${was.limit} -> ${r.limit}`);
    if (was.shadow !== r.shadow) lines.push(`${id} ${mode(was.shadow)} -> ${mode(r.shadow)}`);
  }
  return lines;
}

function baselineChange(before: ConversionBaseline | undefined, after: ConversionBaseline | undefined): string[] {
  if (!before || !after) return [];
  const parts: string[] = [];
  if (before.factor !== after.factor) parts.push(`factor ${before.factor} -> ${after.factor}`);
  if (before.floor !== after.floor) parts.push(`floor ${before.floor} -> ${after.floor}`);
  if (before.rule.windowMs !== after.rule.windowMs) parts.push(`window ${before.rule.window} -> ${after.rule.window}`);
  if (before.historyMs !== after.historyMs) parts.push(`history ${formatDurationMs(before.historyMs)} -> ${formatDurationMs(after.historyMs)}`);
  return parts.length > 0 ? [`${BASELINE_ID} ${parts.join(', ')}`] : [];
}

function blockAfterChange(before: Policy, after: Policy): string[] {
  const id = 'number:block_after';
  const was = before.blockAfter;
  const is = after.blockAfter;
  if (!was && !is) return [];
  if (!was) return [`added ${id} (${describeBlockAfter(is as BlockAfter, after.blocks)})`];
  if (!is) return [`removed ${id} (${describeBlockAfter(was, before.blocks)})`];
  const parts: string[] = [];
  if (was.denials !== is.denials) parts.push(`denials ${was.denials} -> ${is.denials}`);
  if (was.withinMs !== is.withinMs) parts.push(`within ${formatDurationMs(was.withinMs)} -> ${formatDurationMs(is.withinMs)}`);
  // With a `blocks` group the escalation decides how long, up to `for` (blocksChange says what
  // changed in the steps).
  const lengthBefore = blockLength(was, before.blocks);
  const lengthAfter = blockLength(is, after.blocks);
  if (lengthBefore !== lengthAfter) parts.push(`for ${lengthBefore} -> ${lengthAfter}`);
  return parts.length > 0 ? [`${id} ${parts.join(', ')}`] : [];
}

function blocksChange(before: BlocksPolicy | undefined, after: BlocksPolicy | undefined): string[] {
  if (!before && !after) return [];
  if (!before) return [`added automatic blocks (${describeBlocks(after as BlocksPolicy)})`];
  if (!after) return [`removed automatic blocks (${describeBlocks(before)}): ranges are no longer blocked by sweep and conversion rules`];
  const parts: string[] = [];
  if (before.escalateMs.join() !== after.escalateMs.join()) parts.push(`escalate ${before.escalate.join(', ')} -> ${after.escalate.join(', ')}`);
  if (before.decayMs !== after.decayMs) parts.push(`decay ${formatDurationMs(before.decayMs)} -> ${formatDurationMs(after.decayMs)}`);
  return parts.length > 0 ? [`automatic blocks ${parts.join(', ')}`] : [];
}

function conversionSettings(before: Policy, after: Policy): string[] {
  const was = before.conversion;
  const is = after.conversion;
  if (!was || !is) return [];
  const lines: string[] = [];
  if (was.answeredAtLeastMs !== is.answeredAtLeastMs) {
    lines.push(`conversion answered_at_least ${formatDurationMs(was.answeredAtLeastMs)} -> ${formatDurationMs(is.answeredAtLeastMs)}`);
  }
  if (was.pendingAfterMs !== is.pendingAfterMs)
    lines.push(`conversion pending_after ${formatDurationMs(was.pendingAfterMs)} -> ${formatDurationMs(is.pendingAfterMs)}`);
  return lines;
}

/** A range group's digits changed: its counters are kept per range, so they start over. */
function digitsChange(name: string, before: number | undefined, after: number | undefined): string[] {
  return before !== undefined && after !== undefined && before !== after ? [`${name} digits ${before} -> ${after} (${name} counts start over)`] : [];
}

function safeChanges(before: Policy, after: Policy): string[] {
  const was = new Set(before.safe.prefixes);
  const is = new Set(after.safe.prefixes);
  const added = [...is].filter((p) => !was.has(p));
  const removed = [...was].filter((p) => !is.has(p));
  // A list of a thousand prefixes would bury every other line: name a few, count the rest.
  const some = (list: string[]): string => (list.length <= 5 ? list.join(', ') : `${list.slice(0, 5).join(', ')} and ${list.length - 5} more`);
  const lines: string[] = [];
  if (added.length > 0) lines.push(`added safe prefixes ${some(added)} (never denied by conversion, sweep or automatic blocks)`);
  if (removed.length > 0) lines.push(`removed safe prefixes ${some(removed)}`);
  return lines;
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
  return [
    // Every prefix counter starts over: its keys are other ranges now.
    ...digitsChange('prefix', before.prefix?.digits, after.prefix?.digits),
    ...digitsChange('conversion.prefix', before.conversion?.prefix?.digits, after.conversion?.prefix?.digits),
    ...digitsChange('sweep.prefix', before.sweep?.digits, after.sweep?.digits),
    ...ruleChanges(before, after),
    ...conversionSettings(before, after),
    ...blockAfterChange(before, after),
    ...blocksChange(before.blocks, after.blocks),
    ...safeChanges(before, after),
    ...destinationChanges(before, after),
  ];
}
