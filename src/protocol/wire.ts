// The shapes on the wire (PROTOCOL.md): requests, decision replies, error replies. Types and
// const lists only, no validation library, so the client package can import this file without
// pulling the daemon's dependencies (zod and friends live in schema.ts).

import type { ProtocolErrorCode } from './errors.js';

export type RequestId = string | number;

export const REQUEST_TYPES = ['rate_limit_check', 'rate_limit_consume'] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

/** Why a consume was denied. */
export const DENY_REASONS = ['phone_rate_limit_exceeded', 'ip_rate_limit_exceeded'] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

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

export type Request = CheckRequest | ConsumeRequest;

export interface StatusReply {
  type: 'rate_limit_status';
  id?: RequestId | undefined;
  phoneNumber: string;
  allowed: boolean;
  limit: number;
  used: number;
  remaining: number;
  /** ms since epoch. */
  resetTime: number;
  retryAfterMs: number;
  region: string | null;
  source: DecisionSource;
}

export interface ExceededReply {
  type: 'rate_limit_exceeded';
  id?: RequestId | undefined;
  phoneNumber: string;
  reason: DenyReason;
  limit: number;
  used: number;
  remaining: number;
  /** ms since epoch. */
  resetTime: number;
  retryAfterMs: number;
  region: string | null;
  source: DecisionSource;
}

export interface ErrorReply {
  type: 'error';
  id?: RequestId;
  code: ProtocolErrorCode;
  message: string;
}

export type DecisionReply = StatusReply | ExceededReply;
export type Reply = ErrorReply | DecisionReply;

/** The daemon's routes (PROTOCOL.md *HTTP*). */
export const ROUTES = {
  ws: '/ws',
  health: '/health',
  metrics: '/metrics',
  check: '/v1/check',
  consume: '/v1/consume',
} as const;

/**
 * The contract's default frame/body limit. The daemon's is configurable
 * (RATELIMIT_MAX_FRAME_BYTES, src/core/defaults.ts holds the config default and a test keeps the
 * two equal); clients default to this one.
 */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024;
