// Naming hashing keys without revealing them (docs/protocol.md *Keys*). A fingerprint is stored in the
// database and printed in errors and `ratelimit key status`, so it must not help anyone guess
// the key or a phone number's hash: it is an HMAC under the key itself of a fixed label, cut to
// 64 bits, which is plenty to tell a handful of keys apart and useless for anything else.
import { createHmac } from 'node:crypto';

const FINGERPRINT_LABEL = 'ratelimit key fingerprint v1';
const FINGERPRINT_HEX_CHARS = 16;

/** The one suggestion, everywhere, for making a key (48 random bytes: 64 base64 characters). */
export const GENERATE_KEY_HINT = 'generate one with: openssl rand -base64 48';

/** The one suggestion, everywhere, for making a RATELIMIT_API_TOKENS token (32 random bytes, 64 hex characters). */
export const GENERATE_TOKEN_HINT = 'generate one with: openssl rand -hex 32';

/** `fp:1a2b3c4d5e6f7a8b`: the same for the same key, on every machine and release. */
export function keyFingerprint(key: string): string {
  const mac = createHmac('sha256', key).update(FINGERPRINT_LABEL, 'utf8').digest('hex');
  return `fp:${mac.slice(0, FINGERPRINT_HEX_CHARS)}`;
}
