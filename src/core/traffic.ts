// Which countries and ranges are above normal: the share of active numbers each holds now
// against its share over the baseline (src/db/traffic.ts reads both), ranked by how many numbers
// above its normal share it is. Pure: `top`, `stats` and `block --top` all rank the same way.
//
// Distinct numbers, not calls, are compared: the baseline (the active set) records which numbers
// were active in each 10-minute epoch, not how often; and a pumping run calls many numbers once
// each, so numbers move exactly as much as its calls do.
import { getCountries, getCountryCallingCode, type CountryCode } from 'libphonenumber-js/max';
import { priceOf, type PriceTable } from './prices.js';

export interface KeyNow {
  key: string;
  country: string;
  numbers: number;
  calls: number;
  denials: number;
}

export interface Baseline {
  epochs: number;
  total: number;
  countries: ReadonlyMap<string, number>;
  ranges: ReadonlyMap<string, number>;
}

export type MoverKind = 'country' | 'range';

export interface Mover {
  kind: MoverKind;
  /** ISO country, or the range as its mask (`+14155552•••`). */
  key: string;
  country: string;
  numbers: number;
  calls: number;
  denials: number;
  /** Its share of the numbers active now, 0..1. */
  share: number;
  /** Its share over the baseline; null without one (a new database, or too little history). */
  normalShare: number | null;
  /** share / normalShare; null without a baseline, Infinity for a key never seen before. */
  ratio: number | null;
  /** Numbers now above what its normal share would give: what the ranking is by. */
  excess: number;
  /** Allowed calls' cost per minute over the window. */
  spendPerMin: number;
  /** Blocked by a list entry (its range or a wider prefix). */
  blocked: boolean;
}

// Fewer number-epochs than this in the baseline is no baseline: a share of a handful is noise.
export const MIN_BASELINE_NUMBERS = 50;

/** The range's digits (`+14155552`) from its mask; what `block --prefix` takes. */
export function rangePrefix(rangeMask: string): string {
  return rangeMask.replace(/•+$/, '');
}

export function movers(
  now: { windowMs: number; countries: readonly KeyNow[]; ranges: readonly KeyNow[] },
  base: Baseline | null,
  prices: PriceTable,
  isBlocked: (kind: MoverKind, key: string) => boolean,
): Mover[] {
  const total = now.countries.reduce((n, c) => n + c.numbers, 0);
  const haveBase = base !== null && base.total >= MIN_BASELINE_NUMBERS;
  const perMin = 60_000 / now.windowMs;
  const one = (kind: MoverKind, k: KeyNow): Mover => {
    const share = total > 0 ? k.numbers / total : 0;
    const baseN = haveBase ? ((kind === 'country' ? base.countries : base.ranges).get(k.key) ?? 0) : 0;
    const normalShare = haveBase ? baseN / base.total : null;
    const ratio = normalShare === null ? null : normalShare === 0 ? (share > 0 ? Infinity : 1) : share / normalShare;
    const excess = normalShare === null ? k.numbers : k.numbers - normalShare * total;
    return {
      kind,
      key: k.key,
      country: k.country,
      numbers: k.numbers,
      calls: k.calls,
      denials: k.denials,
      share,
      normalShare,
      ratio,
      excess,
      spendPerMin: k.calls * priceOf(prices, k.country) * perMin,
      blocked: isBlocked(kind, k.key),
    };
  };
  return [...now.countries.map((c) => one('country', c)), ...now.ranges.map((r) => one('range', r))].sort(
    (a, b) => Number(a.blocked) - Number(b.blocked) || b.excess - a.excess || b.calls - a.calls || a.key.localeCompare(b.key),
  );
}

/** Whether a list of blocked prefixes covers a key (a range by its digits; a country never is by a prefix). */
export function blockedBy(prefixes: readonly string[]): (kind: MoverKind, key: string) => boolean {
  return (kind, key) => kind === 'range' && prefixes.some((p) => rangePrefix(key).startsWith(p));
}

/**
 * A country as a list prefix: its calling code, when no other country shares it (`NG` -> `+234`).
 * A shared code (+1, +7, +44 with GG/IM/JE, ...) would block its neighbours too: then why not.
 */
export function countryPrefix(region: string): { prefix: string; why?: undefined } | { prefix?: undefined; why: string } {
  const all = getCountries();
  if (!all.includes(region as CountryCode)) return { why: `${region} is not a country libphonenumber knows` };
  const code = getCountryCallingCode(region as CountryCode);
  const sharing = all.filter((c) => c !== region && getCountryCallingCode(c) === code);
  if (sharing.length > 0) {
    return {
      why: `+${code} is shared with ${sharing.slice(0, 6).join(', ')}${sharing.length > 6 ? ', …' : ''}: block its ranges (--top range N) or deny it in the policy (policy set destinations.countries.deny=${region})`,
    };
  }
  return { prefix: `+${code}` };
}
