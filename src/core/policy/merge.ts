// `policy apply --merge FILE` and `policy set group.key=value`: change part of the active policy
// without restating the rest (a group left out of a whole file is dropped: that is what an
// applied file means). Both work on the active policy written out in full (policyToYaml), so the
// result is one complete policy file, validated like any other before it is stored.
import { parse, stringify } from 'yaml';
import { policyToYaml } from './print.js';
import type { Policy } from './types.js';

type Doc = Record<string, unknown>;

function asDoc(text: string, what: string): Doc {
  const v: unknown = parse(text);
  if (v === null || v === undefined) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what} is not a YAML mapping of policy groups`);
  return v as Doc;
}

/**
 * The active policy with every group the file names replaced by the file's (`null` removes the
 * group); groups the file leaves out are kept as they are.
 */
export function mergePolicyText(active: Policy, fileText: string): string {
  const merged = asDoc(policyToYaml(active), 'the active policy');
  for (const [group, value] of Object.entries(asDoc(fileText, 'the file'))) {
    if (value === null) delete merged[group];
    else merged[group] = value;
  }
  return stringify(merged);
}

/** One `group.key[.key…]=value` assignment; the value is YAML (`5`, `1h`, `[CU, KP]`, `{limit: 10, window: 1h}`). */
export interface Assignment {
  path: string[];
  value: unknown;
}

export function parseAssignment(text: string): Assignment {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error(`"${text}" is not group.key=value, e.g. destinations.countries.deny=[CU, KP]`);
  const path = text.slice(0, eq).trim().split('.');
  if (path.some((p) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(p))) throw new Error(`"${text.slice(0, eq)}" is not a dotted path of policy keys, e.g. prefix.digits`);
  let value: unknown;
  try {
    value = parse(text.slice(eq + 1));
  } catch (err) {
    throw new Error(`the value of ${path.join('.')} is not YAML: ${(err as Error).message}`, { cause: err });
  }
  return { path, value };
}

/** The active policy with each assignment made (creating the mappings on the way); `null` deletes the key. */
export function setPolicyText(active: Policy, assignments: readonly Assignment[]): string {
  const doc = asDoc(policyToYaml(active), 'the active policy');
  for (const { path, value } of assignments) {
    let node: Doc = doc;
    for (const key of path.slice(0, -1)) {
      const next = node[key];
      if (next === undefined || next === null) node[key] = {};
      else if (typeof next !== 'object' || Array.isArray(next)) throw new Error(`${path.join('.')}: ${key} is not a mapping in the active policy`);
      node = node[key] as Doc;
    }
    const last = path[path.length - 1]!;
    if (value === null) delete node[last];
    else node[last] = value;
  }
  return stringify(doc);
}
