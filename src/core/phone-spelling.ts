// Why a typed number was refused before parsing (issue #13): the refusal itself is deliberate
// (see ALLOWED_CHARS in phone.ts: guessing at letters, extensions or stray characters could give
// one number two hashes), but "must be in international format" told people with a vanity
// number or an extension nothing they could act on. This only explains; it never accepts.

const EXAMPLE = '+14155552671';
const ALLOWED = '"+", digits, spaces and ( ) . -';

// An extension after the number: "ext 12", "ext. 12", "extension 12", "x12", "#12", ";ext=12".
const EXTENSION = /\d[\s.,-]*(?:ext(?:ension)?\.?|x|#|;\s*ext=)\s*\d{1,10}$/i;
// Phone keypad letters (ITU E.161), to turn a vanity number into its digits.
const KEYPAD = 'ABC=2, DEF=3, GHI=4, JKL=5, MNO=6, PQRS=7, TUV=8, WXYZ=9';
const FORMATTED_DIGITS = /^[0-9 ().\-\u00a0]+$/;

function describeChar(ch: string): string {
  const code = ch.codePointAt(0)!;
  const hex = `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  return code > 0x20 && code < 0x7f ? `"${ch}"` : `${JSON.stringify(ch)} (${hex})`;
}

/**
 * The message for a trimmed, non-empty input that is not "+" followed by digits and formatting.
 * Checks run from the most specific diagnosis to the most general, so "++1…" is called a doubled
 * "+", "+1… ext. 12" an extension and not letters, "+1… <b>" a stray "<" and not letters.
 */
export function explainRefusedSpelling(text: string): string {
  if (text === '+') return `phone number has no digits after "+": type the country code and number, e.g. ${EXAMPLE}`;
  if (/^\+[\s\u00a0]*\+/.test(text)) {
    return `phone number starts with more than one "+": type a single "+" then the country code and digits, e.g. ${EXAMPLE}`;
  }
  if (EXTENSION.test(text)) {
    return `phone number has an extension: extensions are not accepted; send the number without it, e.g. ${EXAMPLE}`;
  }
  // A misplaced "+" and letters have messages of their own below.
  const stray = [...text].find((ch) => ch !== '+' && !/\p{L}/u.test(ch) && !FORMATTED_DIGITS.test(ch));
  if (stray !== undefined) {
    return `phone number contains ${describeChar(stray)}, which is not allowed: use only ${ALLOWED}, e.g. ${EXAMPLE}`;
  }
  if (/\p{L}/u.test(text)) {
    // The number is not echoed, even converted: messages reach logs, and numbers never may.
    return `phone number contains letters: letters are not accepted; type the digits instead (for a vanity number, the keypad's: ${KEYPAD})`;
  }
  const plusAt = text.indexOf('+', 1);
  if (plusAt > 0) {
    return `phone number has a "+" at position ${plusAt + 1}: "+" may only come first, before the country code, e.g. ${EXAMPLE}`;
  }
  // Only digits and formatting, without the leading "+": a national number.
  if (/^00/.test(text)) {
    return `phone number must be in international format: replace the leading "00" with "+", e.g. ${EXAMPLE}`;
  }
  return `phone number must be in international format: add "+" and the country code in front (e.g. +1 for the US and Canada, +44 for the UK): ${EXAMPLE}`;
}
