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
    out.number = {
      ...(policy.number.length > 0 ? { limits: limits(policy.number) } : {}),
      ...(b ? { block_after: { denials: b.denials, within: formatDurationMs(b.withinMs), for: formatDurationMs(b.forMs) } } : {}),
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
  return out;
}

/** The policy as a YAML file, in the layout of docs/protocol.md's example. */
export function policyToYaml(policy: Policy): string {
  const doc = new Document(policyObject(policy));
  // Lists, and the small mappings inside them or under block_after/countries, on one line each.
  visit(doc, {
    Seq(_, node) {
      node.flow = true;
    },
    Pair(_, pair) {
      const key = String((pair.key as { value?: unknown } | null)?.value);
      if ((key === 'block_after' || key === 'countries') && isMap(pair.value)) pair.value.flow = true;
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
