// The policy in force while none has been applied to the database (docs/protocol.md *Policy*): built
// from RATE_LIMIT_PHONE_* / RATE_LIMIT_IP_*, so a deployment without a policy file keeps
// behaving as before policies existed, plus the default destination block.

import { formatDurationMs } from '../duration.js';
import { DEFAULT_BLOCK_TYPES, type GroupName, type LimitRule, type Policy } from './types.js';

export interface DefaultPolicyInput {
  readonly phoneMax: number;
  readonly phoneWindowMs: number;
  readonly ipMax: number;
  readonly ipWindowMs: number;
}

function rule(group: GroupName, limit: number, windowMs: number): LimitRule {
  const window = formatDurationMs(windowMs);
  return { id: `${group}:${window}`, group, limit, windowMs, window, shadow: false };
}

export function defaultPolicy({ phoneMax, phoneWindowMs, ipMax, ipWindowMs }: DefaultPolicyInput): Policy {
  return {
    number: [rule('number', phoneMax, phoneWindowMs)],
    blockAfter: undefined,
    prefix: undefined,
    country: undefined,
    global: [],
    ip: [rule('ip', ipMax, ipWindowMs)],
    destinations: { countries: undefined, blockTypes: [...DEFAULT_BLOCK_TYPES] },
    conversion: undefined,
    sweep: undefined,
    blocks: undefined,
    safe: { prefixes: [] },
  };
}
