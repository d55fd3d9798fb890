// What `block`, `allow`, `unlist` and `list` share: turning `<phone> | --prefix <+digits>` into
// the stored target (a number's hash, never the number; a prefix as given), and showing an
// entry the same way everywhere (masked number or prefix, hash, kind, until, who, when, why).
import { hashPhone, hashPrefix, maskPhone, normalizePhone } from '../core/phone.js';
import { parsePrefix, prefixRangeProblem } from '../core/lists.js';
import { parseDurationMs } from '../core/duration.js';
import type { ListEntry, ListTargetType } from '../db/lists.js';
import { when } from './format.js';
import { UsageError } from './usage.js';

/** Daemons poll rate_limit_changes every second (NOTIFY is faster); the contract says 2 s. */
export const LIST_PROPAGATION_NOTE = 'every daemon applies it within 2 s';

const MAX_REASON_LENGTH = 500;

export interface TargetArgs {
  phone: string | undefined;
  prefix: string | undefined;
}

/** Before any key or connection: exactly one of <phone> and --prefix, each well formed. */
export function checkTarget(command: string, a: TargetArgs): { type: ListTargetType; text: string } {
  if (a.phone !== undefined && a.prefix !== undefined) {
    throw new UsageError(`${command} takes a number or --prefix, not both`);
  }
  if (a.prefix !== undefined) {
    const prefix = parsePrefix(a.prefix);
    if (!prefix) throw new UsageError(`--prefix must be "+" and 1 to 15 digits, e.g. +4470, got "${a.prefix}"`);
    // `unlist` must still reach an entry stored before ranges were held to 1,000 numbers.
    const narrow = command === 'unlist' ? undefined : prefixRangeProblem(prefix);
    if (narrow) throw new UsageError(narrow);
    return { type: 'prefix', text: prefix };
  }
  if (a.phone === undefined) throw new UsageError(`${command} needs a number (e.g. +14155552671) or --prefix <+digits>`);
  normalizePhone(a.phone); // an invalid number exits 2 here
  return { type: 'number', text: a.phone };
}

export interface ResolvedTarget {
  targetType: ListTargetType;
  /** What is stored: the hash, or the prefix. */
  target: string;
  /** What people see. */
  masked: string;
}

export function resolveTarget(t: { type: ListTargetType; text: string }, key: string | undefined): ResolvedTarget {
  if (t.type === 'prefix') return { targetType: 'prefix', target: t.text, masked: t.text };
  if (key === undefined) throw new Error('a number target needs the hashing key');
  const { e164 } = normalizePhone(t.text);
  return { targetType: 'number', target: hashPhone(e164, key), masked: maskPhone(e164) };
}

export function parseFor(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = parseDurationMs(text);
  if (ms === null) throw new UsageError(`--for must be a duration like 30m, 12h, 7d (at most 366d), got "${text}"`);
  return ms;
}

export function cleanReason(reason: string | undefined): string | null {
  return reason?.trim() ? reason.trim().slice(0, MAX_REASON_LENGTH) : null;
}

/** The JSON shape of one entry in `list`, `block`, `allow` and `unlist` (dates as ISO strings). */
export interface EntryView {
  targetType: ListTargetType;
  /** Masked number (`+14155552•••`) or the prefix. */
  target: string;
  /** The number's full hash (correlate with `ratelimit hash`); null for a prefix. */
  hash: string | null;
  kind: 'block' | 'allow';
  /** null: until unlisted. */
  expiresAt: string | null;
  createdBy: string;
  createdAt: string;
  reason: string | null;
}

export function entryView(e: ListEntry): EntryView {
  return {
    targetType: e.targetType,
    target: e.masked,
    hash: e.targetType === 'number' ? e.target : null,
    kind: e.kind,
    expiresAt: e.expiresAt?.toISOString() ?? null,
    createdBy: e.createdBy,
    createdAt: e.createdAt.toISOString(),
    reason: e.reason,
  };
}

export function describeTarget(e: Pick<EntryView, 'targetType' | 'target' | 'hash'>): string {
  return e.targetType === 'prefix' ? `every number starting ${e.target}` : `${e.target} (hash ${hashPrefix(e.hash ?? '')}…)`;
}

export function untilText(expiresAt: string | null, nowMs: number): string {
  if (expiresAt === null) return 'until unlisted';
  const ms = Date.parse(expiresAt);
  return `until ${when(ms, nowMs)}`;
}
