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

export type GroupName = 'number' | 'prefix' | 'country' | 'global' | 'ip' | 'conversion' | 'sweep';

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
  conversion: 'conversion_rate_limit_exceeded',
  sweep: 'sweep_rate_limit_exceeded',
} as const satisfies Record<GroupName, string>;

/** The reasons the policy's rules give: a group's, or block_after's. */
export type RuleDenyReason = (typeof GROUP_DENY_REASON)[GroupName] | 'number_blocked';

/**
 * Reasons given by aggregate counters (prefix, country, global, conversion, sweep; and their
 * ranges' automatic blocks, rule `auto:block`): a budget shared by many numbers.
 */
export const AGGREGATE_DENY_REASONS: ReadonlySet<string> = new Set([
  GROUP_DENY_REASON.prefix,
  GROUP_DENY_REASON.country,
  GROUP_DENY_REASON.global,
  GROUP_DENY_REASON.conversion,
  GROUP_DENY_REASON.sweep,
]);

/** The group a rule id names (`prefix:1h` -> prefix), or undefined for ids that are not limit rules. */
export function groupOfRuleId(id: string): GroupName | undefined {
  const group = id.slice(0, id.indexOf(':'));
  return Object.hasOwn(GROUP_DENY_REASON, group) ? (group as GroupName) : undefined;
}

/** One `{limit, window}` of a group, with its id as replies, metrics and the CLI name it. */
export interface LimitRule {
  /**
   * `number:1h`, `prefix:1h`, `country:1h`, `country:GB:1h`, `global:1d`, `ip:1h`,
   * `conversion:prefix:1h`, `conversion:country:1h`, `conversion:country:baseline`, `sweep:prefix:1h`.
   */
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
  /**
   * ...for this long (reason `number_blocked`, rule `number:block_after`). Without a `blocks`
   * group the file must give `for`, and it is every block's length. With a `blocks` group a
   * block lasts its escalation step (blocks.escalate, like every automatic block) and `for`,
   * when given, caps each step: a block_after block never lasts longer than forMs. undefined
   * (only with a `blocks` group): no cap.
   */
  readonly forMs: number | undefined;
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

/**
 * How an aggregate counter counts (docs/protocol.md *Policy*):
 * - `calls`: every allowed consume (prefix, country, global);
 * - `unconverted`: every allowed consume, minus those converted within `pending_after` (an
 *   outcome takes its call back out with removeCall() in aggregate.ts; conversion rules);
 * - `distinct`: numbers with an allowed consume in the window (sweep rules). A number's newest
 *   call is what counts: a consume of a number already counted moves it to the newest bucket
 *   (removeCall at its previous call, addCall now) and is never denied by the rule.
 */
export type CounterKind = 'calls' | 'unconverted' | 'distinct';

export function counterKind(group: GroupName): CounterKind {
  return group === 'conversion' ? 'unconverted' : group === 'sweep' ? 'distinct' : 'calls';
}

/** The rule id of a block made by the `blocks` group on a range (docs/protocol.md rule ids). */
export const AUTO_BLOCK_RULE = 'auto:block';

/** A range's prefix group: `digits` trailing digits left out, and its rules. */
export interface RangeRules {
  readonly digits: number;
  readonly rules: readonly LimitRule[];
}

/** conversion.country.baseline: max(floor, factor × most converted calls in one window over history). */
export interface ConversionBaseline {
  readonly factor: number;
  readonly floor: number;
  readonly historyMs: number;
  /**
   * id `conversion:country:baseline`; `limit` is `floor` here, and the per-region limit is
   * computed from outcomes (src/db/outcomes.ts) and put in a copy of this rule per counter.
   */
  readonly rule: LimitRule;
}

export interface ConversionPolicy {
  /** An `answered` outcome at least this long converts (`verified` always does). */
  readonly answeredAtLeastMs: number;
  /** A converted outcome reported later than this after its decision does not take the call back. */
  readonly pendingAfterMs: number;
  /** `conversion:prefix:<window>` rules over ranges. */
  readonly prefix: RangeRules | undefined;
  /** `conversion:country:<window>` rules, per region. */
  readonly country: { readonly rules: readonly LimitRule[]; readonly baseline: ConversionBaseline | undefined } | undefined;
}

export interface BlocksPolicy {
  /** Lengths of the successive automatic blocks (ms), shortest first; the last repeats. */
  readonly escalateMs: readonly number[];
  /** As written in the file (`5m`), for printing. */
  readonly escalate: readonly string[];
  /** After this long without a block, the next block starts again at the first step. */
  readonly decayMs: number;
}

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
  /** Budgets for calls that did not convert; idle while no outcome has been reported (CONVERSION_ENGAGED_WITHIN_MS). */
  readonly conversion: ConversionPolicy | undefined;
  /** Distinct numbers per range (`sweep:prefix:<window>`, counter kind `distinct`). */
  readonly sweep: RangeRules | undefined;
  /** Automatic blocks (block_after on a number; sweep and conversion.prefix on a range) escalate and decay. */
  readonly blocks: BlocksPolicy | undefined;
  /** E.164 prefixes (`+1212555`) never denied by conversion, sweep or automatic blocks. */
  readonly safe: { readonly prefixes: readonly string[] };
}

/**
 * Conversion rules engage once the database holds an outcome recorded within this long: an app
 * that never reports outcomes would otherwise have every call count as unconverted.
 */
export const CONVERSION_ENGAGED_WITHIN_MS = 7 * 24 * 60 * 60 * 1000;

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
  /**
   * The counter's latest automatic block (`blocks` group; sweep and conversion.prefix counters
   * only), kept after it ends so that decay can tell how long the range has been quiet.
   * rate_limit_counters.blocked_until / block_level.
   */
  readonly block?: AutoBlock | null;
}

/** An automatic block: denied until `untilMs`; `level` is its 1-based step in blocks.escalate. */
export interface AutoBlock {
  readonly untilMs: number;
  readonly level: number;
}
