// POST /v1/twilio/status (docs/protocol.md *Outcomes*): Twilio's voice and messaging status
// callbacks as outcomes. The signature is the only authentication (Twilio sends no token), so
// nothing in the body is believed before it is checked; the decisionId comes from the URL's
// query, which the signature covers. http.ts reads the request and writes the answer.

import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { Config } from '../../core/config.js';
import { twilioStatus, validTwilioSignature } from '../../core/twilio.js';
import { errorReply } from '../../protocol/replies.js';
import type { ErrorReply, OutcomeRecordedReply } from '../../protocol/wire.js';
import type { OutcomeRecorder } from '../outcomes.js';

/** Twilio's callbacks are a few KiB at most; a body past this is not one. */
export const TWILIO_MAX_BODY_BYTES = 16 * 1024;

export interface TwilioAnswer {
  status: number;
  body: OutcomeRecordedReply | ErrorReply | { ignored: string };
}

/**
 * The URL Twilio requested, as it signed it: behind a proxy that is the public one.
 * RATELIMIT_PUBLIC_URL names it; with RATELIMIT_TRUST_PROXY=fly the proxy's X-Forwarded-Proto
 * and Host are believed; otherwise the request's own Host over plain http.
 */
export function signedUrl(req: IncomingMessage, config: Pick<Config, 'publicUrl' | 'trustProxy'>): string {
  const target = req.url ?? '/';
  if (config.publicUrl) return `${config.publicUrl}${target}`;
  const host = typeof req.headers.host === 'string' ? req.headers.host : 'localhost';
  if (config.trustProxy === 'fly') {
    const forwarded = req.headers['x-forwarded-proto'];
    const proto = typeof forwarded === 'string' && /^https?$/.test(forwarded.split(',')[0]!.trim()) ? forwarded.split(',')[0]!.trim() : 'https';
    return `${proto}://${host}${target}`;
  }
  return `http://${host}${target}`;
}

export async function answerTwilio(
  req: IncomingMessage,
  query: URLSearchParams,
  body: string,
  opts: { config: Config; outcomes: OutcomeRecorder; logger: Logger },
): Promise<TwilioAnswer> {
  const token = opts.config.twilioAuthToken;
  if (!token) return { status: 403, body: errorReply('forbidden', 'Twilio callbacks are not accepted: TWILIO_AUTH_TOKEN is not set on this daemon') };
  const type = req.headers['content-type'];
  if (typeof type !== 'string' || !/^application\/x-www-form-urlencoded\b/i.test(type)) {
    return { status: 400, body: errorReply('invalid_message', 'a Twilio status callback is application/x-www-form-urlencoded') };
  }
  // URLSearchParams never throws: bad percent-escapes become U+FFFD, and the signature then fails.
  const form = new URLSearchParams(body);
  const pairs = [...form.entries()];
  const header = req.headers['x-twilio-signature'];
  const signature = typeof header === 'string' ? header : undefined;
  if (!validTwilioSignature(token, signature, signedUrl(req, opts.config), pairs)) {
    opts.logger.debug({ signed: signature !== undefined }, 'refused a Twilio callback without a valid signature');
    return {
      status: 403,
      body: errorReply(
        'forbidden',
        signature === undefined
          ? 'X-Twilio-Signature is missing'
          : 'X-Twilio-Signature does not match this request (check TWILIO_AUTH_TOKEN, and RATELIMIT_PUBLIC_URL behind a proxy)',
      ),
    };
  }
  const decisionId = query.get('decisionId');
  if (!decisionId)
    return { status: 400, body: errorReply('invalid_message', 'the status callback URL must carry ?decisionId=<the decisionId of the allowed consume>') };
  const params = new Map<string, string>();
  for (const [name, value] of pairs) if (!params.has(name)) params.set(name, value);
  const meaning = twilioStatus(params);
  if (meaning.kind === 'invalid') return { status: 400, body: errorReply('invalid_message', meaning.message) };
  if (meaning.kind === 'ignored') return { status: 200, body: { ignored: meaning.status } };
  const reply = await opts.outcomes.record({ decisionId: decisionId.slice(0, 256), outcome: meaning.outcome, durationMs: meaning.durationMs }, 'twilio');
  if (reply.type === 'error') return { status: reply.code === 'unknown_decision' ? 404 : reply.code === 'invalid_message' ? 400 : 500, body: reply };
  return { status: 200, body: reply };
}
