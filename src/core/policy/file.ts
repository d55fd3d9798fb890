// Longer than 350 lines because the schema, the line mapping and the range/reserved-key checks
// read one parsed document together; split, each would re-walk it.
// A policy file (docs/protocol.md *Policy*) to a validated `Policy`, or every problem with its line.
// The `yaml` parser keeps node positions, so a zod issue's path is mapped back to the line of
// the key or value it is about: an operator fixing a file must not have to guess, and a typo
// (an unknown key) must never silently drop a rule. Printing a policy back (print.ts) and the
// changes between two (changes.ts) are re-exported here: one module for the CLI's policy commands.

import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import * as z from 'zod';
import { getCountries } from 'libphonenumber-js/max';
import { parseDurationMs } from '../duration.js';
import { DECISION_ID_HORIZON_MS } from '../decision-id.js';
import { parsePrefix } from '../lists.js';
import { longestNumberDigits } from '../phone.js';
import {
  DEFAULT_BLOCK_TYPES,
  MIN_PREFIX_DIGITS,
  MIN_PREFIX_DIGITS_REASON,
  NUMBER_TYPES,
  UNKNOWN_REGION,
  type GroupName,
  type BlocksPolicy,
  type ConversionPolicy,
  type LimitRule,
  type NumberType,
  type Policy,
  type RangeRules,
} from './types.js';
import { policyWarnings } from './warnings.js';

export { formatPolicy, policyToJson, policyToYaml } from './print.js';
export { describePolicyChanges } from './changes.js';

export interface PolicyProblem {
  /** 1-based, like an editor's. */
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

export type ParsedPolicyFile =
  | {
      readonly ok: true;
      readonly policy: Policy;
      readonly warnings: string[];
      /** Only with `stored`: what was changed to enforce the policy (a prefix range raised to 1,000 numbers). */
      readonly adjustments: string[];
    }
  | { readonly ok: false; readonly problems: PolicyProblem[] };

// Bounds that keep a valid file enforceable: a number keeps its latest `max(limit)` call times
// (the same bound as RATE_LIMIT_PHONE_MAX) and its latest `denials` denial times; IP limits match
// RATE_LIMIT_IP_MAX; aggregate counters are Postgres INTEGERs.
const MAX_NUMBER_LIMIT = 1000;
const MAX_IP_LIMIT = 1_000_000;
const MAX_AGGREGATE_LIMIT = 1_000_000_000;
const MAX_PREFIX_DIGITS = 6;
// Twilio's safe list takes 1,000 prefixes; ten times that still matches in microseconds and keeps
// a policy file well under MAX_FILE_CHARS, and more is a list of numbers, not of ranges.
const MAX_SAFE_PREFIXES = 10_000;
// Steps past the third are rare (Twilio's and Vonage's blocks have three or four); ten bounds
// block_level, and a longer list is a paste gone wrong.
const MAX_ESCALATE_STEPS = 10;
// A baseline factor is unconverted calls allowed per converted call at the busiest window. An app
// that converts 10% of its calls needs 9; more than 10 leaves the rule nothing to stop, and is
// most likely a percentage (20 for 0.2).
const MAX_BASELINE_FACTOR = 10;
// A policy is a few dozen lines; anything this large is the wrong file, and refusing it bounds
// the parser's work.
const MAX_FILE_CHARS = 1 << 20;

const REGIONS: ReadonlySet<string> = new Set(getCountries());
const DURATION_HINT = 'use 500ms, 30s, 15m, 1h, 1d or plain milliseconds, at most 366d';

function regionProblem(code: string): string | undefined {
  if (REGIONS.has(code)) return undefined;
  if (REGIONS.has(code.toUpperCase())) return `"${code}": write region codes in upper case (${code.toUpperCase()})`;
  return `"${code}" is not an ISO 3166-1 alpha-2 region libphonenumber knows (e.g. US, GB, NG)`;
}

const positiveInt = (max: number) =>
  z
    .number()
    .int({ error: `must be an integer from 1 to ${max}` })
    .min(1, { error: `must be an integer from 1 to ${max}` })
    .max(max, { error: `must be an integer from 1 to ${max}` });

// 1 and 2 pass here so that parsePolicyFile gives them their own reason (and enforces a stored
// one at the floor); the range said is the one a file may use.
const DIGITS_RANGE = { error: `must be an integer from ${MIN_PREFIX_DIGITS} to ${MAX_PREFIX_DIGITS}` };
const prefixDigits = z.number().int(DIGITS_RANGE).min(1, DIGITS_RANGE).max(MAX_PREFIX_DIGITS, DIGITS_RANGE);
// The new range groups (conversion.prefix, sweep.prefix) were never stored narrower: refused outright.
const rangeDigits = z
  .number()
  .int(DIGITS_RANGE)
  .min(MIN_PREFIX_DIGITS, { error: (issue) => `must be at least ${MIN_PREFIX_DIGITS}, not ${String(issue.input)}: ${MIN_PREFIX_DIGITS_REASON}` })
  .max(MAX_PREFIX_DIGITS, DIGITS_RANGE);

const duration = z.custom<string | number>((v) => (typeof v === 'string' || typeof v === 'number') && parseDurationMs(String(v)) !== null, {
  error: (issue) => `${JSON.stringify(issue.input)} is not a duration (${DURATION_HINT})`,
});

/** The window as written (YAML may hand it over as a number: `window: 60000`). */
const windowText = (w: string | number): string => String(w).trim();

const limitRule = (max: number) => z.strictObject({ limit: positiveInt(max), window: duration });

// Two rules over one window would share an id (and one of them could never decide).
const limitList = (max: number) =>
  z
    .array(limitRule(max))
    .min(1, { error: 'needs at least one {limit, window}; remove the group to have no rule' })
    .superRefine((rules, ctx) => {
      const seen = new Map<number, string>();
      rules.forEach((rule, i) => {
        const text = windowText(rule.window);
        const ms = parseDurationMs(text) as number;
        const first = seen.get(ms);
        if (first === undefined) seen.set(ms, text);
        else ctx.addIssue({ code: 'custom', path: [i, 'window'], message: `window ${text} repeats window ${first} of this list; each window may appear once` });
      });
    });

const shadow = z.boolean().optional();

/**
 * Why a `safe.prefixes` entry is refused, or undefined. The entry itself is not repeated (the
 * line and column point at it): a mistyped entry may be a whole phone number, and problems are
 * printed and logged.
 */
function safePrefixProblem(value: unknown): string | undefined {
  if (typeof value === 'number') return "is a number: write prefixes in quotes ('+1212555'); unquoted, YAML reads +1212555 as the number 1212555";
  if (typeof value !== 'string') return `must be an E.164 prefix in quotes, e.g. '+1212555', not ${value === null ? 'nothing' : typeof value}`;
  if (parsePrefix(value) !== value) return "is not an E.164 prefix: '+', the country code and more digits, nothing else (e.g. '+1212555')";
  // The policy is stored and printed in the clear (policy show, the audit), so a safe prefix must
  // be a range of at least 1,000 numbers like any other stored key: a longer one would put a
  // number (or one of ten) in the database as typed. Single numbers go on the allow list, which
  // stores only their hash and makes them safe as well.
  const digits = value.length - 1;
  const longest = longestNumberDigits(value.slice(1));
  if (digits > longest - MIN_PREFIX_DIGITS) {
    return (
      `is too long: numbers under it have at most ${longest} digits, so it leaves fewer than ${MIN_PREFIX_DIGITS} and would name fewer than 1,000 numbers ` +
      `(${MIN_PREFIX_DIGITS_REASON}). Use at most ${longest - MIN_PREFIX_DIGITS} digits, or for one number \`ratelimit allow <number>\` (stored as a hash; allowed numbers are safe too)`
    );
  }
  return undefined;
}

const safePrefix = z.unknown().superRefine((value, ctx) => {
  const problem = safePrefixProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** A list of durations, each longer than the one before (blocks.escalate). */
const escalateList = z
  .array(duration)
  .min(1, { error: 'list at least one block length, e.g. [5m, 1h, 12h]; remove `blocks` to have no automatic blocks' })
  .max(MAX_ESCALATE_STEPS, { error: `list at most ${MAX_ESCALATE_STEPS} block lengths` })
  .superRefine((steps, ctx) => {
    for (let i = 1; i < steps.length; i++) {
      const before = parseDurationMs(String(steps[i - 1])) as number;
      const now = parseDurationMs(String(steps[i])) as number;
      if (now <= before) {
        ctx.addIssue({
          code: 'custom',
          path: [i],
          message: `${windowText(steps[i] as string | number)} is not longer than ${windowText(steps[i - 1] as string | number)} before it: each block must last longer than the one before (shortest first)`,
        });
      }
    }
  });

const baseline = z
  .strictObject({
    factor: z
      .number()
      .gt(0, { error: `must be a ratio above 0 and at most ${MAX_BASELINE_FACTOR} (0.2: unconverted calls up to 20% of the most converted)` })
      .max(MAX_BASELINE_FACTOR, {
        error: (issue) =>
          `must be a ratio above 0 and at most ${MAX_BASELINE_FACTOR}, not ${String(issue.input)}` +
          (typeof issue.input === 'number' && issue.input <= 100 ? ` (for ${String(issue.input)}% write ${String(issue.input / 100)})` : ''),
      }),
    floor: positiveInt(MAX_AGGREGATE_LIMIT),
    window: duration,
    history: duration,
  })
  .superRefine((b, ctx) => {
    const windowMs = parseDurationMs(String(b.window)) as number;
    const historyMs = parseDurationMs(String(b.history)) as number;
    if (historyMs < windowMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['history'],
        message: `${windowText(b.history)} is shorter than the window ${windowText(b.window)}: the history must hold at least one whole window (e.g. window: 1d, history: 14d)`,
      });
    }
  });

const regionList = z
  .array(
    z.string().superRefine((code, ctx) => {
      const problem = regionProblem(code);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
  )
  .min(1, { error: 'list at least one region; remove `countries` to allow every country' });

const fileSchema = z.strictObject({
  number: z
    .strictObject({
      limits: limitList(MAX_NUMBER_LIMIT).optional(),
      // `for` may be left out when a `blocks` group decides how long blocks last (crossProblems);
      // with one, `for` caps each escalation step.
      block_after: z.strictObject({ denials: positiveInt(MAX_NUMBER_LIMIT), within: duration, for: duration.optional() }).optional(),
      shadow,
    })
    .refine((g) => g.limits !== undefined || g.block_after !== undefined, {
      error: 'needs `limits` or `block_after`; remove the group to have no rule',
    })
    .optional(),
  prefix: z.strictObject({ digits: prefixDigits, limits: limitList(MAX_AGGREGATE_LIMIT), shadow }).optional(),
  country: z
    .strictObject({
      limits: limitList(MAX_AGGREGATE_LIMIT).optional(),
      overrides: z
        .record(z.string(), limitList(MAX_AGGREGATE_LIMIT))
        .superRefine((overrides, ctx) => {
          for (const code of Object.keys(overrides)) {
            const problem = code === UNKNOWN_REGION ? undefined : regionProblem(code);
            if (problem) ctx.addIssue({ code: 'custom', path: [code], message: `${problem}, or ZZ for numbers of unknown region`, params: { at: 'key' } });
          }
        })
        .optional(),
      shadow,
    })
    .refine((g) => g.limits !== undefined || g.overrides !== undefined, {
      error: 'needs `limits` or `overrides`; remove the group to have no rule',
    })
    .optional(),
  global: z.strictObject({ limits: limitList(MAX_AGGREGATE_LIMIT), shadow }).optional(),
  ip: z.strictObject({ limits: limitList(MAX_IP_LIMIT), shadow }).optional(),
  destinations: z
    .strictObject({
      countries: z
        .strictObject({ allow: regionList.optional(), deny: regionList.optional() })
        .refine((c) => (c.allow === undefined) !== (c.deny === undefined), {
          error: 'give either `allow` or `deny`, not both (and not neither)',
        })
        .optional(),
      block_types: z
        .array(z.enum(NUMBER_TYPES, { error: (issue) => `${JSON.stringify(issue.input)} is not a number type; use one of ${NUMBER_TYPES.join(', ')}` }))
        .optional(),
    })
    .optional(),
  conversion: z
    .strictObject({
      answered_at_least: duration.optional(),
      pending_after: duration
        .refine((d) => (parseDurationMs(String(d)) as number) <= DECISION_ID_HORIZON_MS, {
          error: 'must be at most 7d: outcomes are accepted for 7 days after their decision',
        })
        .optional(),
      prefix: z.strictObject({ digits: rangeDigits, unconverted: limitList(MAX_AGGREGATE_LIMIT), shadow }).optional(),
      country: z
        .strictObject({ unconverted: limitList(MAX_AGGREGATE_LIMIT).optional(), baseline: baseline.optional(), shadow })
        .refine((g) => g.unconverted !== undefined || g.baseline !== undefined, {
          error: 'needs `unconverted` or `baseline`; remove the group to have no rule',
        })
        .optional(),
      shadow,
    })
    .refine((g) => g.prefix !== undefined || g.country !== undefined, {
      error: 'needs `prefix` or `country`; remove the group to have no rule',
    })
    .optional(),
  sweep: z.strictObject({ prefix: z.strictObject({ digits: rangeDigits, distinct: limitList(MAX_AGGREGATE_LIMIT), shadow }), shadow }).optional(),
  blocks: z.strictObject({ escalate: escalateList, decay: duration }).optional(),
  safe: z
    .strictObject({
      prefixes: z.array(safePrefix).max(MAX_SAFE_PREFIXES, { error: `list at most ${MAX_SAFE_PREFIXES} prefixes; a wider prefix covers many` }),
    })
    .optional(),
});

type PolicyFile = z.infer<typeof fileSchema>;
type RawRules = readonly { limit: number; window: string | number }[];

/** `qualifier`: a region (`country:GB:1h`) or, for conversion and sweep, the subgroup (`conversion:prefix:1h`). */
function rules(group: GroupName, raw: RawRules | undefined, isShadow: boolean | undefined, qualifier?: string): LimitRule[] {
  return (raw ?? []).map((r) => {
    const window = windowText(r.window);
    const id = qualifier === undefined ? `${group}:${window}` : `${group}:${qualifier}:${window}`;
    return { id, group, limit: r.limit, windowMs: parseDurationMs(window) as number, window, shadow: isShadow ?? false };
  });
}

const ms = (d: string | number): number => parseDurationMs(String(d)) as number;

/** An answered call this long converts unless the file says otherwise (docs/protocol.md *Outcomes*). */
export const DEFAULT_ANSWERED_AT_LEAST_MS = 10_000;
/** A call with no outcome this long after its decision stays unconverted, unless the file says otherwise. */
export const DEFAULT_PENDING_AFTER_MS = 15 * 60_000;

function toConversion(file: NonNullable<PolicyFile['conversion']>): ConversionPolicy {
  const { prefix, country } = file;
  // A group's shadow covers its subgroups: one switch to trial every conversion rule.
  const prefixShadow = (file.shadow ?? false) || (prefix?.shadow ?? false);
  const countryShadow = (file.shadow ?? false) || (country?.shadow ?? false);
  const b = country?.baseline;
  return {
    answeredAtLeastMs: file.answered_at_least === undefined ? DEFAULT_ANSWERED_AT_LEAST_MS : ms(file.answered_at_least),
    pendingAfterMs: file.pending_after === undefined ? DEFAULT_PENDING_AFTER_MS : ms(file.pending_after),
    prefix: prefix && { digits: prefix.digits, rules: rules('conversion', prefix.unconverted, prefixShadow, 'prefix') },
    country: country && {
      rules: rules('conversion', country.unconverted, countryShadow, 'country'),
      baseline: b && {
        factor: b.factor,
        floor: b.floor,
        historyMs: ms(b.history),
        rule: {
          id: 'conversion:country:baseline',
          group: 'conversion',
          limit: b.floor,
          windowMs: ms(b.window),
          window: windowText(b.window),
          shadow: countryShadow,
        },
      },
    },
  };
}

function toSweep(file: NonNullable<PolicyFile['sweep']>): RangeRules {
  return { digits: file.prefix.digits, rules: rules('sweep', file.prefix.distinct, (file.shadow ?? false) || (file.prefix.shadow ?? false), 'prefix') };
}

function toBlocks(file: NonNullable<PolicyFile['blocks']>): BlocksPolicy {
  const escalate = file.escalate.map(windowText);
  return { escalateMs: escalate.map(ms), escalate, decayMs: ms(file.decay) };
}

const dedupe = <T>(items: readonly T[]): T[] => [...new Set(items)];

function toPolicy(file: PolicyFile): Policy {
  const { number, prefix, country, global, ip, destinations } = file;
  const countries = destinations?.countries;
  const blocks = file.blocks && toBlocks(file.blocks);
  const forText = number?.block_after?.for;
  return {
    number: rules('number', number?.limits, number?.shadow),
    blockAfter: number?.block_after && {
      denials: number.block_after.denials,
      withinMs: ms(number.block_after.within),
      // Without `for`, crossProblems made sure there is a `blocks` group: blocks last the
      // escalation's steps, uncapped. With both, `for` caps each step (BlockAfter.forMs).
      forMs: forText === undefined ? undefined : ms(forText),
    },
    prefix: prefix && { digits: prefix.digits, rules: rules('prefix', prefix.limits, prefix.shadow) },
    country: country && {
      rules: rules('country', country.limits, country.shadow),
      // The shadow flag of the group covers its overrides: one switch to trial the whole group.
      overrides: new Map(Object.entries(country.overrides ?? {}).map(([code, list]) => [code, rules('country', list, country.shadow, code)])),
    },
    global: rules('global', global?.limits, global?.shadow),
    ip: rules('ip', ip?.limits, ip?.shadow),
    destinations: {
      countries: countries && (countries.allow ? { mode: 'allow', regions: dedupe(countries.allow) } : { mode: 'deny', regions: dedupe(countries.deny ?? []) }),
      blockTypes: destinations?.block_types ? dedupe(destinations.block_types as NumberType[]) : [...DEFAULT_BLOCK_TYPES],
    },
    conversion: file.conversion && toConversion(file.conversion),
    sweep: file.sweep && toSweep(file.sweep),
    blocks,
    safe: { prefixes: dedupe((file.safe?.prefixes ?? []) as string[]) },
  };
}

type Path = readonly PropertyKey[];

/** The offset of the key (`wantKey`) or the value at `path`, or of the nearest node that exists. */
function locate(doc: Document, path: Path, wantKey: boolean): number {
  let node: unknown = doc.contents;
  let keyOffset: number | undefined;
  let lastOffset = 0;
  for (const segment of path) {
    if (isAlias(node)) node = node.resolve(doc);
    const here = rangeStart(node);
    if (here !== undefined) lastOffset = here;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair) return lastOffset;
      keyOffset = rangeStart(pair.key);
      node = pair.value;
      if (node === null || rangeStart(node) === undefined) return keyOffset ?? lastOffset;
    } else if (isSeq(node) && typeof segment === 'number' && node.items[segment] !== undefined) {
      keyOffset = undefined;
      node = node.items[segment];
    } else {
      return lastOffset;
    }
  }
  // A problem with a whole mapping or list, or with an empty value, is shown at its key.
  const atKey = wantKey || isMap(node) || isSeq(node) || (isScalar(node) && node.value === null);
  if (atKey && keyOffset !== undefined) return keyOffset;
  return rangeStart(node) ?? keyOffset ?? lastOffset;
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: readonly number[] | null } | null)?.range;
  return range?.[0];
}

function pathText(path: Path): string {
  let text = '';
  for (const segment of path) text += typeof segment === 'number' ? `[${segment}]` : `${text ? '.' : ''}${String(segment)}`;
  return text || '(document)';
}

const TYPE_NAMES: Record<string, string> = {
  object: 'a mapping (key: value)',
  array: 'a list',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  string: 'text',
  record: 'a mapping (key: value)',
};

function describeValue(value: unknown): string {
  if (value === null) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return JSON.stringify(value);
}

/** Every key the schema accepts at `path`, for the unknown-key hint. */
function knownKeys(path: Path): string[] {
  let schema: z.ZodType = fileSchema;
  for (const segment of [...path, '']) {
    while (schema instanceof z.ZodOptional || schema instanceof z.ZodPipe) {
      schema = schema instanceof z.ZodOptional ? (schema.unwrap() as z.ZodType) : (schema.in as z.ZodType);
    }
    if (segment === '') break;
    if (schema instanceof z.ZodObject) schema = schema.shape[String(segment)] as z.ZodType;
    else if (schema instanceof z.ZodArray) schema = schema.element as z.ZodType;
    else if (schema instanceof z.ZodRecord) schema = schema.valueType as z.ZodType;
    else return [];
    if (schema === undefined) return [];
  }
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

function problemsFromIssues(doc: Document, lines: LineCounter, issues: readonly z.core.$ZodIssue[]): PolicyProblem[] {
  const problems: PolicyProblem[] = [];
  const at = (offset: number, message: string) => {
    const { line, col } = lines.linePos(offset);
    problems.push({ line, column: col, message });
  };
  for (const issue of issues) {
    const where = pathText(issue.path);
    if (issue.code === 'unrecognized_keys') {
      const expected = knownKeys(issue.path);
      for (const key of issue.keys) {
        at(
          locate(doc, [...issue.path, key], true),
          `${pathText([...issue.path, key])}: unknown key "${key}"` + (expected.length ? ` (expected ${expected.join(', ')})` : ''),
        );
      }
    } else if (!('input' in issue) || issue.input === undefined) {
      at(locate(doc, issue.path, true), `${where}: missing`);
    } else if (issue.code === 'invalid_type') {
      at(locate(doc, issue.path, false), `${where}: must be ${TYPE_NAMES[issue.expected] ?? issue.expected}, not ${describeValue(issue.input)}`);
    } else {
      const wantKey = issue.code === 'custom' && (issue.params as { at?: string } | undefined)?.at === 'key';
      at(locate(doc, issue.path, wantKey), `${where}: ${issue.message}`);
    }
  }
  return problems;
}

/**
 * Parses and validates a policy file. Every problem is reported at once, each at its line.
 * A file with YAML syntax errors reports those only: validating what the parser salvaged from a
 * broken document would add problems that are not in the file. `stored`: the text is a policy
 * an older release accepted and stored; what this release refuses only to keep ranges wide
 * (prefix.digits below MIN_PREFIX_DIGITS) is then enforced at the floor, with a warning.
 */
export function parsePolicyFile(text: string, options: { stored?: boolean } = {}): ParsedPolicyFile {
  if (text.length > MAX_FILE_CHARS) {
    return { ok: false, problems: [{ line: 1, column: 1, message: `the file is larger than ${MAX_FILE_CHARS} characters; a policy is a few dozen lines` }] };
  }
  const lines = new LineCounter();
  // prettyErrors off: one-line messages; the position comes from the line counter.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((err) => {
      const { line, col } = lines.linePos(err.pos[0]);
      return { line, column: col, message: `YAML: ${err.message.split('\n')[0]}` };
    });
    return { ok: false, problems: sortProblems(problems) };
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    // toJS throws on alias bombs (too many alias expansions).
    return { ok: false, problems: [{ line: 1, column: 1, message: `YAML: ${(err as Error).message}` }] };
  }
  const reserved = withoutReservedKeys(data);
  const problems = reservedKeyProblems(doc, lines, reserved.found);
  const parsed = fileSchema.safeParse(reserved.data, { reportInput: true });
  const narrow = narrowPrefixDigits(reserved.data);
  if (!parsed.success) problems.push(...problemsFromIssues(doc, lines, parsed.error.issues));
  for (const cross of crossProblems(reserved.data)) {
    const { line, col } = lines.linePos(locate(doc, cross.path, cross.atKey));
    problems.push({ line, column: col, message: `${pathText(cross.path)}: ${cross.message}` });
  }
  if (narrow !== undefined && !options.stored) {
    const { line, col } = lines.linePos(locate(doc, ['prefix', 'digits'], false));
    problems.push({ line, column: col, message: `prefix.digits: must be at least ${MIN_PREFIX_DIGITS}, not ${narrow}: ${MIN_PREFIX_DIGITS_REASON}` });
  }
  if (!parsed.success || problems.length > 0) return { ok: false, problems: sortProblems(problems) };
  let policy = toPolicy(parsed.data);
  const adjustments: string[] = [];
  if (narrow !== undefined && policy.prefix) {
    // Stored by a release that allowed it: refusing it would stop every daemon, so it is
    // enforced with the narrowest range allowed (prefix counts start over) and said loudly.
    policy = { ...policy, prefix: { ...policy.prefix, digits: MIN_PREFIX_DIGITS } };
    adjustments.push(
      `prefix.digits ${narrow} is enforced as ${MIN_PREFIX_DIGITS} (${MIN_PREFIX_DIGITS_REASON}); apply a policy with digits >= ${MIN_PREFIX_DIGITS} to silence this`,
    );
  }
  return { ok: true, policy, warnings: policyWarnings(policy), adjustments };
}

const asRecord = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/**
 * Problems between groups, read from the raw document so that they are reported alongside the
 * schema's (zod skips an object's refinements once anything inside it failed).
 */
function crossProblems(data: unknown): { path: Path; message: string; atKey: boolean }[] {
  const root = asRecord(data);
  const blockAfter = asRecord(asRecord(root?.number)?.block_after);
  if (!root || !blockAfter) return [];
  const hasBlocks = root.blocks !== undefined && root.blocks !== null;
  if (blockAfter.for === undefined && !hasBlocks) {
    return [
      {
        path: ['number', 'block_after'],
        message: 'needs `for` (how long a number stays blocked, e.g. for: 24h), or a `blocks` group whose escalation decides it',
        atKey: true,
      },
    ];
  }
  return [];
}

/** `prefix.digits` when it is a whole number below MIN_PREFIX_DIGITS (other bad values are the schema's). */
function narrowPrefixDigits(data: unknown): number | undefined {
  const prefix = (data as { prefix?: unknown } | null)?.prefix;
  const digits = typeof prefix === 'object' && prefix !== null ? (prefix as { digits?: unknown }).digits : undefined;
  return typeof digits === 'number' && Number.isInteger(digits) && digits >= 1 && digits < MIN_PREFIX_DIGITS ? digits : undefined;
}

// Names that mean something to JavaScript objects. The yaml parser keeps them as plain own keys
// (it never assigns through `__proto__`), but zod's record drops a `__proto__` key without a word
// (a `country.overrides` entry would vanish), and no policy key is spelt like them: so each is
// reported as an unknown key wherever it appears, and removed before validation.
const RESERVED_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** `data` without reserved keys (fresh plain objects and arrays), and the path of each one removed. */
function withoutReservedKeys(data: unknown, path: PropertyKey[] = [], found: PropertyKey[][] = []): { data: unknown; found: PropertyKey[][] } {
  if (Array.isArray(data)) return { data: data.map((item, i) => withoutReservedKeys(item, [...path, i], found).data), found };
  if (data === null || typeof data !== 'object') return { data, found };
  const clean: Record<string, unknown> = {};
  for (const key of Object.getOwnPropertyNames(data)) {
    if (RESERVED_KEYS.has(key)) {
      found.push([...path, key]);
      continue;
    }
    clean[key] = withoutReservedKeys((data as Record<string, unknown>)[key], [...path, key], found).data;
  }
  return { data: clean, found };
}

function reservedKeyProblems(doc: Document, lines: LineCounter, found: readonly PropertyKey[][]): PolicyProblem[] {
  return found.map((path) => {
    const { line, col } = lines.linePos(locate(doc, path, true));
    const key = String(path.at(-1));
    const parent = path.slice(0, -1);
    const expected = knownKeys(parent);
    return { line, column: col, message: `${pathText(path)}: unknown key "${key}"` + (expected.length ? ` (expected ${expected.join(', ')})` : '') };
  });
}

function sortProblems(problems: PolicyProblem[]): PolicyProblem[] {
  return problems.sort((a, b) => a.line - b.line || a.column - b.column);
}
