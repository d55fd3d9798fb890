// The policy in force while none has been applied to the database (docs/protocol.md *Policy*): built
// from RATE_LIMIT_PHONE_* / RATE_LIMIT_IP_*, so a deployment without a policy file keeps
// behaving as before policies existed, plus the default destination block and the rules that stop
// pumping on their own: sweep (always on), conversion (idle until outcomes are reported) and
// escalating automatic blocks. Every threshold is justified in docs/choosing-limits.md.

import { formatDurationMs } from '../duration.js';
import { DEFAULT_BLOCK_TYPES, type BlocksPolicy, type ConversionPolicy, type GroupName, type LimitRule, type Policy, type RangeRules } from './types.js';

export interface DefaultPolicyInput {
  readonly phoneMax: number;
  readonly phoneWindowMs: number;
  readonly ipMax: number;
  readonly ipWindowMs: number;
}

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;

function rule(group: GroupName, limit: number, windowMs: number, qualifier?: string): LimitRule {
  const window = formatDurationMs(windowMs);
  return { id: qualifier ? `${group}:${qualifier}:${window}` : `${group}:${window}`, group, limit, windowMs, window, shadow: false };
}

/**
 * conversion: answered for 10s or verified converts; a range of 1,000 numbers may have 5 calls an
 * hour that did not convert; a country, max(10, 1 × its most converted calls in an hour over 14
 * days) an hour (Authgear's form taken per hour, with the factor raised from 0.2 so that an app
 * converting 50% of its calls, a voice app's answer rate, is never denied by it; the hour so that
 * an attack spread over a country's ranges is stopped within the hour: docs/choosing-limits.md).
 */
export const DEFAULT_CONVERSION: ConversionPolicy = {
  answeredAtLeastMs: 10_000,
  pendingAfterMs: 15 * MINUTE_MS,
  prefix: { digits: 3, rules: [rule('conversion', 5, HOUR_MS, 'prefix')] },
  country: {
    rules: [],
    baseline: {
      factor: 1,
      floor: 10,
      historyMs: 14 * DAY_MS,
      rule: { id: 'conversion:country:baseline', group: 'conversion', limit: 10, windowMs: HOUR_MS, window: '1h', shadow: false },
    },
  },
};

/** sweep: at most 10 distinct numbers of one 1,000-number range an hour. */
export const DEFAULT_SWEEP: RangeRules = { digits: 3, rules: [rule('sweep', 10, HOUR_MS, 'prefix')] };

/** blocks: 5 minutes, then 1 hour, then 12 hours (Twilio's shortest and longest); a quiet day starts over. */
export const DEFAULT_BLOCKS: BlocksPolicy = { escalateMs: [5 * MINUTE_MS, HOUR_MS, 12 * HOUR_MS], escalate: ['5m', '1h', '12h'], decayMs: DAY_MS };

export function defaultPolicy({ phoneMax, phoneWindowMs, ipMax, ipWindowMs }: DefaultPolicyInput): Policy {
  return {
    number: [rule('number', phoneMax, phoneWindowMs)],
    blockAfter: undefined,
    prefix: undefined,
    country: undefined,
    global: [],
    ip: [rule('ip', ipMax, ipWindowMs)],
    destinations: { countries: undefined, blockTypes: [...DEFAULT_BLOCK_TYPES] },
    conversion: DEFAULT_CONVERSION,
    sweep: DEFAULT_SWEEP,
    blocks: DEFAULT_BLOCKS,
    safe: { prefixes: [] },
  };
}
