// The HTTP transport: routing (/health, /metrics, /v1/check, /v1/consume), CORS, bodies, and
// HTTP statuses and headers. Separate from the WebSocket transport because its life is one
// request; both hand parsed requests to the same Decider.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Config } from '../../core/config.js';
import { ROUTES } from '../../protocol/wire.js';
import { errorReply, httpStatus, replyText } from '../../protocol/replies.js';
import { RequestParser } from '../../protocol/schema.js';
import { canonicalAddress } from '../../core/address.js';
import { mayReportOutcomes, type Authenticator } from '../auth.js';
import type { OutcomeRecorder } from '../outcomes.js';
import { answerTwilio, TWILIO_MAX_BODY_BYTES } from './twilio.js';
import type { Decider } from '../decider.js';
import { TokenBucket } from '../limits.js';
import { boundedCache } from '../bounded-cache.js';
import type { Metrics } from '../metrics.js';
import type { ClientAddresses } from './client-address.js';
import type { ClientLog } from './client-log.js';
import type { ConnectionGate } from './connections.js';
import { parseTarget, quoteTarget } from './target.js';

/** `ip` fields become quota keys the way every other address does (src/core/address.ts). */
const requests = new RequestParser(canonicalAddress);

export interface Health {
  status: 'ok' | 'degraded';
  database: 'up' | 'down';
  source: 'database' | 'memory';
  pendingWrites: number;
  connections: number;
  uptimeS: number;
  version: string;
}

export interface HttpTransportOptions {
  config: Config;
  auth: Authenticator;
  decider: Decider;
  outcomes: OutcomeRecorder;
  metrics: Metrics;
  logger: Logger;
  addresses: ClientAddresses;
  gate: ConnectionGate;
  /** Where client-caused problems are logged, rate-limited. */
  clientLog: ClientLog;
  /** RATELIMIT_METRICS_PORT is set: /metrics is served there, and is a 404 here. */
  metricsElsewhere?: boolean;
  health: () => Health;
  /** True once the daemon is shutting down: decisions are refused with 503. */
  isShuttingDown: () => boolean;
}

const HTTP_BUCKETS = 100_000;

export class HttpTransport {
  private readonly buckets = boundedCache<string, TokenBucket>(HTTP_BUCKETS);
  private active = 0;

  constructor(private readonly opts: HttpTransportOptions) {}

  /** Requests being handled now; shutdown waits for these. */
  get inFlight(): number {
    return this.active;
  }

  /** Never rejects: whatever a request does, it ends with an answer or a closed socket. */
  async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.active++;
    try {
      await this.route(req, res);
    } catch (err) {
      if (req.destroyed || (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
        // The client went away mid-request (an aborted body): its doing, so rate-limited.
        this.opts.clientLog.warn(
          'request_aborted',
          { err: (err as Error).message, peer: req.socket.remoteAddress },
          'a client closed its connection before its request was read',
        );
      } else {
        this.opts.logger.error({ err }, 'http handler failed');
      }
      if (!res.headersSent && !res.destroyed) json(res, 500, errorReply('internal_error', 'internal error'));
      else res.destroy();
    } finally {
      this.active--;
    }
  }

  /** A client's malformed request: 400 with the reason, and a rate-limited log line. */
  private badRequest(req: IncomingMessage, res: ServerResponse, message: string): void {
    this.opts.clientLog.warn('bad_request', { peer: req.socket.remoteAddress }, `answered 400: ${message}`);
    res.shouldKeepAlive = false;
    json(res, 400, errorReply('invalid_message', message));
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { config, metrics } = this.opts;
    const admission = this.opts.gate.admission(req.socket);
    // Answered (503/429) when it connected; whatever it asks now gets nothing more.
    if (admission === 'refused') return void req.socket.destroy();
    const target = parseTarget(req.url);
    if (!target.ok) return this.badRequest(req, res, target.message);
    const path = target.path;
    if (admission === 'reserve') {
      // Over the connection cap: this connection exists so /health and /metrics keep answering.
      res.shouldKeepAlive = false;
      if (path !== ROUTES.health && path !== ROUTES.metrics) {
        return json(res, 503, errorReply('internal_error', 'the daemon is at its connection limit; retry later'), { 'Retry-After': '1' });
      }
    }
    if (path === ROUTES.health) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, errorReply('invalid_message', 'use GET'), { Allow: 'GET' });
      if (this.opts.isShuttingDown()) return json(res, 503, { ...this.opts.health(), status: 'shutting_down' });
      return json(res, 200, this.opts.health());
    }
    if (path === ROUTES.metrics && !this.opts.metricsElsewhere) {
      if (req.method !== 'GET') return json(res, 405, errorReply('invalid_message', 'use GET'), { Allow: 'GET' });
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (path === ROUTES.ws) {
      return json(res, 426, errorReply('invalid_message', `${ROUTES.ws} is a WebSocket endpoint: send the upgrade (Connection: Upgrade, Upgrade: websocket)`), {
        Upgrade: 'websocket',
        Connection: 'Upgrade',
      });
    }
    if (path === ROUTES.twilioStatus) return this.twilio(req, res, target.params);
    const outcome = path === ROUTES.outcome;
    if (path !== ROUTES.check && path !== ROUTES.consume && !outcome) {
      const routes = [
        ROUTES.check,
        ROUTES.consume,
        ROUTES.outcome,
        ROUTES.twilioStatus,
        ROUTES.health,
        ...(this.opts.metricsElsewhere ? [] : [ROUTES.metrics]),
        ROUTES.ws,
      ];
      return json(res, 404, errorReply('invalid_message', `no route ${quoteTarget(path)}; see ${routes.join(', ')}`));
    }
    const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
    // Browsers never report outcomes: no CORS for that route.
    const cors: Record<string, string> = !outcome && this.opts.auth.isAllowedOrigin(origin) ? { 'Access-Control-Allow-Origin': origin!, Vary: 'Origin' } : {};
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        ...cors,
        'Access-Control-Allow-Methods': 'POST',
        'Access-Control-Allow-Headers': 'Authorization, Content-Type',
        'Access-Control-Max-Age': '600',
      });
      res.end();
      return;
    }
    if (req.method !== 'POST') return json(res, 405, errorReply('invalid_message', 'use POST'), { Allow: 'POST', ...cors });
    if (this.opts.isShuttingDown())
      return json(res, 503, errorReply('internal_error', 'shutting down; retry on another instance'), { 'Retry-After': '1', ...cors });
    const auth = this.opts.auth.authenticate(req, target.params);
    if (!auth.ok) {
      this.opts.clientLog.warn(
        `http_${auth.kind}`,
        { status: auth.status, reason: auth.kind, origin: origin && quoteTarget(origin), peer: req.socket.remoteAddress },
        `refused ${path} (${auth.status}): ${auth.message}`,
      );
      return json(res, auth.status, errorReply(auth.status === 401 ? 'unauthorized' : 'forbidden', auth.message), {
        ...(auth.status === 401 ? { 'WWW-Authenticate': 'Bearer' } : {}),
        ...cors,
      });
    }
    if (outcome && !mayReportOutcomes(auth.role, origin)) return json(res, 403, errorReply('forbidden', 'only a service (a token) may report outcomes'), cors);
    const ip = this.opts.addresses.of(req);
    if (auth.role !== 'service') {
      let bucket = this.buckets.get(ip);
      if (!bucket) this.buckets.set(ip, (bucket = new TokenBucket(config.messagesPerSecond)));
      if (!bucket.take()) return json(res, 429, errorReply('too_many_requests', 'too many requests from this address'), { 'Retry-After': '1', ...cors });
    }
    const body = await readBody(req, config.maxFrameBytes);
    if (body === null) return json(res, 413, errorReply('invalid_message', `body larger than ${config.maxFrameBytes} bytes`), cors);
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch {
      return json(res, 400, errorReply('invalid_json', 'the body is not valid JSON'), cors);
    }
    const type = path === ROUTES.check ? 'rate_limit_check' : outcome ? 'rate_limit_outcome' : 'rate_limit_consume';
    if (typeof value === 'object' && value !== null && 'type' in value && (value as { type: unknown }).type !== type) {
      return json(res, 400, errorReply('invalid_message', `"type" must be ${type} on ${path} (or be left out)`), cors);
    }
    const parsed = requests.parseRequest(value, type);
    const reply = !parsed.ok
      ? parsed.error
      : parsed.request.type === 'rate_limit_outcome'
        ? await this.opts.outcomes.record(parsed.request, 'http')
        : await this.opts.decider.decide(parsed.request, auth.role, ip);
    if (reply.type === 'error') metrics.errors.inc({ code: reply.code });
    const status = httpStatus(reply);
    // A block or destination denial without an end has no Retry-After to give.
    const retryMs = reply.type === 'rate_limit_exceeded' ? reply.retryAfterMs : null;
    const headers = retryMs !== null ? { 'Retry-After': String(Math.max(1, Math.ceil(retryMs / 1000))), ...cors } : cors;
    send(res, status, replyText(reply), headers);
  }

  /** POST /v1/twilio/status: authenticated by Twilio's signature, not by a token (transport/twilio.ts). */
  private async twilio(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): Promise<void> {
    if (req.method !== 'POST') return json(res, 405, errorReply('invalid_message', 'use POST'), { Allow: 'POST' });
    if (this.opts.isShuttingDown()) return json(res, 503, errorReply('internal_error', 'shutting down; retry on another instance'), { 'Retry-After': '1' });
    const body = await readBody(req, TWILIO_MAX_BODY_BYTES);
    if (body === null) return json(res, 413, errorReply('invalid_message', `body larger than ${TWILIO_MAX_BODY_BYTES} bytes`));
    const answer = await answerTwilio(req, query, body, this.opts);
    if ('code' in answer.body) this.opts.metrics.errors.inc({ code: answer.body.code });
    json(res, answer.status, answer.body);
  }
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  send(res, status, JSON.stringify(body), headers);
}

function send(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** The body as text, or null when it is larger than `maxBytes` (the rest is not read). */
function readBody(req: IncomingMessage, maxBytes: number): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > maxBytes) {
        done = true;
        resolve(null);
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!done) resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', reject);
  });
}
