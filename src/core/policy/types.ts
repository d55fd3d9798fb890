// The policy as the decision path sees it (docs/protocol.md *Policy*), after the YAML file (or the
// RATE_LIMIT_* defaults) has been parsed and validated. Parsing lives in file.ts, decisions in
// decide.ts and aggregate.ts; this file is the one vocabulary they and the SQL share.

/** libphonenumber-js `getType()` values, lower_snake as written in policy files. */
export const NUMBER_TYPES = [
  'premium_rate',
  'shared_cost',
  'toll_free',
  'voip',
  'personal_number',
  'pager',
  'uan',
  'voicemail',
  'mobile',
  'fixed_line',
  'fixed_line_or_mobile',
  // Not a libphonenumber type: numbers under a non-geographic calling code (NON_GEOGRAPHIC_CODES).
  'non_geographic',
] as const;
export type NumberType = (typeof NUMBER_TYPES)[number];

export const DEFAULT_BLOCK_TYPES: readonly NumberType[] = ['premium_rate', 'shared_cost', 'non_geographic'];

/**
 * Calling codes of no country, the IRSF destinations after premium rate: satellite (+870
 * Inmarsat, +881 GMSS), international networks (+882, +883: roaming SIMs and carriers' ranges,
 * resold per minute), UPT (+878), OCHA (+888) and international premium rate (+979). Their
 * numbers get the type `non_geographic`, blocked by default; +800 (international freephone) and
 * +808 (shared cost, typed so by libphonenumber) are left to their libphonenumber types.
 */
export const NON_GEOGRAPHIC_CODES: ReadonlySet<string> = new Set(['870', '878', '881', '882', '883', '888', '979']);

/** Region used for numbers whose country libphonenumber cannot tell (fictional +1555…). */
export const UNKNOWN_REGION = 'ZZ';

/** Aggregates may deny early by at most this share of their limit (rounded up). */
export const AGGREGATE_SLACK = 0.02;

export type GroupName = 'number' | 'prefix' | 'country' | 'global' | 'ip';

/**
 * The reason a denial by each group's rules gives (docs/protocol.md). src/protocol/wire.ts's
 * DENY_REASONS is the full list (these, number_blocked and destination_blocked); it checks at
 * compile time that it holds these.
 */
export const GROUP_DENY_REASON = {
  number: 'phone_rate_limit_exceeded',
  prefix: 'prefix_rate_limit_exceeded',
  country: 'country_rate_limit_exceeded',
  global: 'global_rate_limit_exceeded',
  ip: 'ip_rate_limit_exceeded',
} as const satisfies Record<GroupName, string>;

/** The reasons the policy's rules give: a group's, or block_after's. */
export type RuleDenyReason = (typeof GROUP_DENY_REASON)[GroupName] | 'number_blocked';

/** Reasons given by aggregate counters (prefix, country, global): a budget shared by many numbers. */
export const AGGREGATE_DENY_REASONS: ReadonlySet<string> = new Set([GROUP_DENY_REASON.prefix, GROUP_DENY_REASON.country, GROUP_DENY_REASON.global]);

/** The group a rule id names (`prefix:1h` -> prefix), or undefined for ids that are not limit rules. */
export function groupOfRuleId(id: string): GroupName | undefined {
  const group = id.slice(0, id.indexOf(':'));
  return Object.hasOwn(GROUP_DENY_REASON, group) ? (group as GroupName) : undefined;
}

/** One `{limit, window}` of a group, with its id as replies, metrics and the CLI name it. */
export interface LimitRule {
  /** `number:1h`, `prefix:1h`, `country:1h`, `country:GB:1h`, `global:1d`, `ip:1h`. */
  readonly id: string;
  readonly group: GroupName;
  readonly limit: number;
  readonly windowMs: number;
  /** The window as written in the file (`1h`), used in the id. */
  readonly window: string;
  /** Evaluated, counted and reported (`shadow` in replies), never denies. */
  readonly shadow: boolean;
}

export interface BlockAfter {
  /** Denials of one number within `withinMs` that block it... */
  readonly denials: number;
  readonly withinMs: number;
  /** ...for this long (reason `number_blocked`, rule `number:block_after`). */
  readonly forMs: number;
}

export interface CountryDestinations {
  readonly mode: 'allow' | 'deny';
  /** ISO 3166-1 alpha-2, upper case. */
  readonly regions: readonly string[];
}

/**
 * The fewest trailing digits a range (a prefix rule's key, a mask) may leave out: 3 digits are
 * 1,000 numbers, the smallest anonymity set anything stored, logged or printed may leave
 * (docs/protocol.md, *The limit's promise*). Prefix rules, masks and block prefixes all hold to it.
 */
export const MIN_PREFIX_DIGITS = 3;

/** Why: said wherever a range narrower than that is refused. */
export const MIN_PREFIX_DIGITS_REASON = `a range must hold at least 1,000 numbers (${MIN_PREFIX_DIGITS} digits left out), so that no stored, logged or printed key narrows a number to fewer candidates`;

export interface Policy {
  /** Exact rolling windows over each number's call log; every one must allow. */
  readonly number: readonly LimitRule[];
  readonly blockAfter: BlockAfter | undefined;
  /** Ranges: the E.164 number without its last `digits` digits. undefined = no prefix group. */
  readonly prefix: { readonly digits: number; readonly rules: readonly LimitRule[] } | undefined;
  /** Per region: `default` unless the region has an override. */
  readonly country: { readonly rules: readonly LimitRule[]; readonly overrides: ReadonlyMap<string, readonly LimitRule[]> } | undefined;
  readonly global: readonly LimitRule[];
  /** Per client IP (IPv6 per /64), in memory, per instance. */
  readonly ip: readonly LimitRule[];
  readonly destinations: {
    readonly countries: CountryDestinations | undefined;
    readonly blockTypes: readonly NumberType[];
  };
}

/**
 * One aggregate counter a consume is checked against: the rule and the key it counts over.
 * Stored in `rate_limit_counters` under (rule id, key).
 */
export interface AggregateCounter {
  readonly rule: LimitRule;
  /** prefix: `+1415555` (E.164 minus its last digits); country: `US` or `ZZ`; global: `*`. */
  readonly key: string;
}

/**
 * An aggregate's state: "buckets" of calls in time order. A bucket holds at most
 * `bucketCalls(rule)` calls and carries the time of its newest call; it counts, whole, while
 * that time is inside the window. So the count is never below the true rolling count (the
 * promise holds) and is above it by less than one bucket (< 2% of the limit).
 */
export interface Buckets {
  /** Newest call time of each bucket, ascending (ms, database clock). */
  readonly ts: readonly number[];
  /** Calls in each bucket. */
  readonly n: readonly number[];
}
