import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import type { Decision } from '../core/policy.js';
import { ROUTES } from '../core/defaults.js';
import { InvalidPhoneNumberError } from '../core/errors.js';
import { hashPhone, maskPhone, normalizePhone } from '../core/phone.js';
import type { Pool } from '../db/pool.js';
import { Authenticator, clientAddress, type Role } from './auth.js';
import { DecisionEngine, type EngineOptions, type PhoneDecision, type PhoneSubject } from './engine.js';
import { ConnectionCounter, IpLimiter, TokenBucket } from './limits.js';
import { LruMap } from './memory.js';
import { createMetrics, type Metrics } from './metrics.js';
import { errorReply, parseFrame, parseRequest, type Reply, type Request, type StatusReply, type ExceededReply } from './protocol.js';

export interface DaemonOptions {
  config: Config;
  pool: Pool;
  /** For the reset listener (LISTEN/NOTIFY). */
  databaseUrl: string;
  phoneKey: string;
  logger: Logger;
  version: string;
  /** Overrides for tests and benchmarks. */
  engine?: Partial<Pick<EngineOptions, 'maxBatch' | 'maxInFlight' | 'probeInitialDelayMs' | 'probeMaxDelayMs' | 'beforeRecovery'>>;
  pingIntervalMs?: number;
}

interface Client {
  role: Role;
  ip: string;
  /** Messages per second, for clients without a token. */
  bucket: TokenBucket | undefined;
  inFlight: number;
  /** Replies leave in request order: each waits for the one before it. */
  tail: Promise<void>;
  alive: boolean;
  closing: boolean;
}

// A pipelining client that never reads its replies must not grow our memory without bound.
const MAX_IN_FLIGHT_PER_SOCKET = 8_192;
// Fly's proxy drops connections idle for ~60 s; pings keep live ones open and find dead ones.
const DEFAULT_PING_INTERVAL_MS = 25_000;
const PHONE_CACHE_SIZE = 50_000;

export class Daemon {
  readonly metrics: Metrics;
  readonly engine: DecisionEngine;
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly auth: Authenticator;
  private readonly ipLimiter: IpLimiter;
  private readonly connections: ConnectionCounter;
  private readonly httpBuckets = new LruMap<string, TokenBucket>(100_000);
  private readonly clients = new Map<WebSocket, Client>();
  private readonly sockets = new Set<Socket>();
  private readonly corked = new Set<Socket>();
  private readonly phoneCache = new LruMap<string, PhoneSubject>(PHONE_CACHE_SIZE);
  private readonly startedAt = Date.now();
  private pingTimer: NodeJS.Timeout | undefined;
  private shutdownPromise: Promise<number> | undefined;
  private httpInFlight = 0;

  constructor(private readonly opts: DaemonOptions) {
    const { config, logger } = opts;
    this.metrics = createMetrics();
    this.engine = new DecisionEngine({
      pool: opts.pool,
      url: opts.databaseUrl,
      policy: config.phonePolicy,
      logger,
      metrics: this.metrics,
      denyCache: config.denyCache,
      ...opts.engine,
    });
    this.auth = new Authenticator(config.apiTokens, config.allowedOrigins);
    this.ipLimiter = new IpLimiter(config.ipPolicy);
    this.connections = new ConnectionCounter(config.maxConnectionsPerIp);
    this.http = createServer({ keepAliveTimeout: 65_000 }, (req, res) => void this.onHttp(req, res));
    this.http.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.wss = new WebSocketServer({ noServer: true, maxPayload: config.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
    this.http.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    this.pingTimer = setInterval(() => this.ping(), opts.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS);
    this.pingTimer.unref();
  }

  get connectionCount(): number {
    return this.clients.size;
  }

  get uptimeMs(): number {
    return Date.now() - this.startedAt;
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.opts.config.port, this.opts.config.host, () => {
        this.http.off('error', reject);
        resolve(this.http.address() as AddressInfo);
      });
    });
  }

  // ---- decisions, shared by WebSocket and HTTP ------------------------------------------

  private subject(phoneNumber: string): PhoneSubject & { e164: string } {
    const cached = this.phoneCache.get(phoneNumber) as (PhoneSubject & { e164: string }) | undefined;
    if (cached) return cached;
    const { e164, region } = normalizePhone(phoneNumber);
    const s = { e164, hash: hashPhone(e164, this.opts.phoneKey), region, masked: maskPhone(e164) };
    this.phoneCache.set(phoneNumber, s);
    return s;
  }

  /** Never rejects: every request gets exactly one reply. */
  async decide(req: Request, role: Role, socketIp: string): Promise<Reply> {
    const id = req.id;
    try {
      let s;
      try {
        s = this.subject(req.phoneNumber);
      } catch (err) {
        if (err instanceof InvalidPhoneNumberError) return errorReply('invalid_phone_number', err.message, id);
        throw err;
      }
      if (req.type === 'rate_limit_check') {
        const d = await this.engine.check(s);
        this.metrics.decisions.inc({ kind: 'check', result: d.allowed ? 'allowed' : 'denied', reason: d.allowed ? '' : 'phone', source: d.metricSource });
        return decisionReply(id, s.e164, s.region, d);
      }
      if (role === 'browser') return errorReply('forbidden', 'browser clients may only check; consume needs a token', id);
      // Only a token-holding service may speak for the end user's address.
      const ip = role === 'service' && req.ip ? req.ip : socketIp;
      const slot = this.ipLimiter.reserve(ip);
      if (!slot.decision.allowed) {
        this.metrics.decisions.inc({ kind: 'consume', result: 'denied', reason: 'ip', source: 'memory' });
        return decisionReply(id, s.e164, s.region, { ...slot.decision, source: this.engine.mode }, 'ip_rate_limit_exceeded');
      }
      let d: PhoneDecision;
      try {
        d = await this.engine.consume(s);
      } catch (err) {
        this.ipLimiter.refund(ip, slot.atMs);
        throw err;
      }
      if (!d.allowed) this.ipLimiter.refund(ip, slot.atMs);
      this.metrics.decisions.inc({ kind: 'consume', result: d.allowed ? 'allowed' : 'denied', reason: d.allowed ? '' : 'phone', source: d.metricSource });
      return decisionReply(id, s.e164, s.region, d, d.allowed ? undefined : 'phone_rate_limit_exceeded');
    } catch (err) {
      this.opts.logger.error({ err: (err as Error).message }, 'request failed');
      return errorReply('internal_error', 'the request could not be decided; retry', id);
    }
  }

  // ---- WebSocket ------------------------------------------------------------------------

  private refuse(socket: Duplex, status: number, message: string): void {
    const body = JSON.stringify(errorReply(status === 429 ? 'too_many_requests' : 'forbidden', message));
    const reason = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' }[status] ?? 'Error';
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        (status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '') +
        `\r\n${body}`,
    );
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== ROUTES.ws) return this.refuse(socket, 404, `no WebSocket endpoint at ${url.pathname}; use ${ROUTES.ws}`);
    if (this.shutdownPromise) return this.refuse(socket, 503, 'shutting down');
    const auth = this.auth.authenticate(req, url);
    if (!auth.ok) return this.refuse(socket, auth.status, auth.message);
    const ip = clientAddress(req, this.opts.config.trustProxy);
    if (!this.connections.acquire(ip)) return this.refuse(socket, 429, 'too many connections from this address');
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, auth.role, ip));
  }

  private onConnection(ws: WebSocket, role: Role, ip: string): void {
    const client: Client = {
      role,
      ip,
      bucket: role === 'service' ? undefined : new TokenBucket(this.opts.config.messagesPerSecond),
      inFlight: 0,
      tail: Promise.resolve(),
      alive: true,
      closing: false,
    };
    this.clients.set(ws, client);
    this.metrics.connections.set(this.clients.size);
    ws.on('pong', () => (client.alive = true));
    ws.on('message', (data, isBinary) => this.onMessage(ws, client, data, isBinary));
    ws.on('error', (err) => this.opts.logger.debug({ err: err.message }, 'websocket error'));
    ws.on('close', () => {
      this.clients.delete(ws);
      this.connections.release(ip);
      this.metrics.connections.set(this.clients.size);
    });
  }

  private onMessage(ws: WebSocket, client: Client, data: RawData, isBinary: boolean): void {
    client.alive = true;
    if (client.closing) return;
    let reply: Reply | Promise<Reply>;
    if (isBinary) {
      reply = errorReply('invalid_message', 'binary frames are not supported; send JSON text frames');
    } else if (client.bucket && !client.bucket.take()) {
      reply = errorReply('too_many_requests', `more than ${this.opts.config.messagesPerSecond} messages per second on this connection`);
    } else if (client.inFlight >= MAX_IN_FLIGHT_PER_SOCKET) {
      reply = errorReply('too_many_requests', `more than ${MAX_IN_FLIGHT_PER_SOCKET} requests waiting on this connection; read the replies`);
    } else {
      const parsed = parseFrame(data.toString());
      reply = parsed.ok ? this.decide(parsed.request, client.role, client.ip) : parsed.error;
    }
    if (!(reply instanceof Promise) && reply.type === 'error') this.metrics.errors.inc({ code: reply.code });
    client.inFlight++;
    const pending = reply;
    client.tail = client.tail
      .then(() => pending)
      .then((r) => {
        client.inFlight--;
        if (r.type === 'error' && pending instanceof Promise) this.metrics.errors.inc({ code: r.code });
        if (ws.readyState === ws.OPEN) this.sendCorked(ws, JSON.stringify(r));
      });
  }

  /**
   * Replies of one batch resolve together; corking the socket until the next tick turns their
   * writes into one writev instead of a syscall per reply (it was 13% of the daemon's CPU).
   */
  private sendCorked(ws: WebSocket, text: string): void {
    const socket = (ws as unknown as { _socket?: Socket })._socket;
    if (socket && !this.corked.has(socket)) {
      this.corked.add(socket);
      socket.cork();
      process.nextTick(() => {
        this.corked.delete(socket);
        socket.uncork();
      });
    }
    ws.send(text);
  }

  private ping(): void {
    for (const [ws, client] of this.clients) {
      if (!client.alive) {
        ws.terminate();
        continue;
      }
      client.alive = false;
      ws.ping();
    }
  }

  // ---- HTTP -----------------------------------------------------------------------------

  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  health(): { status: 'ok' | 'degraded'; database: 'up' | 'down'; source: 'database' | 'memory'; pendingWrites: number; connections: number; uptimeS: number; version: string } {
    const up = this.engine.mode === 'database';
    return {
      status: up ? 'ok' : 'degraded',
      database: up ? 'up' : 'down',
      source: this.engine.mode,
      pendingWrites: this.engine.pendingWrites,
      connections: this.clients.size,
      uptimeS: Math.round(this.uptimeMs / 1000),
      version: this.opts.version,
    };
  }

  private async onHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.httpInFlight++;
    try {
      await this.routeHttp(req, res);
    } catch (err) {
      this.opts.logger.error({ err: (err as Error).message }, 'http handler failed');
      if (!res.headersSent) this.json(res, 500, errorReply('internal_error', 'internal error'));
      else res.destroy();
    } finally {
      this.httpInFlight--;
    }
  }

  private async routeHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    if (path === ROUTES.health) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return this.json(res, 405, errorReply('invalid_message', 'use GET'), { Allow: 'GET' });
      if (this.shutdownPromise) return this.json(res, 503, { ...this.health(), status: 'shutting_down' });
      return this.json(res, 200, this.health());
    }
    if (path === ROUTES.metrics) {
      if (req.method !== 'GET') return this.json(res, 405, errorReply('invalid_message', 'use GET'), { Allow: 'GET' });
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { 'Content-Type': this.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (path !== ROUTES.check && path !== ROUTES.consume) {
      return this.json(res, 404, errorReply('invalid_message', `no route ${path}; see ${ROUTES.check}, ${ROUTES.consume}, ${ROUTES.health}, ${ROUTES.metrics}, ${ROUTES.ws}`));
    }
    const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
    const cors: Record<string, string> = this.auth.isAllowedOrigin(origin)
      ? { 'Access-Control-Allow-Origin': origin!, Vary: 'Origin' }
      : {};
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'Access-Control-Allow-Methods': 'POST', 'Access-Control-Allow-Headers': 'Authorization, Content-Type', 'Access-Control-Max-Age': '600' });
      res.end();
      return;
    }
    if (req.method !== 'POST') return this.json(res, 405, errorReply('invalid_message', 'use POST'), { Allow: 'POST', ...cors });
    if (this.shutdownPromise) return this.json(res, 503, errorReply('internal_error', 'shutting down; retry on another instance'), { 'Retry-After': '1', ...cors });
    const auth = this.auth.authenticate(req, url);
    if (!auth.ok) {
      return this.json(res, auth.status, errorReply('forbidden', auth.message), { ...(auth.status === 401 ? { 'WWW-Authenticate': 'Bearer' } : {}), ...cors });
    }
    const ip = clientAddress(req, this.opts.config.trustProxy);
    if (auth.role !== 'service') {
      let bucket = this.httpBuckets.get(ip);
      if (!bucket) this.httpBuckets.set(ip, (bucket = new TokenBucket(this.opts.config.messagesPerSecond)));
      if (!bucket.take()) return this.json(res, 429, errorReply('too_many_requests', 'too many requests from this address'), { 'Retry-After': '1', ...cors });
    }
    const body = await readBody(req, this.opts.config.maxFrameBytes);
    if (body === null) return this.json(res, 413, errorReply('invalid_message', `body larger than ${this.opts.config.maxFrameBytes} bytes`), cors);
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch {
      return this.json(res, 400, errorReply('invalid_json', 'the body is not valid JSON'), cors);
    }
    const type = path === ROUTES.check ? 'rate_limit_check' : 'rate_limit_consume';
    if (typeof value === 'object' && value !== null && 'type' in value && (value as { type: unknown }).type !== type) {
      return this.json(res, 400, errorReply('invalid_message', `"type" must be ${type} on ${path} (or be left out)`), cors);
    }
    const parsed = parseRequest(value, type);
    const reply = parsed.ok ? await this.decide(parsed.request, auth.role, ip) : parsed.error;
    if (reply.type === 'error') this.metrics.errors.inc({ code: reply.code });
    const status = httpStatus(reply);
    const headers = reply.type === 'rate_limit_exceeded' ? { 'Retry-After': String(Math.max(1, Math.ceil(reply.retryAfterMs / 1000))), ...cors } : cors;
    this.json(res, status, reply, headers);
  }

  // ---- shutdown -------------------------------------------------------------------------

  /**
   * Stop accepting, answer what is in flight, close sockets with 1001, write what memory
   * decided (retrying until `drainUntilMs` if the database is down), stop background work.
   * Resolves with the number of decisions left unwritten. Idempotent. Does not end the pool.
   */
  shutdown(drainUntilMs = Date.now()): Promise<number> {
    this.shutdownPromise ??= (async () => {
      if (this.pingTimer) clearInterval(this.pingTimer);
      const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      this.http.closeIdleConnections();
      await Promise.all(
        [...this.clients].map(async ([ws, client]) => {
          client.closing = true;
          await client.tail;
          ws.close(1001, 'server shutting down');
        }),
      );
      while (this.httpInFlight > 0) await new Promise((r) => setTimeout(r, 10));
      this.http.closeIdleConnections();
      const unwritten = await this.engine.drain(drainUntilMs);
      await this.engine.stop();
      // Sockets that never finished their close handshake.
      for (const ws of this.clients.keys()) ws.terminate();
      for (const s of this.sockets) s.destroy();
      await closed;
      return unwritten;
    })();
    return this.shutdownPromise;
  }

  /** After the deadline: drop everything. */
  terminate(): void {
    for (const ws of this.clients.keys()) ws.terminate();
    for (const s of this.sockets) s.destroy();
    this.http.close();
    void this.engine.stop();
  }
}

/**
 * The reply for a decision: `rate_limit_status` for a check or an allowed consume,
 * `rate_limit_exceeded` (with the limit that denied) for a denied consume.
 */
function decisionReply(
  id: Request['id'],
  e164: string,
  region: string | undefined,
  d: Decision & { source: 'database' | 'memory' },
  denied?: ExceededReply['reason'],
): StatusReply | ExceededReply {
  // Literal objects of one fixed shape each: this runs for every decision, and spreading
  // optional parts into it showed up in profiles.
  const reply: StatusReply | ExceededReply = denied
    ? {
        type: 'rate_limit_exceeded',
        id,
        phoneNumber: e164,
        reason: denied,
        limit: d.limit,
        used: d.used,
        remaining: d.remaining,
        resetTime: d.resetTime,
        retryAfterMs: d.retryAfterMs,
        region: region ?? null,
        source: d.source,
      }
    : {
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
  // JSON.stringify leaves out an undefined id, as the contract wants for requests without one.
  return reply;
}

function httpStatus(reply: Reply): number {
  if (reply.type === 'rate_limit_status') return 200;
  if (reply.type === 'rate_limit_exceeded') return 429;
  switch (reply.code) {
    case 'forbidden':
      return 403;
    case 'too_many_requests':
      return 429;
    case 'internal_error':
      return 500;
    default:
      return 400;
  }
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

