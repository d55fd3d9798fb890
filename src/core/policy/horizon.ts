// How far back the database's rows can still matter to a decision under a policy: the
// retention horizon of src/db/retention.ts. Pure, so the daemon's retention loop and
// `ratelimit db prune` compute the same one.
import type { Policy } from './types.js';
import { allRules } from './rules.js';

/**
 * Never less than this: a policy with no windowed rule (destinations only, say) still keeps an
 * hour of rows, so `stats` and `status` have recent activity to show.
 */
export const MIN_RETENTION_HORIZON_MS = 60 * 60 * 1000;

/**
 * The longest window of any rule (number, prefix, country and its overrides, global, conversion
 * and its baseline, sweep, ip) and block_after's `within`. A number or counter row with nothing newer than this cannot change a
 * decision: every rule looks at most one window back, block_after `within` back.
 */
export function retentionHorizonMs(policy: Policy): number {
  const windows = allRules(policy).map((r) => r.windowMs);
  if (policy.blockAfter) windows.push(policy.blockAfter.withinMs);
  return Math.max(MIN_RETENTION_HORIZON_MS, ...windows);
}
