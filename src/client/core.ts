// The WebSocket client's logic, whatever the socket: request ids and pipelining on one
// connection, per-request timeouts, a bounded queue while disconnected, reconnects with backoff
// and jitter, and failMode answers. The Node entry (index.ts, the `ws` package) and the browser
// entry (browser.ts, the native WebSocket) each give it a Connect function. Runs in browsers:
// no Node API here (test/client/imports.test.ts checks the browser entry's import graph).

import { DEFAULT_MAX_FRAME_BYTES } from '../protocol/wire.js';
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  RateLimitRequestError,
  checkFailMode,
  interpretOutcomeReply,
  interpretReply,
  isRecord,
  positive,
  unavailableDecision,
  type ClientState,
  type Decision,
  type FailMode,
  type UnavailableReason,
} from './decisions.js';

/** What both entries accept. */
export interface CommonClientOptions {
  /** e.g. `ws://127.0.0.1:8081/ws` */
  url: string;
  /** Per request, from the call (queueing included) to the reply. Default DEFAULT_REQUEST_TIMEOUT_MS (3000). */
  requestTimeoutMs?: number;
  /** What a decision is when the daemon cannot be asked. Required on purpose: see docs/client.md. */
  failMode: FailMode;
  /** Exponential backoff with jitter between connection attempts. Defaults 200 and 10000. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Requests allowed to wait while disconnected; more are answered by failMode at once. Default 1000. */
  maxQueued?: number;
}

/** How a connection ended, as far as its transport could tell. */
export interface ConnectionEnd {
  code: number;
  reason: string;
  /** The HTTP status that refused the upgrade (Node only: browsers hide it). */
  refusedStatus?: number;
  error?: Error;
}

export interface ConnectionEvents {
  open(): void;
  message(text: string): void;
  /** Exactly once per connection, also after terminate() and after a failed attempt. Never
   * called from within Connect itself: always later, from the socket's own events. */
  close(end: ConnectionEnd): void;
}

export interface Connection {
  send(frame: string): void;
  /** The closing handshake. */
  close(code: number, reason: string): void;
  /** Now, without a handshake (still followed by events.close). */
  terminate(): void;
}

/** Opens one connection attempt to `url`. */
export type Connect = (url: string, events: ConnectionEvents) => Connection;

export const DEFAULT_MAX_QUEUED = 1000;
const DEFAULT_RECONNECT_INITIAL_DELAY_MS = 200;
const DEFAULT_RECONNECT_MAX_DELAY_MS = 10_000;
// Waiting longer for the server's close frame would only delay the caller's shutdown.
const CLOSE_HANDSHAKE_TIMEOUT_MS = 1000;

type Timer = ReturnType<typeof setTimeout>;

interface PendingRequest {
  readonly frame: string;
  /** The daemon's reply to it arrived. */
  readonly answer: (reply: Record<string, unknown>) => void;
  /** No reply will come (timeout, lost connection, closed client, full queue). */
  readonly unavailable: (reason: UnavailableReason) => void;
  readonly reject: (err: RateLimitRequestError) => void;
  readonly timer: Timer;
}

/** What the daemon says to an outcome (docs/protocol.md *Outcomes*). */
export interface OutcomeRecorded {
  decisionId: string;
  /** This decision's outcome had been reported already (the same one): counted once. */
  duplicate: boolean;
}

/** An outcome the client could not deliver: the caller may retry it later (outcomes are idempotent). */
export function outcomeUnavailable(reason: UnavailableReason): RateLimitRequestError {
  return new RateLimitRequestError('daemon_unavailable', `the outcome was not delivered (${reason}); report it again later: a repeat counts once`);
}

/** Node's timers keep the process alive unless unref'd; browsers' have no such method. */
function unref(timer: Timer): void {
  (timer as { unref?: () => void }).unref?.();
}

const encoder = new TextEncoder();

export class ClientCore {
  private readonly url: string;
  private readonly requestTimeoutMs: number;
  private readonly failMode: FailMode;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxQueued: number;

  private nextId = 1;
  // Map iteration order is insertion order, so queued requests go out in call order.
  private readonly queued = new Map<number, PendingRequest>();
  private readonly inFlight = new Map<number, PendingRequest>();
  private connection: Connection | undefined;
  private currentState: ClientState = 'closed';
  private failedAttempts = 0;
  private reconnectTimer: Timer | undefined;
  private authRefusal: RateLimitRequestError | undefined;
  private closing: Promise<void> | undefined;
  private closed: (() => void) | undefined;

  constructor(
    opts: CommonClientOptions,
    private readonly connectTo: Connect,
    private readonly onState: (state: ClientState, cause?: Error) => void,
  ) {
    checkFailMode(opts.failMode);
    this.url = opts.url;
    this.failMode = opts.failMode;
    this.requestTimeoutMs = positive(opts.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'requestTimeoutMs');
    this.initialDelayMs = positive(opts.reconnect?.initialDelayMs, DEFAULT_RECONNECT_INITIAL_DELAY_MS, 'reconnect.initialDelayMs');
    this.maxDelayMs = Math.max(this.initialDelayMs, positive(opts.reconnect?.maxDelayMs, DEFAULT_RECONNECT_MAX_DELAY_MS, 'reconnect.maxDelayMs'));
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    if (!Number.isInteger(this.maxQueued) || this.maxQueued < 0) throw new TypeError('maxQueued must be a non-negative integer');
  }

  get state(): ClientState {
    return this.currentState;
  }

  /** Separate from the constructor so an entry can finish wiring its listeners first. */
  start(): void {
    this.connect();
  }

  request(message: { type: 'rate_limit_check' | 'rate_limit_consume'; phoneNumber: string; ip?: string }): Promise<Decision> {
    const { phoneNumber } = message;
    return this.send<Decision>(message, (resolve, reject) => ({
      answer: (reply) => {
        const decision = interpretReply(reply);
        if (decision instanceof RateLimitRequestError) reject(decision);
        else resolve(decision);
      },
      unavailable: (reason) => resolve(unavailableDecision(this.failMode, phoneNumber, reason)),
    }));
  }

  /** Reports what happened to an allowed call; rejects (never a failMode answer) when it cannot be delivered. */
  outcome(message: { type: 'rate_limit_outcome'; decisionId: string; outcome: string; durationMs?: number }): Promise<OutcomeRecorded> {
    return this.send<OutcomeRecorded>(message, (resolve, reject) => ({
      answer: (reply) => {
        const r = interpretOutcomeReply(reply);
        if (r instanceof RateLimitRequestError) reject(r);
        else resolve(r);
      },
      unavailable: (reason) => reject(outcomeUnavailable(reason)),
    }));
  }

  private send<T>(
    message: Record<string, unknown>,
    handlers: (resolve: (value: T) => void, reject: (err: RateLimitRequestError) => void) => Pick<PendingRequest, 'answer' | 'unavailable'>,
  ): Promise<T> {
    if (this.closing) return Promise.reject(new RateLimitRequestError('client_closed', 'RateLimitClient is closed'));
    if (this.authRefusal && this.currentState !== 'open') return Promise.reject(this.authRefusal);
    const id = this.nextId++;
    const frame = JSON.stringify({ ...message, id });
    // The daemon closes the whole socket on an oversized frame, which would fail everyone in flight.
    if (encoder.encode(frame).byteLength > DEFAULT_MAX_FRAME_BYTES) {
      return Promise.reject(new RateLimitRequestError('invalid_message', `request larger than ${DEFAULT_MAX_FRAME_BYTES} bytes`));
    }
    const connection = this.connection;
    const connected = this.currentState === 'open' && connection !== undefined;
    return new Promise<T>((resolve, reject) => {
      const { answer, unavailable } = handlers(resolve, reject);
      if (!connected && this.queued.size >= this.maxQueued) {
        unavailable('queue_full');
        return;
      }
      const timer = setTimeout(() => this.expire(id), this.requestTimeoutMs);
      const pending: PendingRequest = { frame, answer, unavailable, reject, timer };
      if (connected) {
        this.inFlight.set(id, pending);
        connection.send(frame);
      } else {
        this.queued.set(id, pending);
      }
    });
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
    const connection = this.connection;
    this.closing = new Promise<void>((resolve) => {
      if (!connection) {
        this.setState('closed');
        resolve();
        return;
      }
      const killTimer = setTimeout(() => connection.terminate(), CLOSE_HANDSHAKE_TIMEOUT_MS);
      this.closed = () => {
        clearTimeout(killTimer);
        resolve();
      };
      if (this.currentState === 'connecting') connection.terminate();
      else connection.close(1000, 'client closing');
    });
    return this.closing;
  }

  private expire(id: number): void {
    const queued = this.queued.get(id);
    if (queued) {
      this.queued.delete(id);
      queued.unavailable('not_connected');
      return;
    }
    const sent = this.inFlight.get(id);
    if (sent) {
      // A late reply for this id will find nothing and be ignored.
      this.inFlight.delete(id);
      sent.unavailable('timeout');
    }
  }

  private settleAll(requests: Map<number, PendingRequest>, reason: UnavailableReason): void {
    for (const pending of requests.values()) {
      clearTimeout(pending.timer);
      pending.unavailable(reason);
    }
    requests.clear();
  }

  private setState(state: ClientState, cause?: Error): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.onState(state, cause);
  }

  private connect(): void {
    if (this.closing) return;
    const connection = this.connectTo(this.url, {
      open: () => this.onOpen(connection),
      message: (text) => this.onMessage(text),
      close: (end) => this.onClose(connection, end),
    });
    // Before the state event, so a listener that calls close() finds the attempt to end.
    this.connection = connection;
    this.setState('connecting');
  }

  private onOpen(connection: Connection): void {
    this.failedAttempts = 0;
    this.authRefusal = undefined;
    this.setState('open');
    for (const [id, pending] of this.queued) {
      this.queued.delete(id);
      this.inFlight.set(id, pending);
      connection.send(pending.frame);
    }
  }

  private onClose(connection: Connection, end: ConnectionEnd): void {
    if (this.connection === connection) this.connection = undefined;
    // Not retried: a consume may have been counted even though its reply never came.
    this.settleAll(this.inFlight, 'connection_lost');
    if (end.refusedStatus === 401 || end.refusedStatus === 403) {
      this.authRefusal = new RateLimitRequestError('unauthorized', `the daemon refused the connection (HTTP ${end.refusedStatus}); check the token`);
      for (const pending of this.queued.values()) {
        clearTimeout(pending.timer);
        pending.reject(this.authRefusal);
      }
      this.queued.clear();
    }
    const cause =
      this.authRefusal ??
      end.error ??
      (end.code === 1000 || end.code === 1005 ? undefined : new Error(`connection closed (${end.code}${end.reason.length > 0 ? ` ${end.reason}` : ''})`));
    this.setState('closed', cause);
    if (this.closing) this.closed?.();
    else this.scheduleReconnect();
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
    unref(this.reconnectTimer);
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
    pending.answer(reply);
  }
}
