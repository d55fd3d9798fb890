// Hand-built policies for tests of the decision model and its SQL (the YAML parser is separate).

import type { GroupName, LimitRule, Policy } from '../../src/core/policy/types.js';

/** A rule whose id is unique to `tag`, so runs sharing a database never share a counter row. */
export function rule(group: GroupName, limit: number, windowMs: number, shadow = false, tag = '', region?: string): LimitRule {
  const window = `${windowMs}ms`;
  return { id: `${group}:${region ? `${region}:` : ''}${window}${tag}`, group, limit, windowMs, window, shadow };
}

export function policy(parts: Partial<Policy>): Policy {
  return {
    number: [],
    blockAfter: undefined,
    prefix: undefined,
    country: undefined,
    global: [],
    ip: [],
    destinations: { countries: undefined, blockTypes: [] },
    conversion: undefined,
    sweep: undefined,
    blocks: undefined,
    safe: { prefixes: [] },
    ...parts,
  };
}
