// The WebSocket transport: the upgrade (route, auth, per-IP connection cap), per-socket client
// state, replies in request order for pipelining clients, corked writes, backpressure and
// pings. Separate from HTTP because its life is per socket, not per request.

import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import type { Logger } from 'pino';
import type { Config } from '../../core/config.js';
import { ROUTES } from '../../protocol/wire.js';
import { errorReply } from '../../protocol/replies.js';
import { parseFrame } from '../../protocol/schema.js';
import type { Reply } from '../../protocol/wire.js';
import { clientAddress, type Authenticator, type Role } from '../auth.js';
import type { Decider } from '../decide.js';
import { ConnectionCounter, TokenBucket } from '../limits.js';
import type { Metrics } from '../metrics.js';

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

export interface WsTransportOptions {
  config: Config;
  auth: Authenticator;
  decider: Decider;
  metrics: Metrics;
  logger: Logger;
  pingIntervalMs?: number;
  /** True once the daemon is shutting down: new upgrades are refused. */
  isShuttingDown: () => boolean;
}

// A pipelining client that never reads its replies must not grow our memory without bound.
const MAX_IN_FLIGHT_PER_SOCKET = 8_192;
// Fly's proxy drops connections idle for ~60 s; pings keep live ones open and find dead ones.
const DEFAULT_PING_INTERVAL_MS = 25_000;

export class WsTransport {
  private readonly wss: WebSocketServer;
  private readonly connections: ConnectionCounter;
  private readonly clients = new Map<WebSocket, Client>();
  private readonly corked = new Set<Socket>();
  private readonly pingTimer: NodeJS.Timeout;

  constructor(private readonly opts: WsTransportOptions) {
    this.connections = new ConnectionCounter(opts.config.maxConnectionsPerIp);
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.config.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
    this.pingTimer = setInterval(() => this.ping(), opts.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS);
    this.pingTimer.unref();
  }

  get connectionCount(): number {
    return this.clients.size;
  }

  /** Stops accepting, answers what each socket has in flight, then closes it with 1001. */
  async close(): Promise<void> {
    clearInterval(this.pingTimer);
    await Promise.all(
      [...this.clients].map(async ([ws, client]) => {
        client.closing = true;
        await client.tail;
        ws.close(1001, 'server shutting down');
      }),
    );
  }

  /** Drops every socket, including those that never finished their close handshake. */
  terminate(): void {
    clearInterval(this.pingTimer);
    for (const ws of this.clients.keys()) ws.terminate();
  }

  private refuse(socket: Duplex, status: number, message: string): void {
    // 401 bodies say `forbidden` today (see PROTOCOL_ERRORS); a later issue changes that.
    const body = JSON.stringify(errorReply(status === 429 ? 'too_many_requests' : 'forbidden', message));
    const reason = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' }[status] ?? 'Error';
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        (status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '') +
        `\r\n${body}`,
    );
  }

  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== ROUTES.ws) return this.refuse(socket, 404, `no WebSocket endpoint at ${url.pathname}; use ${ROUTES.ws}`);
    if (this.opts.isShuttingDown()) return this.refuse(socket, 503, 'shutting down');
    const auth = this.opts.auth.authenticate(req, url);
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
    this.opts.metrics.connections.set(this.clients.size);
    ws.on('pong', () => (client.alive = true));
    ws.on('message', (data, isBinary) => this.onMessage(ws, client, data, isBinary));
    ws.on('error', (err) => this.opts.logger.debug({ err: err.message }, 'websocket error'));
    ws.on('close', () => {
      this.clients.delete(ws);
      this.connections.release(ip);
      this.opts.metrics.connections.set(this.clients.size);
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
      reply = parsed.ok ? this.opts.decider.decide(parsed.request, client.role, client.ip) : parsed.error;
    }
    if (!(reply instanceof Promise) && reply.type === 'error') this.opts.metrics.errors.inc({ code: reply.code });
    client.inFlight++;
    const pending = reply;
    client.tail = client.tail
      .then(() => pending)
      .then((r) => {
        client.inFlight--;
        if (r.type === 'error' && pending instanceof Promise) this.opts.metrics.errors.inc({ code: r.code });
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
}
