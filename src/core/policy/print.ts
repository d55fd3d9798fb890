// A `Policy` back to the YAML file that describes it (`policy check`, `policy show`): what
// parsePolicyFile reads back to the same policy, with defaults written out (block_types), so an
// operator sees what is enforced, not only what was typed.

import { Document, isMap, isSeq, visit } from 'yaml';
import { formatDurationMs } from '../duration.js';
import type { LimitRule, Policy } from './types.js';
import { ruleIds } from './subject.js';
import { allRules } from './rules.js';

type Limits = { limit: number; window: string }[];

const limits = (rules: readonly LimitRule[]): Limits => rules.map((r) => ({ limit: r.limit, window: r.window }));

/**
 * A file has one `shadow` per group; a group whose rules disagree cannot be written down (only
 * hand-built policies can be like that), and printing it either way would misstate what runs.
 */
function groupShadow(group: string, rules: readonly LimitRule[]): { shadow?: true } {
  const flags = new Set(rules.map((r) => r.shadow));
  if (flags.size > 1) throw new RangeError(`policy group ${group} mixes shadow and enforcing rules, which a policy file cannot express`);
  return flags.has(true) ? { shadow: true } : {};
}

/**
 * The policy as the file's structure (the same keys and durations a file is written with), for
 * `policy show --json`: a script reads it with jq instead of parsing YAML out of a string.
 */
export function policyToJson(policy: Policy): Record<string, unknown> {
  return policyObject(policy);
}

function policyObject(policy: Policy): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (policy.number.length > 0 || policy.blockAfter) {
    const b = policy.blockAfter;
    // `for` is a block's length without a `blocks` group (which the file must then give) and a
    // cap on each escalation step with one, where it may be absent (no cap).
    if (b && b.forMs === undefined && !policy.blocks) {
      throw new RangeError('policy block_after has no forMs and no blocks group, which a policy file cannot express');
    }
    const forPart = b && b.forMs !== undefined ? { for: formatDurationMs(b.forMs) } : {};
    out.number = {
      ...(policy.number.length > 0 ? { limits: limits(policy.number) } : {}),
      ...(b ? { block_after: { denials: b.denials, within: formatDurationMs(b.withinMs), ...forPart } } : {}),
      ...groupShadow('number', policy.number),
    };
  }
  if (policy.prefix) {
    out.prefix = { digits: policy.prefix.digits, limits: limits(policy.prefix.rules), ...groupShadow('prefix', policy.prefix.rules) };
  }
  const country = policy.country;
  if (country && (country.rules.length > 0 || country.overrides.size > 0)) {
    const overrides = [...country.overrides];
    out.country = {
      ...(country.rules.length > 0 ? { limits: limits(country.rules) } : {}),
      ...(overrides.length > 0 ? { overrides: Object.fromEntries(overrides.map(([code, rules]) => [code, limits(rules)])) } : {}),
      ...groupShadow('country', [...country.rules, ...overrides.flatMap(([, rules]) => rules)]),
    };
  }
  if (policy.global.length > 0) out.global = { limits: limits(policy.global), ...groupShadow('global', policy.global) };
  if (policy.ip.length > 0) out.ip = { limits: limits(policy.ip), ...groupShadow('ip', policy.ip) };
  const countries = policy.destinations.countries;
  out.destinations = {
    ...(countries ? { countries: { [countries.mode]: [...countries.regions] } } : {}),
    block_types: [...policy.destinations.blockTypes],
  };
  const conversion = conversionObject(policy.conversion);
  if (conversion) out.conversion = conversion;
  if (policy.sweep && policy.sweep.rules.length > 0) {
    out.sweep = { prefix: { digits: policy.sweep.digits, distinct: limits(policy.sweep.rules), ...groupShadow('sweep', policy.sweep.rules) } };
  }
  if (policy.blocks) out.blocks = { escalate: [...policy.blocks.escalate], decay: formatDurationMs(policy.blocks.decayMs) };
  if (policy.safe.prefixes.length > 0) out.safe = { prefixes: [...policy.safe.prefixes] };
  return out;
}

function conversionObject(conversion: Policy['conversion']): Record<string, unknown> | undefined {
  if (!conversion) return undefined;
  const { prefix, country } = conversion;
  const body: Record<string, unknown> = {};
  if (prefix && prefix.rules.length > 0) {
    body.prefix = { digits: prefix.digits, unconverted: limits(prefix.rules), ...groupShadow('conversion.prefix', prefix.rules) };
  }
  const b = country?.baseline;
  if (country && (country.rules.length > 0 || b)) {
    body.country = {
      ...(country.rules.length > 0 ? { unconverted: limits(country.rules) } : {}),
      ...(b ? { baseline: { factor: b.factor, floor: b.floor, window: b.rule.window, history: formatDurationMs(b.historyMs) } } : {}),
      ...groupShadow('conversion.country', [...country.rules, ...(b ? [b.rule] : [])]),
    };
  }
  // A conversion group without a rule cannot be written (the parser refuses it): it has none.
  if (Object.keys(body).length === 0) return undefined;
  return {
    answered_at_least: formatDurationMs(conversion.answeredAtLeastMs),
    pending_after: formatDurationMs(conversion.pendingAfterMs),
    ...body,
  };
}

/** The policy as a YAML file, in the layout of docs/protocol.md's example. */
export function policyToYaml(policy: Policy): string {
  const doc = new Document(policyObject(policy));
  // Lists, and the small mappings inside them or under block_after/countries, on one line each.
  visit(doc, {
    Pair(_, pair) {
      const key = String((pair.key as { value?: unknown } | null)?.value);
      if ((key === 'block_after' || key === 'countries' || key === 'baseline') && isMap(pair.value)) pair.value.flow = true;
      // conversion.prefix and sweep.prefix, not the prefix group itself (which has `limits`).
      if (key === 'prefix' && isMap(pair.value) && (pair.value.has('unconverted') || pair.value.has('distinct'))) pair.value.flow = true;
      // Safe prefixes (up to thousands) one per line; every other list on one line.
      if (isSeq(pair.value)) pair.value.flow = key !== 'prefixes';
    },
    Map(_, node, path) {
      if (isSeq(path[path.length - 1])) node.flow = true;
    },
  });
  return doc.toString({ flowCollectionPadding: false, lineWidth: 0 });
}

/** policyToYaml with a header naming every rule id (and which only report), for people. */
export function formatPolicy(policy: Policy): string {
  const shadowIds = allRules(policy)
    .filter((r) => r.shadow)
    .map((r) => r.id);
  const ids = ruleIds(policy);
  const header = [`# rules: ${ids.length > 0 ? ids.join(', ') : '(none)'}`];
  if (shadowIds.length > 0) header.push(`# shadow (reported, never deny): ${shadowIds.join(', ')}`);
  return `${header.join('\n')}\n${policyToYaml(policy)}`;
}
