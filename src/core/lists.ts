// What the daemon consults before deciding: is this number (or a prefix of it) blocked, or is
// the number on the safe list? Built from the stored entries (src/db/lists.ts) on every change.
//
// Precedence, for the README: a number's own entry wins over a prefix entry (so `allow` can
// exempt one number inside a blocked range); among prefix blocks the longest matches. Expired
// entries never match, even before the next reload drops them.

export interface ListIndexEntry {
  readonly targetType: 'number' | 'prefix';
  /** Number: its hash. Prefix: `+` and digits. */
  readonly target: string;
  readonly kind: 'block' | 'allow';
  /** ms since epoch (database clock); null = until unlisted. */
  readonly expiresAtMs: number | null;
}

export interface ListMatch {
  readonly kind: 'block' | 'allow';
  readonly entry: ListIndexEntry;
}

import { longestNumberDigits } from './phone.js';
import { MIN_PREFIX_DIGITS, MIN_PREFIX_DIGITS_REASON } from './policy/types.js';

// E.164 has at most 15 digits after the `+`.
const MAX_E164_LENGTH = 16;

export class ListIndex {
  private readonly numbers = new Map<string, ListIndexEntry>();
  private readonly prefixes = new Map<string, ListIndexEntry>();
  private readonly prefixLengths: number[];

  constructor(entries: readonly ListIndexEntry[]) {
    for (const e of entries) (e.targetType === 'number' ? this.numbers : this.prefixes).set(e.target, e);
    // Longest first, so the most specific prefix block is the one reported.
    this.prefixLengths = [...new Set([...this.prefixes.keys()].map((p) => p.length))].sort((a, b) => b - a);
  }

  get size(): number {
    return this.numbers.size + this.prefixes.size;
  }

  lookup(hash: string, e164: string, nowMs: number): ListMatch | undefined {
    const own = this.numbers.get(hash);
    if (own && live(own, nowMs)) return { kind: own.kind, entry: own };
    for (const len of this.prefixLengths) {
      if (len > e164.length || len > MAX_E164_LENGTH) continue;
      const e = this.prefixes.get(e164.slice(0, len));
      if (e && live(e, nowMs)) return { kind: e.kind, entry: e };
    }
    return undefined;
  }
}

function live(e: ListIndexEntry, nowMs: number): boolean {
  return e.expiresAtMs === null || e.expiresAtMs > nowMs;
}

/** `+` and 1 to 15 digits: the form `block --prefix` and `unlist --prefix` accept. */
export function parsePrefix(text: string): string | undefined {
  const t = text.trim().replace(/[\s().-]/g, '');
  return /^\+[1-9][0-9]{0,14}$/.test(t) ? t : undefined;
}

/**
 * Why a prefix may not be stored as a block or allow entry, or undefined. A prefix is policy
 * typed by an operator, stored and printed as typed (`list`, the audit), so it must be a range,
 * not a number: one that leaves fewer than 3 digits of the longest possible number of its
 * country code would name a handful of numbers (`+4420794601` is 10 of them). Shorter prefixes
 * are ranges of at least 1,000 possible numbers, as wide as a prefix rule's key.
 */
export function prefixRangeProblem(prefix: string): string | undefined {
  const digits = prefix.slice(1);
  const longest = longestNumberDigits(digits);
  const most = longest - MIN_PREFIX_DIGITS;
  if (digits.length <= most) return undefined;
  return (
    `prefix ${prefix} is too long: numbers starting with it have at most ${longest} digits, so it leaves fewer than ${MIN_PREFIX_DIGITS}, ` +
    `and ${MIN_PREFIX_DIGITS_REASON}. Use at most ${most} digits (${prefix.slice(0, most + 1)}), or give the number itself`
  );
}
