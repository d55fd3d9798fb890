import { getCountries, getCountryCallingCode, Metadata, parsePhoneNumber, ParseError, type CountryCode, type PhoneNumber } from 'libphonenumber-js/max';
import { createHmac } from 'node:crypto';
import { InvalidPhoneNumberError } from './errors.js';
import { explainRefusedSpelling } from './phone-spelling.js';
import { MIN_PREFIX_DIGITS, NON_GEOGRAPHIC_CODES, NUMBER_TYPES, type NumberType } from './policy/types.js';

export interface NormalizedPhone {
  /** E.164, e.g. +14155552671. Never stored, never logged. */
  e164: string;
  /** ISO 3166-1 alpha-2 country when libphonenumber can tell (fictional +1555… numbers: undefined). */
  region: string | undefined;
}

// Longer input is never a phone number; refusing it early bounds the parser's work on hostile input.
const MAX_INPUT_LENGTH = 64;
// Formatting people actually type. Letters (vanity numbers, "ext") and anything else are refused
// rather than guessed at, so two spellings can never hash to different keys by accident.
const ALLOWED_CHARS = /^\+[0-9 ().\-\u00a0]+$/;

const PARSE_ERRORS: Record<string, string> = {
  INVALID_COUNTRY: 'unknown country calling code',
  NOT_A_NUMBER: 'not a phone number',
  TOO_SHORT: 'too short',
  TOO_LONG: 'too long',
  INVALID_LENGTH: 'wrong number of digits',
};

/**
 * Normalises a number typed by a stranger to E.164. Accepts every *possible* number (right length
 * for its country), not only *valid* ones: support staff test with fictional +1555… numbers.
 */
export function normalizePhone(input: unknown): NormalizedPhone {
  const parsed = parseStrict(input);
  return { e164: parsed.number, region: parsed.country };
}

export interface TypedPhone extends NormalizedPhone {
  /** libphonenumber's type (`PREMIUM_RATE` -> `premium_rate`); undefined when it cannot tell (not a valid number of its country, e.g. fictional +1555… numbers). */
  type: NumberType | undefined;
}

const KNOWN_TYPES: ReadonlySet<string> = new Set(NUMBER_TYPES);

/**
 * normalizePhone and the number's type from one parse: the decision path needs both, and a
 * second parse of the E.164 form cost ~5% of the daemon's time (the country of a +1 number is
 * found by trying each NANP country's patterns).
 */
export function normalizePhoneWithType(input: unknown): TypedPhone {
  const parsed = parseStrict(input);
  // Before libphonenumber's own type: it calls +881 numbers mobile and +882 ones voip.
  if (NON_GEOGRAPHIC_CODES.has(parsed.countryCallingCode)) return { e164: parsed.number, region: parsed.country, type: 'non_geographic' };
  const name = parsed.getType()?.toLowerCase();
  return { e164: parsed.number, region: parsed.country, type: name !== undefined && KNOWN_TYPES.has(name) ? (name as NumberType) : undefined };
}

function parseStrict(input: unknown): PhoneNumber {
  if (typeof input !== 'string') {
    throw new InvalidPhoneNumberError('phone number must be a string');
  }
  const text = input.trim();
  if (text.length === 0) throw new InvalidPhoneNumberError('phone number is empty');
  if (text.length > MAX_INPUT_LENGTH) {
    throw new InvalidPhoneNumberError(`phone number is longer than ${MAX_INPUT_LENGTH} characters`);
  }
  if (!ALLOWED_CHARS.test(text)) throw new InvalidPhoneNumberError(explainRefusedSpelling(text));
  let parsed;
  try {
    parsed = parsePhoneNumber(text, { extract: false });
  } catch (err) {
    const reason = err instanceof ParseError ? (PARSE_ERRORS[err.message] ?? err.message) : 'unparseable';
    throw new InvalidPhoneNumberError(`invalid phone number: ${reason}`);
  }
  if (!parsed.isPossible()) {
    throw new InvalidPhoneNumberError('invalid phone number: wrong number of digits for its country');
  }
  return parsed;
}

/** HMAC-SHA256 of the E.164 form, hex. The only form in which a number reaches storage. */
export function hashPhone(e164: string, key: string): string {
  return createHmac('sha256', key).update(e164, 'utf8').digest('hex');
}

const MASK = '\u2022';

/**
 * For humans: `+14155552671` → `+14155552•••`: the number's 1,000-number range (its range key
 * with 3 digits, src/core/policy/counters.ts) and bullets for the digits it leaves out, so a
 * mask never shows a digit a range key does not already show. Too-short input shows nothing.
 */
export function maskPhone(e164: string): string {
  const digits = e164.startsWith('+') ? e164.slice(1) : e164;
  const shown = Math.max(0, digits.length - MIN_PREFIX_DIGITS);
  return `+${digits.slice(0, shown)}${MASK.repeat(digits.length - shown)}`;
}

// E.164: at most 15 digits, country code included.
const MAX_E164_DIGITS = 15;
let longestNational: Map<string, number> | undefined;

/** The longest possible national number of each calling code (libphonenumber's metadata). */
function longestNationalByCallingCode(): Map<string, number> {
  if (longestNational) return longestNational;
  const metadata = new Metadata();
  const out = new Map<string, number>();
  for (const country of getCountries()) {
    metadata.selectNumberingPlan(country);
    const lengths = metadata.numberingPlan?.possibleLengths() ?? [];
    const code = getCountryCallingCode(country);
    out.set(code, Math.max(out.get(code) ?? 0, ...lengths));
  }
  return (longestNational = out);
}

/** Non-geographic codes (+800, +882, ...) are not any country's: libphonenumber selects them by code. */
function longestNonGeographic(code: string): number | undefined {
  try {
    const metadata = new Metadata();
    (metadata.selectNumberingPlan as (country: CountryCode | undefined, callingCode: string) => void)(undefined, code);
    const lengths = metadata.numberingPlan?.possibleLengths() ?? [];
    return lengths.length > 0 ? Math.max(...lengths) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The most digits (country code included) a possible number starting with `digits` has: what a
 * prefix must leave room in for its range to hold 1,000 numbers. Calling codes are prefix-free,
 * so at most one of the first three digits' prefixes is one; none known: E.164's 15.
 */
export function longestNumberDigits(digits: string): number {
  const national = longestNationalByCallingCode();
  for (let n = 1; n <= 3 && n <= digits.length; n++) {
    const code = digits.slice(0, n);
    const longest = national.get(code) ?? longestNonGeographic(code);
    if (longest !== undefined) return Math.min(MAX_E164_DIGITS, code.length + longest);
  }
  return MAX_E164_DIGITS;
}

/** A short, log-safe handle on a hash (enough to correlate with `ratelimit hash`). */
export function hashPrefix(hash: string): string {
  return hash.slice(0, 12);
}
