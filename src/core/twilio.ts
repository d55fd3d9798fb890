// Twilio status callbacks (docs/protocol.md *Outcomes*): the request signature and what each
// status means as an outcome. Pure: the HTTP route (src/daemon/transport/twilio.ts) reads the
// request and hands the pieces here.
//
// The signature is Twilio's documented scheme ("Validating Requests", twilio.com/docs/usage/security):
// base64(HMAC-SHA1(auth token, the full URL Twilio requested + every POST parameter's name and
// value, sorted by name)). Written here rather than taken from the `twilio` package: that package
// is the whole REST client (dozens of dependencies) for one HMAC, and the scheme is short and
// held to Twilio's published example in test/core/twilio.test.ts. As twilio-node does, a URL is
// also tried with its default port added or removed (Twilio may sign either form).
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The outcomes a status callback can give (docs/protocol.md; `verified` only the service knows). */
export type TwilioOutcome = 'answered' | 'unanswered' | 'failed';

/** The signature Twilio sends in X-Twilio-Signature for this URL and these form parameters. */
export function twilioSignature(authToken: string, url: string, params: ReadonlyArray<readonly [string, string]>): string {
  // Sorted by name (code unit order, as Twilio's libraries sort); a repeated name's values in
  // order of value, each as name+value.
  const sorted = [...params].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const hmac = createHmac('sha1', authToken).update(url, 'utf8');
  for (const [name, value] of sorted) hmac.update(name, 'utf8').update(value, 'utf8');
  return hmac.digest('base64');
}

/** The URL as given, and with its scheme's default port added or removed. */
function urlVariants(url: string): string[] {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return [url];
  }
  const defaultPort = u.protocol === 'https:' ? '443' : u.protocol === 'http:' ? '80' : undefined;
  if (!defaultPort) return [url];
  const explicit = /^[a-z]+:\/\/[^/?#]*:\d+/i.test(url);
  if (explicit) {
    // new URL() drops a default port: its href is the form without it.
    return u.port === '' ? [url, u.href] : [url];
  }
  const withPort = url.replace(/^([a-z]+:\/\/[^/?#]*)/i, `$1:${defaultPort}`);
  return [url, withPort];
}

/** Whether `signature` is Twilio's for this request. Constant-time in the signature's content. */
export function validTwilioSignature(authToken: string, signature: string | undefined, url: string, params: ReadonlyArray<readonly [string, string]>): boolean {
  if (authToken.length === 0 || signature === undefined || signature.length === 0 || signature.length > 64) return false;
  const given = Buffer.from(signature, 'utf8');
  let ok = false;
  for (const candidate of urlVariants(url)) {
    const expected = Buffer.from(twilioSignature(authToken, candidate, params), 'utf8');
    if (expected.length === given.length && timingSafeEqual(expected, given)) ok = true;
  }
  return ok;
}

export type TwilioStatus =
  | { kind: 'outcome'; outcome: TwilioOutcome; durationMs?: number; status: string }
  /** An intermediate status (queued, ringing, sent, …) or one that is no outcome (delivered). */
  | { kind: 'ignored'; status: string }
  | { kind: 'invalid'; message: string };

// Voice (CallStatus): the final statuses are outcomes, the rest are on the way to one.
const CALL_UNANSWERED = new Set(['no-answer', 'busy', 'canceled']);
const CALL_INTERMEDIATE = new Set(['queued', 'initiated', 'ringing', 'in-progress']);
// Messaging (MessageStatus). `delivered` (and `read`) say the message reached the handset, not
// that the code in it was entered: a delivered message converts only when the service reports
// `verified`, so delivery is no outcome. Until then (and after `pending_after`) it is unconverted.
const MESSAGE_FAILED = new Set(['failed', 'undelivered']);
const MESSAGE_NO_OUTCOME = new Set([
  'accepted',
  'scheduled',
  'queued',
  'sending',
  'sent',
  'delivered',
  'read',
  'receiving',
  'received',
  'canceled',
  'partially_delivered',
]);
// AnsweredBy (answering machine detection): a machine or a fax is no person: unanswered, like voicemail.
const NOT_A_PERSON = /^(machine_|fax$)/;
// CallDuration is whole seconds; a day is far past any real call.
const MAX_CALL_SECONDS = 86_400;

/**
 * What a status callback's parameters mean. MessageStatus wins when both are present (Twilio's
 * messaging callbacks carry only it; voice ones only CallStatus).
 */
export function twilioStatus(params: ReadonlyMap<string, string>): TwilioStatus {
  const message = params.get('MessageStatus') ?? params.get('SmsStatus');
  if (message !== undefined) {
    const status = message.toLowerCase();
    if (MESSAGE_FAILED.has(status)) return { kind: 'outcome', outcome: 'failed', status };
    if (MESSAGE_NO_OUTCOME.has(status)) return { kind: 'ignored', status };
    return { kind: 'invalid', message: `unknown MessageStatus "${message.slice(0, 40)}"` };
  }
  const call = params.get('CallStatus');
  if (call === undefined) return { kind: 'invalid', message: 'neither CallStatus nor MessageStatus: not a Twilio status callback' };
  const status = call.toLowerCase();
  if (CALL_INTERMEDIATE.has(status)) return { kind: 'ignored', status };
  if (CALL_UNANSWERED.has(status)) return { kind: 'outcome', outcome: 'unanswered', status };
  if (status === 'failed') return { kind: 'outcome', outcome: 'failed', status };
  if (status !== 'completed') return { kind: 'invalid', message: `unknown CallStatus "${call.slice(0, 40)}"` };
  const answeredBy = params.get('AnsweredBy');
  if (answeredBy !== undefined && NOT_A_PERSON.test(answeredBy)) return { kind: 'outcome', outcome: 'unanswered', status };
  const seconds = params.get('CallDuration');
  if (seconds === undefined) return { kind: 'invalid', message: 'CallStatus completed without CallDuration' };
  if (!/^\d{1,6}$/.test(seconds) || Number(seconds) > MAX_CALL_SECONDS) return { kind: 'invalid', message: 'CallDuration must be whole seconds' };
  return { kind: 'outcome', outcome: 'answered', durationMs: Number(seconds) * 1000, status };
}
