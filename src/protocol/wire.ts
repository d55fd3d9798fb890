// The shapes on the wire (docs/protocol.md): requests, decision replies, error replies. Types and
// const lists only, no validation library, so the client package can import this file without
// pulling the daemon's dependencies (zod and friends live in schema.ts).

import type { ProtocolErrorCode } from './errors.js';
import type { RuleDenyReason } from '../core/policy/types.js';

export type RequestId = string | number;

export const REQUEST_TYPES = ['rate_limit_check', 'rate_limit_consume', 'rate_limit_outcome'] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

/** Why a consume was (or, for a check, would be) denied (docs/protocol.md *WebSocket*). */
export const DENY_REASONS = [
  'phone_rate_limit_exceeded',
  'prefix_rate_limit_exceeded',
  'country_rate_limit_exceeded',
  'global_rate_limit_exceeded',
  'ip_rate_limit_exceeded',
  'conversion_rate_limit_exceeded',
  'sweep_rate_limit_exceeded',
  'number_blocked',
  'destination_blocked',
] as const;
export type DenyReason = (typeof DENY_REASONS)[number];
// Every reason the policy's rules give (src/core/policy/types.ts) is on this list: a compile error otherwise.
const RULE_REASONS_ARE_ON_THE_WIRE: Exclude<RuleDenyReason, DenyReason> extends never ? true : never = true;
void RULE_REASONS_ARE_ON_THE_WIRE;

/** Who decided: PostgreSQL, or this instance's memory while the database is unreachable. */
export const DECISION_SOURCES = ['database', 'memory'] as const;
export type DecisionSource = (typeof DECISION_SOURCES)[number];

export interface CheckRequest {
  type: 'rate_limit_check';
  id?: RequestId | undefined;
  phoneNumber: string;
  /** Accepted (and validated) so one body serves both routes; a check has no use for it. */
  ip?: string | undefined;
}

export interface ConsumeRequest {
  type: 'rate_limit_consume';
  id?: RequestId | undefined;
  phoneNumber: string;
  /** The end user's address; honoured only for token-holding services. */
  ip?: string | undefined;
}

/** What the Decider answers: a check or a consume. */
export type DecisionRequest = CheckRequest | ConsumeRequest;

/** What happened to an allowed call or message (docs/protocol.md *Outcomes*). */
export const OUTCOMES = ['verified', 'answered', 'unanswered', 'failed'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** Where an outcome was reported, for metrics. */
export const OUTCOME_SOURCES = ['ws', 'http', 'twilio'] as const;
export type OutcomeSource = (typeof OUTCOME_SOURCES)[number];

export interface OutcomeRequest {
  type: 'rate_limit_outcome';
  id?: RequestId | undefined;
  /** From the allowed consume's reply. */
  decisionId: string;
  outcome: Outcome;
  /** Required for `answered`: how long the call lasted. */
  durationMs?: number | undefined;
}

export type Request = DecisionRequest | OutcomeRequest;

export interface StatusReply {
  type: 'rate_limit_status';
  id?: RequestId | undefined;
  phoneNumber: string;
  allowed: boolean;
  limit: number;
  used: number;
  remaining: number;
  /** ms since epoch; null for a block or destination denial without an end. */
  resetTime: number | null;
  /** 0 when allowed; null for a block or destination denial without an end. */
  retryAfterMs: number | null;
  region: string | null;
  source: DecisionSource;
  /** Only when `allowed` is false: why a consume now would be denied, and by which rule. */
  reason?: DenyReason;
  rule?: string;
  /** Only when non-empty: shadow rules that would have denied. */
  shadow?: string[];
  /** Only on an allowed consume: what to report its outcome with (docs/protocol.md *Outcomes*). */
  decisionId?: string;
}

export interface ExceededReply {
  type: 'rate_limit_exceeded';
  id?: RequestId | undefined;
  phoneNumber: string;
  reason: DenyReason;
  /** The id of the rule that denied (`number:1h`, `global:1d`, `list:block`, ...). */
  rule: string;
  limit: number;
  used: number;
  remaining: number;
  /** ms since epoch; null for a block or destination denial without an end. */
  resetTime: number | null;
  retryAfterMs: number | null;
  region: string | null;
  source: DecisionSource;
  /** Only when non-empty: shadow rules that would have denied. */
  shadow?: string[];
}

/**
 * What a browser origin is told of a denial by a rule over many numbers (prefix, country,
 * global, conversion, sweep): whether, why, by which rule, and when to retry, rounded up to the
 * minute; no counts or instants, which would tell it about other people's numbers.
 */
export interface CoarseStatusReply {
  type: 'rate_limit_status';
  id?: RequestId | undefined;
  phoneNumber: string;
  allowed: false;
  reason: DenyReason;
  rule: string;
  /** A multiple of 60,000; null for a denial without an end. */
  retryAfterMs: number | null;
  region: string | null;
  source: DecisionSource;
}

export interface ErrorReply {
  type: 'error';
  id?: RequestId;
  code: ProtocolErrorCode;
  message: string;
}

/** An outcome is stored (or kept until the database is back); `duplicate`: it was already. */
export interface OutcomeRecordedReply {
  type: 'rate_limit_outcome_recorded';
  id?: RequestId | undefined;
  decisionId: string;
  duplicate: boolean;
}

export type DecisionReply = StatusReply | ExceededReply | CoarseStatusReply;
export type Reply = ErrorReply | DecisionReply | OutcomeRecordedReply;

/** The daemon's routes (docs/protocol.md *HTTP*). */
export const ROUTES = {
  ws: '/ws',
  health: '/health',
  metrics: '/metrics',
  check: '/v1/check',
  consume: '/v1/consume',
  outcome: '/v1/outcome',
  twilioStatus: '/v1/twilio/status',
} as const;

/**
 * The contract's default frame/body limit. The daemon's is configurable
 * (RATELIMIT_MAX_FRAME_BYTES, src/core/defaults.ts holds the config default and a test keeps the
 * two equal); clients default to this one.
 */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024;
