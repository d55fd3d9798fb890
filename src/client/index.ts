// This file is longer than 350 lines for now: it holds the WebSocket and the HTTP clients and
// their shared reply handling; it is split when the browser entry (native WebSocket) lands.
// The client services use to ask the daemon before placing a call or sending an SMS
// (PROTOCOL.md). One socket per client, pipelined requests matched by id, and an explicit
// failMode, because "the daemon cannot be asked" is a business decision, not a library's.

import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { DEFAULT_MAX_FRAME_BYTES, ROUTES } from '../protocol/wire.js';
// Only the zod-free protocol files: this entry must not load the daemon's dependencies
// (test/client-imports.test.ts checks).
import type { ProtocolErrorCode } from '../protocol/errors.js';
import { isDecisionReply } from '../protocol/replies.js';
import type { DecisionSource as WireDecisionSource, DenyReason, ExceededReply, StatusReply } from '../protocol/wire.js';

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
  /** The rule that denied (absent from daemons before policies, and for daemon_unavailable). */
  rule?: string;
  used?: number;
}

export type Decision = RateLimitStatus | RateLimitExceeded;

/** True when the decision says the call may go ahead (a real or a fail-open answer). */
export function isAllowed(decision: Decision): boolean {
  return decision.type === 'rate_limit_status' && decision.allowed;
}

export type RequestErrorCode =
  // from the daemon (PROTOCOL.md)
  | ProtocolErrorCode
  // from this client
  | 'unauthorized' // the daemon refused the token (HTTP 401/403 on the upgrade or request)
  | 'invalid_response' // a reply that is not one of the protocol's shapes
  | 'client_closed'; // check()/consume() after close()

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

export interface ClientOptions {
  /** e.g. `ws://127.0.0.1:8081/ws` */
  url: string;
  /** Sent as `Authorization: Bearer <token>` on the upgrade. */
  token?: string;
  /** Per request, from the call (queueing included) to the reply. Default 2000. */
  requestTimeoutMs?: number;
  /** What a decision is when the daemon cannot be asked. Required on purpose: see docs/client.md. */
  failMode: FailMode;
  /** Exponential backoff with jitter between connection attempts. Defaults 200 and 10000. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Requests allowed to wait while disconnected; more are answered by failMode at once. Default 1000. */
  maxQueued?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 2000;
export const DEFAULT_MAX_QUEUED = 1000;
const DEFAULT_RECONNECT_INITIAL_DELAY_MS = 200;
const DEFAULT_RECONNECT_MAX_DELAY_MS = 10_000;
// Bounds an attempt to a blackholed host; requests are answered by their own timeouts meanwhile.
const HANDSHAKE_TIMEOUT_MS = 10_000;
// A half-open TCP connection (NAT drop, host gone) is otherwise only noticed by timeouts.
const HEARTBEAT_INTERVAL_MS = 15_000;
// Waiting longer for the server's close frame would only delay the caller's shutdown.
const CLOSE_HANDSHAKE_TIMEOUT_MS = 1000;
// Replies are a few hundred bytes; anything near this is not the daemon talking.
const MAX_REPLY_BYTES = 64 * 1024;

interface PendingRequest {
  readonly phoneNumber: string;
  readonly frame: string;
  readonly resolve: (decision: Decision) => void;
  readonly reject: (err: RateLimitRequestError) => void;
  readonly timer: NodeJS.Timeout;
}

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

export class RateLimitClient extends EventEmitter<{ state: [state: ClientState, cause?: Error] }> {
  private readonly url: string;
  private readonly token: string | undefined;
  private readonly requestTimeoutMs: number;
  private readonly failMode: FailMode;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxQueued: number;

  private nextId = 1;
  // Map iteration order is insertion order, so queued requests go out in call order.
  private readonly queued = new Map<number, PendingRequest>();
  private readonly inFlight = new Map<number, PendingRequest>();
  private socket: WebSocket | undefined;
  private currentState: ClientState = 'closed';
  private failedAttempts = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private authRefusal: RateLimitRequestError | undefined;
  private closing: Promise<void> | undefined;

  constructor(opts: ClientOptions) {
    super();
    if (opts.failMode !== 'open' && opts.failMode !== 'closed') {
      throw new TypeError(`failMode must be 'open' or 'closed', got ${String(opts.failMode)}`);
    }
    this.url = opts.url;
    this.token = opts.token;
    this.failMode = opts.failMode;
    this.requestTimeoutMs = positive(opts.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'requestTimeoutMs');
    this.initialDelayMs = positive(opts.reconnect?.initialDelayMs, DEFAULT_RECONNECT_INITIAL_DELAY_MS, 'reconnect.initialDelayMs');
    this.maxDelayMs = Math.max(this.initialDelayMs, positive(opts.reconnect?.maxDelayMs, DEFAULT_RECONNECT_MAX_DELAY_MS, 'reconnect.maxDelayMs'));
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    if (!Number.isInteger(this.maxQueued) || this.maxQueued < 0) throw new TypeError('maxQueued must be a non-negative integer');
    this.connect();
  }

  get state(): ClientState {
    return this.currentState;
  }

  /** Whether a consume now would be allowed; changes nothing. */
  check(phoneNumber: string): Promise<Decision> {
    return this.request({ type: 'rate_limit_check', phoneNumber });
  }

  /** Records one call attempt if allowed. `ip` (the end user's) is honoured only with a token. */
  consume(phoneNumber: string, opts?: { ip?: string }): Promise<Decision> {
    return this.request({ type: 'rate_limit_consume', phoneNumber, ...(opts?.ip !== undefined ? { ip: opts.ip } : {}) });
  }

  /**
   * Idempotent. Everything pending is answered by failMode at once (`client_closed`); a consume
   * already sent may still be counted by the daemon. Later calls reject with `client_closed`.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.settleAll(this.queued, 'client_closed');
    this.settleAll(this.inFlight, 'client_closed');
    const socket = this.socket;
    this.closing = new Promise<void>((resolve) => {
      if (!socket || socket.readyState === WebSocket.CLOSED) {
        this.setState('closed');
        resolve();
        return;
      }
      const killTimer = setTimeout(() => socket.terminate(), CLOSE_HANDSHAKE_TIMEOUT_MS);
      socket.once('close', () => {
        clearTimeout(killTimer);
        resolve();
      });
      if (socket.readyState === WebSocket.CONNECTING) socket.terminate();
      else socket.close(1000, 'client closing');
    });
    return this.closing;
  }

  private request(message: { type: string; phoneNumber: string; ip?: string }): Promise<Decision> {
    const { phoneNumber } = message;
    if (this.closing) return Promise.reject(new RateLimitRequestError('client_closed', 'RateLimitClient is closed'));
    if (this.authRefusal && this.currentState !== 'open') return Promise.reject(this.authRefusal);
    const id = this.nextId++;
    const frame = JSON.stringify({ ...message, id });
    // The daemon closes the whole socket on an oversized frame, which would fail everyone in flight.
    if (Buffer.byteLength(frame) > DEFAULT_MAX_FRAME_BYTES) {
      return Promise.reject(new RateLimitRequestError('invalid_message', `request larger than ${DEFAULT_MAX_FRAME_BYTES} bytes`));
    }
    const socket = this.socket;
    const connected = this.currentState === 'open' && socket !== undefined;
    if (!connected && this.queued.size >= this.maxQueued) {
      return Promise.resolve(unavailableDecision(this.failMode, phoneNumber, 'queue_full'));
    }
    return new Promise<Decision>((resolve, reject) => {
      const timer = setTimeout(() => this.expire(id), this.requestTimeoutMs);
      const pending: PendingRequest = { phoneNumber, frame, resolve, reject, timer };
      if (connected) {
        this.inFlight.set(id, pending);
        socket.send(frame);
      } else {
        this.queued.set(id, pending);
      }
    });
  }

  private expire(id: number): void {
    const queued = this.queued.get(id);
    if (queued) {
      this.queued.delete(id);
      queued.resolve(unavailableDecision(this.failMode, queued.phoneNumber, 'not_connected'));
      return;
    }
    const sent = this.inFlight.get(id);
    if (sent) {
      // A late reply for this id will find nothing and be ignored.
      this.inFlight.delete(id);
      sent.resolve(unavailableDecision(this.failMode, sent.phoneNumber, 'timeout'));
    }
  }

  private settleAll(requests: Map<number, PendingRequest>, reason: UnavailableReason): void {
    for (const pending of requests.values()) {
      clearTimeout(pending.timer);
      pending.resolve(unavailableDecision(this.failMode, pending.phoneNumber, reason));
    }
    requests.clear();
  }

  private setState(state: ClientState, cause?: Error): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.emit('state', state, cause);
  }

  private connect(): void {
    if (this.closing) return;
    const headers: Record<string, string> = {};
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    const socket = new WebSocket(this.url, {
      headers,
      perMessageDeflate: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      maxPayload: MAX_REPLY_BYTES,
    });
    this.socket = socket;
    this.setState('connecting');
    let refusedStatus: number | undefined;
    let lastError: Error | undefined;
    let alive = true;

    socket.on('unexpected-response', (_req, res) => {
      refusedStatus = res.statusCode;
      res.resume();
      socket.terminate();
    });
    socket.on('error', (err) => {
      lastError = err;
    });
    socket.on('open', () => {
      this.failedAttempts = 0;
      this.authRefusal = undefined;
      this.setState('open');
      for (const [id, pending] of this.queued) {
        this.queued.delete(id);
        this.inFlight.set(id, pending);
        socket.send(pending.frame);
      }
      this.heartbeatTimer = setInterval(() => {
        if (!alive) {
          socket.terminate();
          return;
        }
        alive = false;
        socket.ping();
      }, HEARTBEAT_INTERVAL_MS);
      this.heartbeatTimer.unref();
    });
    socket.on('pong', () => {
      alive = true;
    });
    socket.on('message', (data) => {
      alive = true;
      this.onMessage(String(data));
    });
    socket.on('close', (code, reason) => {
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = undefined;
      if (this.socket === socket) this.socket = undefined;
      // Not retried: a consume may have been counted even though its reply never came.
      this.settleAll(this.inFlight, 'connection_lost');
      if (refusedStatus === 401 || refusedStatus === 403) {
        this.authRefusal = new RateLimitRequestError('unauthorized', `the daemon refused the connection (HTTP ${refusedStatus}); check the token`);
        for (const pending of this.queued.values()) {
          clearTimeout(pending.timer);
          pending.reject(this.authRefusal);
        }
        this.queued.clear();
      }
      const cause =
        this.authRefusal ?? lastError ?? (code === 1000 || code === 1005 ? undefined : new Error(`connection closed (${code}${reason.length > 0 ? ` ${String(reason)}` : ''})`));
      this.setState('closed', cause);
      if (!this.closing) this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const ceilingMs = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** Math.min(this.failedAttempts, 30));
    this.failedAttempts++;
    // Half fixed, half random: many clients restarted by one daemon deploy don't reconnect in lockstep.
    const delayMs = ceilingMs / 2 + Math.random() * (ceilingMs / 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delayMs);
    // Only pending requests (their own timers) should keep a process alive, not retrying.
    this.reconnectTimer.unref();
  }

  private onMessage(text: string): void {
    let reply: unknown;
    try {
      reply = JSON.parse(text);
    } catch {
      return;
    }
    if (!isRecord(reply) || typeof reply.id !== 'number') return;
    const pending = this.inFlight.get(reply.id);
    if (!pending) return;
    this.inFlight.delete(reply.id);
    clearTimeout(pending.timer);
    const outcome = interpretReply(reply);
    if (outcome instanceof RateLimitRequestError) pending.reject(outcome);
    else pending.resolve(outcome);
  }
}

/** A reply with a known id: the decision, or the error to reject with. */
function interpretReply(reply: Record<string, unknown>): Decision | RateLimitRequestError {
  if (reply.type === 'error') {
    const code = typeof reply.code === 'string' ? reply.code : 'internal_error';
    const message = typeof reply.message === 'string' ? reply.message : code;
    return new RateLimitRequestError(code, message);
  }
  if (isDecisionReply(reply)) return reply;
  return new RateLimitRequestError('invalid_response', `unexpected reply from the daemon: ${JSON.stringify(reply).slice(0, 200)}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new TypeError(`${name} must be a positive number of milliseconds`);
  return value;
}

export interface HttpClientOptions {
  /** e.g. `http://127.0.0.1:8081` */
  baseUrl: string;
  token?: string;
  requestTimeoutMs?: number;
  failMode: FailMode;
}

/**
 * The same decisions over `POST /v1/check` and `/v1/consume`, one HTTP request each: for
 * scripts and short-lived processes where holding a socket open is not worth it.
 */
export class RateLimitHttpClient {
  private readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly requestTimeoutMs: number;
  private readonly failMode: FailMode;

  constructor(opts: HttpClientOptions) {
    if (opts.failMode !== 'open' && opts.failMode !== 'closed') {
      throw new TypeError(`failMode must be 'open' or 'closed', got ${String(opts.failMode)}`);
    }
    this.baseUrl = opts.baseUrl;
    this.token = opts.token;
    this.failMode = opts.failMode;
    this.requestTimeoutMs = positive(opts.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'requestTimeoutMs');
  }

  check(phoneNumber: string): Promise<Decision> {
    return this.post(ROUTES.check, { phoneNumber });
  }

  consume(phoneNumber: string, opts?: { ip?: string }): Promise<Decision> {
    return this.post(ROUTES.consume, { phoneNumber, ...(opts?.ip !== undefined ? { ip: opts.ip } : {}) });
  }

  private async post(route: string, body: { phoneNumber: string; ip?: string }): Promise<Decision> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    let status: number;
    let reply: unknown;
    try {
      const res = await fetch(new URL(route, this.baseUrl), {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.requestTimeoutMs),
      });
      status = res.status;
      const text = await res.text();
      try {
        reply = JSON.parse(text);
      } catch {
        reply = undefined;
      }
    } catch (err) {
      const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
      return unavailableDecision(this.failMode, body.phoneNumber, timedOut ? 'timeout' : 'not_connected');
    }
    if (status === 401 || status === 403) {
      const code = isRecord(reply) && typeof reply.code === 'string' ? reply.code : 'unauthorized';
      throw new RateLimitRequestError(code, `the daemon refused the request (HTTP ${status}); check the token`);
    }
    if (!isRecord(reply)) {
      // No JSON body: a proxy or load balancer answered, not the daemon.
      if (status >= 500 || status === 429) return unavailableDecision(this.failMode, body.phoneNumber, 'server_error');
      throw new RateLimitRequestError('invalid_response', `unexpected HTTP ${status} from the daemon`);
    }
    // Bodies may omit `type`; the status code says which shape it is.
    let shaped: Record<string, unknown> = reply;
    if (reply.type === undefined) {
      if (typeof reply.code === 'string' && status >= 400) shaped = { ...reply, type: 'error' };
      else if (status === 429 || typeof reply.reason === 'string') shaped = { ...reply, type: 'rate_limit_exceeded' };
      else shaped = { ...reply, type: 'rate_limit_status' };
    }
    if (shaped.type !== 'error' && status >= 500) return unavailableDecision(this.failMode, body.phoneNumber, 'server_error');
    const outcome = interpretReply(shaped);
    if (outcome instanceof RateLimitRequestError) throw outcome;
    return outcome;
  }
}
