// The guard's view as plain data (src/cli/guard-view.ts reads it): shared by `stats`, `list`,
// `status` and the dashboard's views, which import no database code.

/** Said by `top`, `stats` and `status` while a policy's conversion rules count nothing. */
export const CONVERSION_IDLE_TEXT = 'conversion rules idle: no outcomes reported in the last 7 days';

export interface CountryConversion {
  region: string;
  /** Outcomes reported for decisions of the last hour, and how many converted. */
  outcomes1h: number;
  converted1h: number;
  /** converted1h / outcomes1h; null without outcomes. */
  rate1h: number | null;
  outcomes24h: number;
  converted24h: number;
  rate24h: number | null;
  /** The country's conversion counter closest to its limit (`conversion:country:1h`), if it counts anything. */
  unconverted: { ruleId: string; used: number; limit: number } | null;
}

export interface GuardRange {
  /** `conversion:prefix:1h` (unconverted calls) or `sweep:prefix:1h` (distinct numbers). */
  ruleId: string;
  kind: 'unconverted' | 'distinct';
  /** `+4477009•••`: never a number. */
  range: string;
  used: number;
  limit: number;
  shadow: boolean;
  /** The range's automatic block from this rule, when in force. */
  blocked: { level: number; until: number } | null;
}

export interface GuardBlock {
  targetType: 'prefix' | 'number';
  /** The range (`+4477009•••`) or the masked number (`+447700900•••`, its 1,000-number range). */
  target: string;
  /** The number's hash (for `unlist`, `hash`); null for a range. */
  hash: string | null;
  /** `sweep:prefix:1h`, `conversion:prefix:1h`, or `number:block_after`. */
  rule: string;
  /** The reason its denials give. */
  reason: string;
  /** 1-based step of blocks.escalate; 0 for a block_after block made without a `blocks` group. */
  level: number;
  /** When it ends by itself (ms). */
  until: number;
}

export interface GuardView {
  /** The active policy has conversion rules. */
  conversionRules: boolean;
  /** ...and they count nothing: no outcome recorded within CONVERSION_ENGAGED_WITHIN_MS. */
  conversionIdle: boolean;
  /** The newest outcome recorded within that time (ms), else null. */
  lastOutcomeAt: number | null;
  /** Countries with outcomes in the last day or unconverted calls counted; lowest conversion first. */
  countries: CountryConversion[];
  /** Ranges closest to their conversion or sweep limit first. */
  ranges: GuardRange[];
  /** Automatic blocks in force, longest to run first. */
  blocks: GuardBlock[];
  /** Blocks in force in all (the list above may stop at a few hundred numbers). */
  blocksTotal: { ranges: number; numbers: number };
}

/** `0.734` -> `73%`; null -> `—`. */
export function pctText(share: number | null): string {
  if (share === null) return '—';
  const p = share * 100;
  return p >= 10 || p === 0 ? `${Math.round(p)}%` : `${p.toFixed(1)}%`;
}
