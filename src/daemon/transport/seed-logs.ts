// The `/logs` WebSocket route, for the phone-screen seed's browser hook (webapp/lib/use-rate-limit.ts
// in acedit-ai/phone-screen; docs/phone-screen.md). That hook, which its users deploy unchanged,
// opens `<NEXT_PUBLIC_WEBSOCKET_SERVER_URL>/logs`, sends {"type":"rate_limit_check","phoneNumber":…},
// keeps a reply only when its `phoneNumber` is the very string it sent, prints `reason` verbatim
// under "Call limit reached", and shows "Limit resets in <resetTime − now>", turning a missing or
// null resetTime into "in 1 h". So this route answers in that dialect, over the same decision path
// as /ws: check only, answered as to a browser whatever the socket's credentials (minutes, the
// number's own counts), the number echoed as sent, `reason` a sentence, and a resetTime that does
// not promise an end to a block that has none.

import type { DecisionReply, ErrorReply, RequestId } from '../../protocol/wire.js';
import { errorReply, roundUpToMinute } from '../../protocol/replies.js';
import type { RequestParser } from '../../protocol/schema.js';
import type { Decider } from '../decider.js';

export const SEED_LOGS_PATH = '/logs';

/**
 * The last instant a JavaScript Date can hold (ECMA-262: 8.64e15 ms since the epoch), sent as
 * `resetTime` for what never resets (a block without an end, a forbidden destination, a string
 * that is no phone number). The seed's hook replaces a missing or null resetTime by now + 1 h, so
 * its UI would say "Limit resets in 1h 0m" for a premium-rate number; with this it says a number of
 * hours that reads as never, beside a `reason` that says so in words. A whole minute, so browser
 * rounding leaves it as it is.
 */
export const NEVER_RESETS_MS = 8_640_000_000_000_000;

const MINUTE_MS = 60_000;

/** What the seed's hook reads (and the daemon's own fields besides, for anyone looking). */
export interface SeedStatusReply {
  type: 'rate_limit_status';
  id?: RequestId | undefined;
  /** Exactly the string the client sent: the hook drops replies whose number differs. */
  phoneNumber: string;
  allowed: boolean;
  remaining: number;
  /** ms since epoch, whole minutes; NEVER_RESETS_MS when it never resets. */
  resetTime: number;
  /** Only when not allowed: a sentence the seed's UI prints as it is. */
  reason?: string;
  /** Only when not allowed: the contract's reason code (`phone_rate_limit_exceeded`, ..., or `invalid_phone_number`). */
  reasonCode?: string;
  rule?: string;
  limit?: number;
  used?: number;
  retryAfterMs?: number | null;
  region?: string | null;
  source?: string;
}

export type SeedErrorReply = ErrorReply & { phoneNumber?: string };
export type SeedReply = SeedStatusReply | SeedErrorReply;

const plural = (n: number, unit: string): string => `${n} ${unit}${n === 1 ? '' : 's'}`;

/** "42 minutes", "2 hours 5 minutes", "3 days": whole minutes, rounded up (browsers see no finer). */
export function waitWords(ms: number): string {
  const minutes = Math.max(1, Math.ceil(ms / MINUTE_MS));
  if (minutes < 60) return plural(minutes, 'minute');
  if (minutes < 48 * 60) {
    const hours = Math.floor(minutes / 60);
    const rest = minutes % 60;
    return rest === 0 ? plural(hours, 'hour') : `${plural(hours, 'hour')} ${plural(rest, 'minute')}`;
  }
  return plural(Math.ceil(minutes / (24 * 60)), 'day');
}

const NEVER = 'this does not expire';

/** Number types as a person says them (libphonenumber's names, as in `destination:<type>` rule ids). */
const TYPE_WORDS: Record<string, string> = {
  premium_rate: 'premium-rate numbers',
  shared_cost: 'shared-cost numbers',
  toll_free: 'toll-free numbers',
  voip: 'VoIP numbers',
  personal_number: 'personal numbers',
  pager: 'pagers',
  uan: 'universal access numbers',
  voicemail: 'voicemail numbers',
  mobile: 'mobile numbers',
  fixed_line: 'landlines',
  fixed_line_or_mobile: 'landlines and mobile numbers',
};

/**
 * The sentence for a denial: what stops the call, then when to try again (from the reply's
 * already rounded `retryAfterMs`), or that it does not expire. Unknown reasons (a newer policy
 * rule) still get a sentence: the UI prints whatever is here.
 */
export function reasonSentence(reason: string, rule: string | undefined, retryAfterMs: number | null): string {
  const then = retryAfterMs === null ? NEVER : `try again in ${waitWords(retryAfterMs)}`;
  switch (reason) {
    case 'phone_rate_limit_exceeded':
      return `This number has reached its call limit; ${then}`;
    case 'prefix_rate_limit_exceeded':
      return `Too many calls to numbers close to this one; ${then}`;
    case 'country_rate_limit_exceeded':
      return `Too many calls to this country right now; ${then}`;
    case 'global_rate_limit_exceeded':
      return `The service has reached its overall call limit; ${then}`;
    case 'ip_rate_limit_exceeded':
      return `Too many calls from your network; ${then}`;
    case 'conversion_rate_limit_exceeded':
      return `Too many recent calls to numbers like this one went unanswered; ${then}`;
    case 'sweep_rate_limit_exceeded':
      return `Too many different numbers close to this one were called; ${then}`;
    case 'number_blocked':
      return `This number is blocked from receiving calls; ${then}`;
    case 'destination_blocked': {
      if (rule === 'destination:country') return `Calls to this country are not allowed; ${then}`;
      const type = rule?.startsWith('destination:') ? rule.slice('destination:'.length) : '';
      const words = TYPE_WORDS[type];
      return words ? `Calls to ${words} are not allowed; ${then}` : `Calls to this kind of number are not allowed; ${then}`;
    }
    default:
      return `Calls to this number are not allowed right now; ${then}`;
  }
}

/** The /logs answer to one decision reply of the browser path (`sent`: the number as the client wrote it). */
export function seedReply(reply: ErrorReply | DecisionReply, sent: string): SeedReply {
  if (reply.type === 'error') {
    if (reply.code === 'invalid_phone_number') {
      // An error would leave the seed's UI on "Checking…" with Call enabled; the call cannot be placed.
      const out: SeedStatusReply = {
        type: 'rate_limit_status',
        phoneNumber: sent,
        allowed: false,
        remaining: 0,
        resetTime: NEVER_RESETS_MS,
        reason: `This is not a phone number that can be called: ${reply.message}`,
        reasonCode: 'invalid_phone_number',
        retryAfterMs: null,
      };
      if (reply.id !== undefined) out.id = reply.id;
      return out;
    }
    // Not a verdict on the number (overload, internal error): the hook ignores `error` frames, so
    // the UI keeps "Checking…" rather than showing a state the daemon did not decide.
    return { ...reply, phoneNumber: sent };
  }
  const allowed = reply.type === 'rate_limit_status' && reply.allowed;
  const retryAfterMs = reply.retryAfterMs === null ? null : roundUpToMinute(reply.retryAfterMs);
  // A browser's view of an aggregate denial carries no instant (protocol/replies.ts): the retry says when.
  const counted = 'limit' in reply ? reply : undefined;
  const replyResetMs = counted ? counted.resetTime : retryAfterMs === null ? null : Date.now() + retryAfterMs;
  const resetTime = replyResetMs === null || (!allowed && retryAfterMs === null) ? NEVER_RESETS_MS : roundUpToMinute(replyResetMs);
  const out: SeedStatusReply = {
    type: 'rate_limit_status',
    id: reply.id,
    phoneNumber: sent,
    allowed,
    // Denied is "no call now", whatever the number's own count says (an aggregate rule may deny).
    remaining: allowed ? (counted?.remaining ?? 0) : 0,
    resetTime,
    limit: counted?.limit,
    used: counted?.used,
    retryAfterMs,
    region: reply.region,
    source: reply.source,
  };
  if (!allowed) {
    const code = reply.reason ?? 'phone_rate_limit_exceeded';
    out.reason = reasonSentence(code, reply.rule, retryAfterMs);
    out.reasonCode = code;
    if (reply.rule !== undefined) out.rule = reply.rule;
  }
  return out;
}

/**
 * Answers one text frame from a /logs socket. Only `rate_limit_check`: the hook sends nothing
 * else that is ours, and a page must never spend quota (consume is for the seed's backend, with
 * a token, over /ws or POST /v1/consume). Never rejects.
 */
export function answerSeedFrame(text: string, parser: RequestParser, decider: Decider, socketIp: string): SeedReply | Promise<SeedReply> {
  const parsed = parser.parseFrame(text);
  if (!parsed.ok) return parsed.error;
  const req = parsed.request;
  if (req.type !== 'rate_limit_check') {
    return errorReply('forbidden', `${SEED_LOGS_PATH} only checks; consume from your backend with a token (POST /v1/consume or /ws)`, req.id);
  }
  const sent = req.phoneNumber;
  // Browser role whatever the socket's credentials: this route serves pages, so its replies
  // carry what a page may see (whole minutes, the number's own counts).
  return decider.decide(req, 'browser', socketIp).then((reply) => seedReply(reply, sent));
}
