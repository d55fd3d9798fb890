// The client services use to ask the daemon before placing a call or sending an SMS
// (docs/protocol.md), published as `phone-ratelimit/client`: the Node entry. One socket per client,
// pipelined requests matched by id (core.ts), the `ws` package for the socket (ws-node.ts) so a
// token can travel in the Authorization header, and an explicit failMode, because "the daemon
// cannot be asked" is a business decision, not a library's. Browsers: browser.ts.

import { EventEmitter } from 'node:events';
import { ClientCore, type CommonClientOptions, type OutcomeRecorded } from './core.js';
import type { Outcome } from '../protocol/wire.js';
import type { ClientState, Decision } from './decisions.js';
import { connectWithWs } from './ws-node.js';

export {
  DEFAULT_REQUEST_TIMEOUT_MS,
  RateLimitRequestError,
  isAllowed,
  unavailableDecision,
  type ClientState,
  type Decision,
  type DecisionSource,
  type FailMode,
  type RateLimitExceeded,
  type RateLimitStatus,
  type RequestErrorCode,
  type UnavailableReason,
} from './decisions.js';
export { DEFAULT_MAX_QUEUED, type OutcomeRecorded } from './core.js';
export type { Outcome } from '../protocol/wire.js';
export { RateLimitHttpClient, type HttpClientOptions } from './http.js';

export interface ClientOptions extends CommonClientOptions {
  /** Sent as `Authorization: Bearer <token>` on the upgrade. */
  token?: string;
}

export class RateLimitClient extends EventEmitter<{ state: [state: ClientState, cause?: Error] }> {
  private readonly core: ClientCore;

  constructor(opts: ClientOptions) {
    super();
    this.core = new ClientCore(opts, connectWithWs(opts.token), (state, cause) => this.emit('state', state, cause));
    this.core.start();
  }

  get state(): ClientState {
    return this.core.state;
  }

  /** Whether a consume now would be allowed; changes nothing. */
  check(phoneNumber: string): Promise<Decision> {
    return this.core.request({ type: 'rate_limit_check', phoneNumber });
  }

  /** Records one call attempt if allowed. `ip` (the end user's) is honoured only with a token. */
  consume(phoneNumber: string, opts?: { ip?: string }): Promise<Decision> {
    return this.core.request({ type: 'rate_limit_consume', phoneNumber, ...(opts?.ip !== undefined ? { ip: opts.ip } : {}) });
  }

  /**
   * Reports what happened to an allowed consume (docs/protocol.md *Outcomes*): `decisionId` from its
   * reply; `durationMs` required for `answered`. Needs a token. Resolves once recorded (or kept
   * by the daemon until its database is back); `duplicate` when it was reported already.
   * Rejects with RateLimitRequestError: `unknown_decision` (not issued, or older than 7 days),
   * `invalid_message` (a different outcome was reported already, or bad input), or
   * `daemon_unavailable` (not delivered: report it again later, a repeat counts once).
   */
  outcome(decisionId: string, outcome: Outcome, durationMs?: number): Promise<OutcomeRecorded> {
    return this.core.outcome({ type: 'rate_limit_outcome', decisionId, outcome, ...(durationMs !== undefined ? { durationMs } : {}) });
  }

  /**
   * Idempotent. Everything pending is answered by failMode at once (`client_closed`); a consume
   * already sent may still be counted by the daemon. Later calls reject with `client_closed`.
   */
  close(): Promise<void> {
    return this.core.close();
  }
}
