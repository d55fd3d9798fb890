// Decision ids (docs/protocol.md *Outcomes*): the opaque `decisionId` of every allowed consume.
// Self-contained and authenticated, so the consume path writes nothing for it and an outcome
// reported days later (by the service, or through a Twilio callback URL) can still be attributed
// to the number's hash, its 1,000-number range and its country.
//
// An id is base64url(version ‖ nonce ‖ AES-256-GCM(payload) ‖ tag), the version byte being the
// additional data. The payload holds the number's hash (the key in force then), its region, its
// range (the E.164 digits without the last three, as an integer) and the decision instant. It is
// encrypted, not only signed, because ids travel in callback URLs and logs: without the key an id
// tells nothing about the number, not even its country. The AEAD key is derived with HKDF from
// PHONE_ENCRYPTION_KEY under a fixed label, so the hashing key itself never meets AES; ids made
// under PHONE_ENCRYPTION_KEY_PREVIOUS still decode during a rotation.
import { createCipheriv, createDecipheriv, hkdfSync, randomFillSync } from 'node:crypto';

const VERSION = 1;
const HKDF_INFO = 'ratelimit decision id v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HASH_BYTES = 32;
// hash, region (2 ASCII letters or two zero bytes), range (6-byte integer), instant (6-byte ms).
const PAYLOAD_BYTES = HASH_BYTES + 2 + 6 + 6;
const ID_BYTES = 1 + NONCE_BYTES + PAYLOAD_BYTES + TAG_BYTES;
/** The length of every decision id, in characters. */
export const DECISION_ID_LENGTH = Math.ceil((ID_BYTES * 4) / 3);

/** How long after its decision an outcome may be reported; older ids are `unknown_decision`. */
export const DECISION_ID_HORIZON_MS = 7 * 24 * 60 * 60 * 1000;
/** An id dated this far after the clock reading it is refused (daemons' clocks differ a little). */
const FUTURE_SKEW_MS = 5 * 60 * 1000;
/** Digits of the range label left off the number: a range is 1,000 consecutive numbers. */
export const RANGE_DIGITS = 3;

export interface DecisionFacts {
  /** HMAC-SHA256 hex of the E.164 number (src/core/phone.ts hashPhone). */
  hash: string;
  region: string | undefined;
  /** The number without its last RANGE_DIGITS digits, e.g. `+1415555267` → `+1415555`. */
  range: string;
  /** The decision instant, ms since epoch. */
  atMs: number;
}

export type DecodedDecision =
  | { ok: true; facts: DecisionFacts; /** Made under the previous key (during a rotation). */ previousKey: boolean }
  | { ok: false; why: 'malformed' | 'unknown' | 'expired' };

/** The 1,000-number range of an E.164 number, as prefix rules with `digits: 3` key it. */
export function rangeLabel(e164: string): string {
  return e164.slice(0, Math.max(2, e164.length - RANGE_DIGITS));
}

const isUpper = (c: number) => c >= 65 && c <= 90;

function deriveKey(phoneKey: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(phoneKey, 'utf8'), Buffer.alloc(0), HKDF_INFO, 32));
}

// Nonces are random (96 bits, GCM's own size), drawn from the system's generator in blocks: one
// call per NONCES_PER_FILL ids instead of one per id, which cost as much as the encryption.
const NONCES_PER_FILL = 1024;

export class DecisionIds {
  private readonly keys: Buffer[];
  private readonly nonces = Buffer.alloc(NONCE_BYTES * NONCES_PER_FILL);
  private nextNonce = NONCES_PER_FILL;

  constructor(phoneKey: string, previousPhoneKey?: string) {
    this.keys = [deriveKey(phoneKey), ...(previousPhoneKey ? [deriveKey(previousPhoneKey)] : [])];
  }

  encode(f: DecisionFacts): string {
    // One buffer for the whole id, the payload sealed in place: this runs for every allowed consume.
    const out = Buffer.allocUnsafe(ID_BYTES);
    out[0] = VERSION;
    if (this.nextNonce === NONCES_PER_FILL) {
      randomFillSync(this.nonces);
      this.nextNonce = 0;
    }
    this.nonces.copy(out, 1, this.nextNonce * NONCE_BYTES, ++this.nextNonce * NONCE_BYTES);
    const payload = out.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + PAYLOAD_BYTES);
    if (payload.write(f.hash, 0, HASH_BYTES, 'hex') !== HASH_BYTES) payload.fill(0, 0, HASH_BYTES);
    const r = f.region;
    if (r !== undefined && r.length === 2 && isUpper(r.charCodeAt(0)) && isUpper(r.charCodeAt(1))) payload.write(r, HASH_BYTES, 2, 'latin1');
    else payload.fill(0, HASH_BYTES, HASH_BYTES + 2);
    const range = f.range.length > 1 && f.range.length <= 15 ? Number(f.range.slice(1)) : 0;
    payload.writeUIntBE(Number.isSafeInteger(range) && range > 0 && range < 2 ** 48 ? range : 0, HASH_BYTES + 2, 6);
    payload.writeUIntBE(Math.max(0, Math.min(f.atMs, 2 ** 48 - 1)), HASH_BYTES + 8, 6);
    const cipher = createCipheriv('aes-256-gcm', this.keys[0]!, out.subarray(1, 1 + NONCE_BYTES), { authTagLength: TAG_BYTES });
    cipher.setAAD(out.subarray(0, 1));
    cipher.update(payload).copy(payload);
    cipher.final();
    cipher.getAuthTag().copy(out, 1 + NONCE_BYTES + PAYLOAD_BYTES);
    return out.toString('base64url');
  }

  /** Never throws: every string from the network gets an answer. */
  decode(id: unknown, nowMs: number): DecodedDecision {
    if (typeof id !== 'string' || id.length !== DECISION_ID_LENGTH || !/^[A-Za-z0-9_-]+$/.test(id)) return { ok: false, why: 'malformed' };
    const raw = Buffer.from(id, 'base64url');
    // One id, one spelling: base64url decoding forgives, so a second spelling of the same bytes
    // would otherwise be a second decision id for one decision (and count twice).
    if (raw.length !== ID_BYTES || raw.toString('base64url') !== id || raw[0] !== VERSION) return { ok: false, why: 'malformed' };
    const nonce = raw.subarray(1, 1 + NONCE_BYTES);
    const sealed = raw.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + PAYLOAD_BYTES);
    const tag = raw.subarray(1 + NONCE_BYTES + PAYLOAD_BYTES);
    for (let i = 0; i < this.keys.length; i++) {
      let payload: Buffer;
      try {
        const decipher = createDecipheriv('aes-256-gcm', this.keys[i]!, nonce, { authTagLength: TAG_BYTES });
        decipher.setAAD(raw.subarray(0, 1));
        decipher.setAuthTag(tag);
        payload = Buffer.concat([decipher.update(sealed), decipher.final()]);
      } catch {
        continue;
      }
      const atMs = payload.readUIntBE(HASH_BYTES + 8, 6);
      if (atMs > nowMs + FUTURE_SKEW_MS) return { ok: false, why: 'unknown' };
      if (atMs < nowMs - DECISION_ID_HORIZON_MS) return { ok: false, why: 'expired' };
      const region = payload[HASH_BYTES] === 0 ? undefined : payload.toString('latin1', HASH_BYTES, HASH_BYTES + 2);
      const range = payload.readUIntBE(HASH_BYTES + 2, 6);
      return {
        ok: true,
        facts: { hash: payload.toString('hex', 0, HASH_BYTES), region, range: range === 0 ? '' : `+${range}`, atMs },
        previousKey: i > 0,
      };
    }
    return { ok: false, why: 'unknown' };
  }
}
