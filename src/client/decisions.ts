// What every client entry (Node and browser) hands its caller: decisions, the fail-mode answer
// it makes up when the daemon cannot be asked, and the error for a request that is itself wrong.
// Runs in browsers too: no Node API, and only the zod-free protocol files
// (test/client/imports.test.ts checks).

import type { ProtocolErrorCode } from '../protocol/errors.js';
import { isDecisionReply, isOutcomeRecordedReply } from '../protocol/replies.js';
import type { CoarseStatusReply, DecisionSource as WireDecisionSource, DenyReason, ExceededReply, StatusReply } from '../protocol/wire.js';

export type FailMode = 'open' | 'closed';
export type ClientState = 'connecting' | 'open' | 'closed';

/** `unavailable` never comes from the daemon: this client made the decision up, by failMode. */
export type DecisionSource = WireDecisionSource | 'unavailable';

/** Why a synthetic (`source: 'unavailable'`) decision was made. */
export type UnavailableReason =
  | 'not_connected' // no connection to the daemon within requestTimeoutMs
  | 'timeout' // sent, but no reply within requestTimeoutMs
  | 'connection_lost' // the socket closed after the request was sent
  | 'queue_full' // disconnected and maxQueued requests were already waiting
  | 'server_error' // HTTP only: a non-daemon failure such as a proxy's 502/503
  | 'client_closed'; // close() was called while the request was pending

/**
 * What this client adds to a wire decision: the `unavailable` source of its own fail-mode
 * answers, and tolerance for fields older daemons and plain HTTP bodies leave out
 * (`region`; `used` on denials), which isDecisionReply accepts.
 */
interface ClientSide {
  region?: string | null;
  source: DecisionSource;
  /** Only on synthetic decisions. */
  unavailableReason?: UnavailableReason;
}

export interface RateLimitStatus extends Omit<StatusReply, 'region' | 'source'>, ClientSide {}

export interface RateLimitExceeded extends Omit<ExceededReply, 'region' | 'source' | 'reason' | 'used' | 'rule'>, ClientSide {
  reason: DenyReason | 'daemon_unavailable';
  used?: number;
  /** The rule that denied (docs/protocol.md rule ids); absent on fail-mode answers and from older daemons. */
  rule?: string;
}

/**
 * What a browser origin is told of a check denied by a rule over many numbers (prefix, country,
 * global, conversion, sweep): no counts, no instants, `retryAfterMs` rounded up to the minute.
 */
export interface RateLimitCoarseStatus extends Omit<CoarseStatusReply, 'region' | 'source'>, ClientSide {}

export type Decision = RateLimitStatus | RateLimitExceeded | RateLimitCoarseStatus;

/** True when the decision says the call may go ahead (a real or a fail-open answer). */
export function isAllowed(decision: Decision): boolean {
  return decision.type === 'rate_limit_status' && decision.allowed;
}

export type RequestErrorCode =
  // from the daemon (docs/protocol.md)
  | ProtocolErrorCode
  // from this client
  | 'unauthorized' // the daemon refused the token (HTTP 401/403 on the upgrade or request)
  | 'invalid_response' // a reply that is not one of the protocol's shapes
  | 'daemon_unavailable' // outcome() could not be delivered (report it again later)
  | 'client_closed'; // check()/consume()/outcome() after close()

/**
 * The daemon (or this client, for `unauthorized` and friends) said the request itself is wrong.
 * Never turned into a failMode answer: a bad number or a bad token is a bug to surface, and
 * failing open on it would silently disable the limit.
 */
export class RateLimitRequestError extends Error {
  readonly code: RequestErrorCode | (string & {});
  constructor(code: string, message: string) {
    super(message);
    this.name = 'RateLimitRequestError';
    this.code = code;
  }
}

/**
 * The daemon's slowest answer with its defaults: RATELIMIT_DB_TIMEOUT (2 s, also its connect
 * timeout) plus the 1 s it allows a statement past that before deciding from memory. Waiting
 * less would call a daemon unavailable while it is about to answer (during a failover, say).
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 3000;

export function unavailableDecision(failMode: FailMode, phoneNumber: string, reason: UnavailableReason, nowMs = Date.now()): Decision {
  // Counts are unknown, so 0; resetTime "now" and retryAfterMs 0 because the daemon may be back any moment.
  if (failMode === 'open') {
    return {
      type: 'rate_limit_status',
      phoneNumber,
      allowed: true,
      limit: 0,
      used: 0,
      remaining: 0,
      resetTime: nowMs,
      retryAfterMs: 0,
      region: null,
      source: 'unavailable',
      unavailableReason: reason,
    };
  }
  return {
    type: 'rate_limit_exceeded',
    phoneNumber,
    reason: 'daemon_unavailable',
    limit: 0,
    remaining: 0,
    resetTime: nowMs,
    retryAfterMs: 0,
    region: null,
    source: 'unavailable',
    unavailableReason: reason,
  };
}

/** A reply with a known id: the decision, or the error to reject with. */
export function interpretReply(reply: Record<string, unknown>): Decision | RateLimitRequestError {
  if (reply.type === 'error') {
    const code = typeof reply.code === 'string' ? reply.code : 'internal_error';
    const message = typeof reply.message === 'string' ? reply.message : code;
    return new RateLimitRequestError(code, message);
  }
  if (isDecisionReply(reply)) return reply;
  return new RateLimitRequestError('invalid_response', `unexpected reply from the daemon: ${JSON.stringify(reply).slice(0, 200)}`);
}

/** A reply to an outcome: what the daemon recorded, or the error to reject with. */
export function interpretOutcomeReply(reply: Record<string, unknown>): { decisionId: string; duplicate: boolean } | RateLimitRequestError {
  if (reply.type === 'error') return interpretReply(reply) as RateLimitRequestError;
  if (isOutcomeRecordedReply(reply)) return { decisionId: reply.decisionId, duplicate: reply.duplicate };
  return new RateLimitRequestError('invalid_response', `unexpected reply from the daemon: ${JSON.stringify(reply).slice(0, 200)}`);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function checkFailMode(failMode: unknown): asserts failMode is FailMode {
  if (failMode !== 'open' && failMode !== 'closed') {
    throw new TypeError(`failMode must be 'open' or 'closed', got ${String(failMode)}`);
  }
}

export function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new TypeError(`${name} must be a positive number of milliseconds`);
  return value;
}
