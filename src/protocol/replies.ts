// Building and recognising replies: the daemon builds them, the client recognises them, so both
// use this one file. Zod-free on purpose (the client imports it); request validation is schema.ts.

import { PROTOCOL_ERRORS, type ProtocolErrorCode } from './errors.js';
import type { CoarseStatusReply, DecisionSource, DenyReason, ErrorReply, ExceededReply, OutcomeRecordedReply, Reply, RequestId, StatusReply } from './wire.js';

export function errorReply(code: ProtocolErrorCode, message: string, reqId?: RequestId): ErrorReply {
  return { type: 'error', ...(reqId !== undefined ? { id: reqId } : {}), code, message };
}

/** A decision as the reply reports it (the daemon's verdict, already chosen for the client's role). */
export interface DecisionView {
  allowed: boolean;
  limit: number;
  used: number;
  remaining: number;
  resetTime: number | null;
  retryAfterMs: number | null;
  reason: DenyReason | null;
  rule: string | null;
  shadow: readonly string[];
  source: DecisionSource;
}

/** Browsers are told times to the minute: to the millisecond, `resetTime` minus the window is when the number last got a call. */
export const BROWSER_TIME_STEP_MS = 60_000;

/** Denials whose counts are the number's own (or a block's, or none): browsers may see those. */
const OWN_REASONS: ReadonlySet<DenyReason> = new Set<DenyReason>(['phone_rate_limit_exceeded', 'number_blocked', 'destination_blocked']);

/** Rounded up to the next multiple of the step; 0 and null stay. */
export function roundUpToMinute<T extends number | null>(ms: T): T {
  return (ms === null ? null : Math.ceil(ms / BROWSER_TIME_STEP_MS) * BROWSER_TIME_STEP_MS) as T;
}

/**
 * The reply for a decision: `rate_limit_status` for a check or an allowed consume,
 * `rate_limit_exceeded` (with the reason and rule that denied) for a denied consume (`consume`
 * true). A check that would be denied carries `reason` and `rule` too; `shadow` only when a
 * shadow rule would have denied.
 */
export function decisionReply(
  id: RequestId | undefined,
  e164: string,
  region: string | undefined,
  d: DecisionView,
  consume: boolean,
  decisionId?: string,
): StatusReply | ExceededReply {
  // Literal objects of one fixed shape each: this runs for every decision, and spreading
  // optional parts into it showed up in profiles.
  let reply: StatusReply | ExceededReply;
  if (consume && !d.allowed) {
    reply = {
      type: 'rate_limit_exceeded',
      id,
      phoneNumber: e164,
      reason: d.reason ?? 'phone_rate_limit_exceeded',
      rule: d.rule ?? '',
      limit: d.limit,
      used: d.used,
      remaining: d.remaining,
      resetTime: d.resetTime,
      retryAfterMs: d.retryAfterMs,
      region: region ?? null,
      source: d.source,
    };
  } else {
    reply = {
      type: 'rate_limit_status',
      id,
      phoneNumber: e164,
      allowed: d.allowed,
      limit: d.limit,
      used: d.used,
      remaining: d.remaining,
      resetTime: d.resetTime,
      retryAfterMs: d.retryAfterMs,
      region: region ?? null,
      source: d.source,
    };
    if (!d.allowed) {
      reply.reason = d.reason ?? 'phone_rate_limit_exceeded';
      reply.rule = d.rule ?? '';
    }
  }
  if (d.shadow.length > 0) reply.shadow = [...d.shadow];
  if (decisionId !== undefined && reply.type === 'rate_limit_status') reply.decisionId = decisionId;
  // JSON.stringify leaves out an undefined id, as the contract wants for requests without one.
  return reply;
}

/**
 * The reply for a decision as a browser origin may see it (a page admitted by its Origin, so
 * anyone; services and local tools get decisionReply's exact one). A denial by a rule over many
 * numbers: only allowed/reason/rule and a retry rounded up to the minute. Otherwise the number's
 * own counts, with every time rounded up to the minute (docs/protocol.md). Shadow rules are the
 * operator's trial, not the browser's business: never shown.
 */
export function browserDecisionReply(
  id: RequestId | undefined,
  e164: string,
  region: string | undefined,
  d: DecisionView,
  consume: boolean,
): StatusReply | ExceededReply | CoarseStatusReply {
  const retryAfterMs = roundUpToMinute(d.retryAfterMs);
  if (!d.allowed && (d.reason === null || !OWN_REASONS.has(d.reason))) {
    const coarse: CoarseStatusReply = {
      type: 'rate_limit_status',
      id,
      phoneNumber: e164,
      allowed: false,
      reason: d.reason ?? 'phone_rate_limit_exceeded',
      rule: d.rule ?? '',
      retryAfterMs,
      region: region ?? null,
      source: d.source,
    };
    // Browsers only check (a consume is refused before it is decided), so this is a check's reply.
    return coarse;
  }
  const rounded = { ...d, resetTime: roundUpToMinute(d.resetTime), retryAfterMs, shadow: [] };
  return decisionReply(id, e164, region, rounded, consume);
}

/** The HTTP status a reply is sent with: 200 allowed or checked, 429 denied, errors by PROTOCOL_ERRORS. */
export function httpStatus(reply: Reply): number {
  if (reply.type === 'rate_limit_status' || reply.type === 'rate_limit_outcome_recorded') return 200;
  if (reply.type === 'rate_limit_exceeded') return 429;
  return PROTOCOL_ERRORS[reply.code].httpStatus;
}

/**
 * Whether a decoded reply has the fields every daemon version sends with a decision. A tolerant
 * reader: `region` and, on denials, `used` and `rule` may be missing (older daemons and plain HTTP bodies
 * leave them out), and `source`/`reason` are not checked against today's lists, so a newer
 * daemon adding a value does not break an older client.
 */
export function isDecisionReply(
  value: Record<string, unknown>,
): value is Record<string, unknown> & (Omit<StatusReply, 'region'> | Omit<ExceededReply, 'region' | 'used' | 'rule'> | Omit<CoarseStatusReply, 'region'>) {
  const common =
    typeof value.phoneNumber === 'string' &&
    typeof value.limit === 'number' &&
    typeof value.remaining === 'number' &&
    (typeof value.resetTime === 'number' || value.resetTime === null) &&
    (typeof value.retryAfterMs === 'number' || value.retryAfterMs === null) &&
    typeof value.source === 'string';
  if (!common) return isCoarseStatusReply(value);
  if (value.type === 'rate_limit_status') return typeof value.allowed === 'boolean' && typeof value.used === 'number';
  return value.type === 'rate_limit_exceeded' && typeof value.reason === 'string';
}

export function outcomeRecordedReply(id: RequestId | undefined, decisionId: string, duplicate: boolean): OutcomeRecordedReply {
  return { type: 'rate_limit_outcome_recorded', id, decisionId, duplicate };
}

/** Whether a decoded reply acknowledges an outcome (the client's reader). */
export function isOutcomeRecordedReply(value: Record<string, unknown>): value is Record<string, unknown> & OutcomeRecordedReply {
  return value.type === 'rate_limit_outcome_recorded' && typeof value.decisionId === 'string' && typeof value.duplicate === 'boolean';
}

/** A browser's view of a denial by a rule over many numbers: no counts, no instants. */
export function isCoarseStatusReply(value: Record<string, unknown>): value is Record<string, unknown> & CoarseStatusReply {
  return (
    value.type === 'rate_limit_status' &&
    value.allowed === false &&
    typeof value.phoneNumber === 'string' &&
    typeof value.reason === 'string' &&
    typeof value.rule === 'string' &&
    (typeof value.retryAfterMs === 'number' || value.retryAfterMs === null) &&
    typeof value.source === 'string' &&
    value.limit === undefined &&
    value.resetTime === undefined
  );
}

// Characters JSON.stringify escapes in a string: quote, backslash, controls, lone surrogates
// (any surrogate sends the string the slow way; pairs come out unchanged there too).
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/** As JSON.stringify writes a number (non-finite ones as null). */
function jsonNumber(n: number | null): string {
  return n === null || !Number.isFinite(n) ? 'null' : String(n);
}

function jsonId(id: RequestId | undefined): string {
  return id === undefined ? '' : `"id":${typeof id === 'number' ? jsonNumber(id) : jsonString(id)},`;
}

function jsonShadow(shadow: readonly string[] | undefined): string {
  return shadow === undefined ? '' : `,"shadow":[${shadow.map(jsonString).join(',')}]`;
}

/**
 * JSON.stringify(reply), byte for byte, written directly for the decision replies this file
 * builds (their fields in the order decisionReply and browserDecisionReply set them): one reply
 * per decision, and the generic walk over the reply object cost about as much again as building
 * it. Other replies go to JSON.stringify. test/protocol/reply-text.test.ts holds it to
 * JSON.stringify for every shape the builders make.
 */
export function replyText(r: Reply): string {
  if (r.type === 'rate_limit_exceeded') {
    return (
      `{"type":"rate_limit_exceeded",${jsonId(r.id)}"phoneNumber":${jsonString(r.phoneNumber)},"reason":${jsonString(r.reason)},` +
      `"rule":${jsonString(r.rule)},"limit":${jsonNumber(r.limit)},"used":${jsonNumber(r.used)},"remaining":${jsonNumber(r.remaining)},` +
      `"resetTime":${jsonNumber(r.resetTime)},"retryAfterMs":${jsonNumber(r.retryAfterMs)},"region":${r.region === null ? 'null' : jsonString(r.region)},` +
      `"source":${jsonString(r.source)}${jsonShadow(r.shadow)}}`
    );
  }
  if (r.type !== 'rate_limit_status') return JSON.stringify(r);
  if (!('limit' in r)) {
    // A browser's coarse view of a denial by a rule over many numbers.
    return (
      `{"type":"rate_limit_status",${jsonId(r.id)}"phoneNumber":${jsonString(r.phoneNumber)},"allowed":${r.allowed},"reason":${jsonString(r.reason)},` +
      `"rule":${jsonString(r.rule)},"retryAfterMs":${jsonNumber(r.retryAfterMs)},"region":${r.region === null ? 'null' : jsonString(r.region)},` +
      `"source":${jsonString(r.source)}}`
    );
  }
  return (
    `{"type":"rate_limit_status",${jsonId(r.id)}"phoneNumber":${jsonString(r.phoneNumber)},"allowed":${r.allowed},"limit":${jsonNumber(r.limit)},` +
    `"used":${jsonNumber(r.used)},"remaining":${jsonNumber(r.remaining)},"resetTime":${jsonNumber(r.resetTime)},"retryAfterMs":${jsonNumber(r.retryAfterMs)},` +
    `"region":${r.region === null ? 'null' : jsonString(r.region)},"source":${jsonString(r.source)}` +
    (r.reason === undefined ? '' : `,"reason":${jsonString(r.reason)}`) +
    (r.rule === undefined ? '' : `,"rule":${jsonString(r.rule)}`) +
    jsonShadow(r.shadow) +
    (r.decisionId === undefined ? '' : `,"decisionId":${jsonString(r.decisionId)}`) +
    '}'
  );
}
