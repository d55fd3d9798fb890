// The browser entry, `phone-ratelimit/client/browser`: the same client core over the browser's
// own WebSocket, for a page that tells the user "2 of 2 calls used, next in 43 min" before they
// press Call. A browser authenticates by its Origin (the daemon's ALLOWED_ORIGINS), never with a
// token (anything in a page is public), and may only check: consume is refused here, before the
// daemon would answer `forbidden`. Imports no package and no Node builtin, so it loads from
// plain relative ESM paths (test/client/imports.test.ts checks its import graph).

import { ClientCore, type CommonClientOptions, type Connect, type Connection } from './core.js';
import { RateLimitRequestError, type ClientState, type Decision } from './decisions.js';

export {
  DEFAULT_REQUEST_TIMEOUT_MS,
  RateLimitRequestError,
  isAllowed,
  type ClientState,
  type Decision,
  type DecisionSource,
  type FailMode,
  type RateLimitExceeded,
  type RateLimitStatus,
  type RequestErrorCode,
  type UnavailableReason,
} from './decisions.js';

export interface BrowserClientOptions extends CommonClientOptions {
  /** Called on every change of `state`, with the reason when it becomes `closed` unexpectedly. */
  onState?: (state: ClientState, cause?: Error) => void;
}

// The part of the WHATWG WebSocket this file uses; the project compiles without the DOM lib.
interface NativeWebSocket {
  readonly readyState: number;
  onopen: (() => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: (() => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
type NativeWebSocketConstructor = new (url: string) => NativeWebSocket;

function nativeWebSocket(): NativeWebSocketConstructor {
  const ctor = (globalThis as { WebSocket?: NativeWebSocketConstructor }).WebSocket;
  if (typeof ctor !== 'function') {
    throw new TypeError('this environment has no global WebSocket: in Node use `phone-ratelimit/client`');
  }
  return ctor;
}

/** The page's own origin, for messages; undefined outside a page. */
function pageOrigin(): string | undefined {
  const origin = (globalThis as { location?: { origin?: unknown } }).location?.origin;
  return typeof origin === 'string' ? origin : undefined;
}

function connectNative(ctor: NativeWebSocketConstructor): Connect {
  return (url, events): Connection => {
    const socket = new ctor(url);
    let opened = false;
    let ended = false;
    const end = (code: number, reason: string, error?: Error) => {
      if (ended) return;
      ended = true;
      socket.onopen = socket.onmessage = socket.onclose = null;
      events.close({ code, reason, ...(error !== undefined ? { error } : {}) });
    };
    // Browsers give the error event no detail, and a close event always follows it.
    socket.onerror = () => {};
    socket.onopen = () => {
      opened = true;
      events.open();
    };
    socket.onmessage = (event) => {
      // The daemon sends text frames only; a binary one is not the daemon talking.
      if (typeof event.data === 'string') events.message(event.data);
    };
    socket.onclose = (event) => {
      // Browsers hide why an upgrade failed (a refused origin looks like an unreachable host),
      // so the message names both.
      const origin = pageOrigin();
      const error = opened
        ? undefined
        : new Error(`could not connect to ${url}: the daemon is unreachable, or ${origin ?? 'this page'}'s origin is not in its ALLOWED_ORIGINS`);
      end(event.code, event.reason, error);
    };
    return {
      send: (frame) => socket.send(frame),
      close: (code, reason) => socket.close(code, reason),
      // A browser cannot drop a socket without the closing handshake: stop listening and let it go.
      terminate: () => {
        socket.close();
        queueMicrotask(() => end(1006, 'terminated'));
      },
    };
  };
}

export class BrowserRateLimitClient {
  private readonly core: ClientCore;

  constructor(opts: BrowserClientOptions) {
    if ((opts as { token?: unknown }).token !== undefined) {
      throw new TypeError('a browser client takes no token: anything in a page is public. List the page origin in the daemon ALLOWED_ORIGINS instead');
    }
    const onState = opts.onState;
    this.core = new ClientCore(opts, connectNative(nativeWebSocket()), (state, cause) => onState?.(state, cause));
    this.core.start();
  }

  get state(): ClientState {
    return this.core.state;
  }

  /** Whether a consume now would be allowed, with the number's used/limit/resetTime; changes nothing. */
  check(phoneNumber: string): Promise<Decision> {
    return this.core.request({ type: 'rate_limit_check', phoneNumber });
  }

  /**
   * Always rejects with `forbidden`: the daemon lets browser origins only check, and a page must
   * not be the one deciding that a call is placed. Consume from your backend, with a token.
   */
  consume(_phoneNumber: string): Promise<never> {
    return Promise.reject(
      new RateLimitRequestError(
        'forbidden',
        'browsers may only check: consume from your backend with a token (phone-ratelimit/client), right before it places the call',
      ),
    );
  }

  /** Idempotent; pending checks are answered by failMode (`client_closed`). */
  close(): Promise<void> {
    return this.core.close();
  }
}
