// The same decisions over `POST /v1/check` and `/v1/consume`, one HTTP request each: for scripts
// and short-lived processes where holding a socket open is not worth it. Part of the Node entry.

import { ROUTES, type Outcome } from '../protocol/wire.js';
import { outcomeUnavailable, type OutcomeRecorded } from './core.js';
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  RateLimitRequestError,
  checkFailMode,
  interpretOutcomeReply,
  interpretReply,
  isRecord,
  positive,
  unavailableDecision,
  type Decision,
  type FailMode,
} from './decisions.js';

export interface HttpClientOptions {
  /** e.g. `http://127.0.0.1:8081` */
  baseUrl: string;
  token?: string;
  requestTimeoutMs?: number;
  failMode: FailMode;
}

export class RateLimitHttpClient {
  private readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly requestTimeoutMs: number;
  private readonly failMode: FailMode;

  constructor(opts: HttpClientOptions) {
    checkFailMode(opts.failMode);
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

  /** As RateLimitClient.outcome(): POST /v1/outcome. */
  async outcome(decisionId: string, outcome: Outcome, durationMs?: number): Promise<OutcomeRecorded> {
    const sent = await this.send(ROUTES.outcome, { decisionId, outcome, ...(durationMs !== undefined ? { durationMs } : {}) });
    if ('failed' in sent) throw outcomeUnavailable(sent.failed);
    const { status, reply } = sent;
    if (!isRecord(reply)) {
      if (status >= 500 || status === 429) throw outcomeUnavailable('server_error');
      throw new RateLimitRequestError('invalid_response', `unexpected HTTP ${status} from the daemon`);
    }
    const shaped = reply.type === undefined && typeof reply.code === 'string' && status >= 400 ? { ...reply, type: 'error' } : reply;
    if (shaped.type === 'error' && status >= 500) throw outcomeUnavailable('server_error');
    const r = interpretOutcomeReply(shaped);
    if (r instanceof RateLimitRequestError) throw r;
    return r;
  }

  /** POSTs JSON; the status and the parsed body (undefined when not JSON), or why nothing came back. */
  private async send(route: string, body: unknown): Promise<{ status: number; reply: unknown } | { failed: 'timeout' | 'not_connected' }> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    try {
      const res = await fetch(new URL(route, this.baseUrl), {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.requestTimeoutMs),
      });
      const text = await res.text();
      let reply: unknown;
      try {
        reply = JSON.parse(text);
      } catch {
        reply = undefined;
      }
      return { status: res.status, reply };
    } catch (err) {
      const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
      return { failed: timedOut ? 'timeout' : 'not_connected' };
    }
  }

  private async post(route: string, body: { phoneNumber: string; ip?: string }): Promise<Decision> {
    const sent = await this.send(route, body);
    if ('failed' in sent) return unavailableDecision(this.failMode, body.phoneNumber, sent.failed);
    const { status, reply } = sent;
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
