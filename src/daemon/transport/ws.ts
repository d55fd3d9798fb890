// Longer than 350 lines because one socket's whole life (upgrade, auth, backpressure, replies in
// order, the seed's /logs dialect and outcomes) shares its per-socket state.
// The WebSocket transport: the upgrade (route, auth, per-address connection cap), per-socket
// client state, replies in request order for pipelining clients, corked writes, backpressure
// (pause past a reply backlog, 1008 when it persists), idle and dead sockets. Separate from HTTP
// because its life is per socket, not per request.

import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import type { Logger } from 'pino';
import type { Config } from '../../core/config.js';
import { ROUTES } from '../../protocol/wire.js';
import { errorReply, replyText } from '../../protocol/replies.js';
import { peekRequestId, RequestParser } from '../../protocol/schema.js';
import { canonicalAddress } from '../../core/address.js';
import type { Reply } from '../../protocol/wire.js';
import { mayReportOutcomes, type Authenticator, type Role } from '../auth.js';
import type { OutcomeRecorder } from '../outcomes.js';
import type { Decider } from '../decider.js';
import { ConnectionCounter, TokenBucket } from '../limits.js';
import type { Metrics } from '../metrics.js';
import { BacklogBudget, type BacklogLimits, type BacklogShare } from './backlog.js';
import type { ClientAddresses } from './client-address.js';
import type { ClientLog } from './client-log.js';
import { ignoreError, type ConnectionGate } from './connections.js';
import { answerSeedFrame, SEED_LOGS_PATH, type SeedReply } from './seed-logs.js';
import { parseTarget, quoteTarget } from './target.js';

/** `ip` fields become quota keys the way every other address does (src/core/address.ts). */
const requests = new RequestParser(canonicalAddress);

interface Client extends BacklogShare {
  role: Role;
  /** Connected on the phone-screen seed's /logs route (seed-logs.ts): check only, its dialect. */
  seedLogs: boolean;
  /** A service (or, in anonymous mode, a local tool without an Origin): may report outcomes. */
  outcomes: boolean;
  ip: string;
  /** Messages per second, for clients without a token. */
  bucket: TokenBucket | undefined;
  /** Requests answered but not yet replied to; equals the unsent slots of `replies`. */
  inFlight: number;
  /**
   * Replies leave in request order: a decided reply waits in its slot for those before it.
   * Created at the first request that has to wait, so an idle socket holds none.
   */
  replies: Array<{ reply: Reply | SeedReply | undefined }> | undefined;
  /** The first unsent slot of `replies`. */
  repliesHead: number;
  /** close(): called once every reply has left. */
  drained: (() => void) | undefined;
  alive: boolean;
  closing: boolean;
  lastMessageAtMs: number;
}

export interface WsTransportOptions {
  config: Config;
  auth: Authenticator;
  decider: Decider;
  outcomes: OutcomeRecorder;
  metrics: Metrics;
  logger: Logger;
  addresses: ClientAddresses;
  gate: ConnectionGate;
  /** Where client-caused refusals are logged, rate-limited. */
  clientLog: ClientLog;
  pingIntervalMs?: number;
  backlog?: Partial<BacklogLimits>;
  /** True once the daemon is shutting down: new upgrades are refused. */
  isShuttingDown: () => boolean;
}

// A second bound besides the byte backlog: the ordered reply chain holds one promise per request.
const MAX_IN_FLIGHT_PER_SOCKET = 8_192;
// Fly's proxy drops connections idle for ~60 s; pings keep live ones open and find dead ones.
const DEFAULT_PING_INTERVAL_MS = 25_000;
// How often paused sockets are looked at (resume, or close when stalled) and idle ones swept.
// The sweep runs only while there is something to look at (a paused socket or a client without
// a token, the only ones closed when idle): an idle daemon's timers are most of its idle CPU.
const SWEEP_INTERVAL_MS = 250;
const CLOSE_POLICY_VIOLATION = 1008;
const CLOSE_TOO_BIG = 1009;
// RFC 6455: a close reason is at most 123 bytes.
const MAX_CLOSE_REASON_BYTES = 123;

/** ws's receiver (a private part of each WebSocket), as far as explainOversizedFrames uses it. */
interface Receiver {
  prependListener(e: 'error', f: (this: Receiver, err: Error & { code?: string }) => void): void;
}
/** The receiver's back-reference to its WebSocket (ws's own symbol, found on the first socket). */
let receiverSocket: symbol | undefined;

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  500: 'Internal Server Error',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  429: 'Too Many Requests',
  503: 'Service Unavailable',
};

export class WsTransport {
  private readonly wss: WebSocketServer;
  private readonly connections: ConnectionCounter;
  private readonly clients = new Map<WebSocket, Client>();
  private readonly paused = new Set<WebSocket>();
  /** Paused sockets already waiting for 'drain' (one listener each). */
  private readonly drainWatched = new WeakSet<Socket>();
  private readonly corked = new Set<Socket>();
  private readonly backlog: BacklogBudget;
  private readonly pingTimer: NodeJS.Timeout;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Clients without a token: closed after wsIdleTimeoutMs without a message, so swept. */
  private tokenless = 0;
  private stopped = false;
  // One listener of each kind for every socket (`this` is the socket, its Client looked up), not
  // closures per socket: those and their contexts were ~0.9 KB of each idle connection's 5.1 KB
  // of heap (heap diff of 5,000 idle sockets), against issue 5's 150 MB for 10,000 of them.
  private readonly onSocketPong: (this: WebSocket) => void;
  private readonly onSocketMessage: (this: WebSocket, data: RawData, isBinary: boolean) => void;
  private readonly onSocketError: (err: Error) => void;
  private readonly onSocketClose: (this: WebSocket) => void;
  private onReceiverError: ((this: Receiver, err: Error & { code?: string }) => void) | undefined;

  constructor(private readonly opts: WsTransportOptions) {
    const transport = this;
    this.onSocketPong = function () {
      const client = transport.clients.get(this);
      if (client) client.alive = true;
    };
    this.onSocketMessage = function (data, isBinary) {
      const client = transport.clients.get(this);
      if (client) transport.onMessage(this, client, data, isBinary);
    };
    this.onSocketError = (err) => opts.logger.debug({ err: err.message }, 'websocket error');
    this.onSocketClose = function () {
      const client = transport.clients.get(this);
      if (!client) return;
      transport.clients.delete(this);
      transport.paused.delete(this);
      if (client.role !== 'service') transport.tokenless--;
      transport.backlog.release(client);
      transport.connections.release(client.ip);
      opts.metrics.connections.set(transport.clients.size);
    };
    this.connections = new ConnectionCounter(opts.config.maxConnectionsPerIp);
    this.backlog = new BacklogBudget({ ...new BacklogBudget().limits, ...opts.backlog });
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.config.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
    this.pingTimer = setInterval(() => this.ping(), opts.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS);
    this.pingTimer.unref();
  }

  /** Starts the sweep when it has something to do; sweep() stops it once it has not. */
  private wantSweep(): void {
    if (this.stopped || this.sweepTimer || (this.paused.size === 0 && this.tokenless === 0)) return;
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
  }

  private stopSweep(): void {
    clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  get connectionCount(): number {
    return this.clients.size;
  }

  /** Reply bytes held for all sockets (queued or being decided), as last measured. */
  get backlogBytes(): number {
    return this.backlog.total;
  }

  /** Stops accepting, answers what each socket has in flight, then closes it with 1001. */
  async close(): Promise<void> {
    clearInterval(this.pingTimer);
    this.stopped = true;
    this.stopSweep();
    await Promise.all(
      [...this.clients].map(async ([ws, client]) => {
        client.closing = true;
        if (client.inFlight > 0) await new Promise<void>((resolve) => (client.drained = resolve));
        ws.close(1001, 'server shutting down');
      }),
    );
  }

  /** Drops every socket, including those that never finished their close handshake. */
  terminate(): void {
    clearInterval(this.pingTimer);
    this.stopped = true;
    this.stopSweep();
    for (const ws of this.clients.keys()) ws.terminate();
  }

  private refuse(socket: Duplex, status: number, message: string): void {
    const code =
      status === 429
        ? 'too_many_requests'
        : status === 401
          ? 'unauthorized'
          : status >= 500
            ? 'internal_error'
            : status === 403
              ? 'forbidden'
              : 'invalid_message';
    const body = JSON.stringify(errorReply(code, message));
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        (status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '') +
        (status === 503 ? 'Retry-After: 1\r\n' : '') +
        `\r\n${body}`,
    );
  }

  /**
   * Never throws: an exception in the 'upgrade' listener would end the process (`//x:99999/ws`
   * did, through `new URL`). A malformed target gets 400; an unexpected error, 500 and a log line.
   */
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', ignoreError);
    try {
      this.upgrade(req, socket, head);
    } catch (err) {
      this.opts.logger.error({ err }, 'websocket upgrade failed');
      if (socket.writable) this.refuse(socket, 500, 'internal error');
      else socket.destroy();
    }
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const admission = this.opts.gate.admission(req.socket);
    if (admission === 'refused') return void socket.destroy();
    const target = parseTarget(req.url);
    if (!target.ok) return this.refused(req, socket, 400, 'bad_request', target.message);
    if (target.path !== ROUTES.ws && target.path !== SEED_LOGS_PATH)
      return this.refused(req, socket, 404, 'not_found', `no WebSocket endpoint at ${quoteTarget(target.path)}; use ${ROUTES.ws}`);
    if (this.opts.isShuttingDown()) return this.refuse(socket, 503, 'shutting down');
    if (admission === 'reserve') return this.refuse(socket, 503, 'the daemon is at its connection limit; retry later');
    const auth = this.opts.auth.authenticate(req, target.params);
    if (!auth.ok) return this.refused(req, socket, auth.status, auth.kind, auth.message);
    const ip = this.opts.addresses.of(req);
    if (!this.connections.acquire(ip)) return this.refused(req, socket, 429, 'too_many_connections', 'too many connections from this address');
    const outcomes = mayReportOutcomes(auth.role, typeof req.headers.origin === 'string' ? req.headers.origin : undefined);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, auth.role, ip, target.path === SEED_LOGS_PATH, outcomes));
  }

  /** A refusal the client caused: answered, and logged at most once a minute per kind. */
  private refused(req: IncomingMessage, socket: Duplex, status: number, kind: string, message: string): void {
    const origin = typeof req.headers.origin === 'string' ? quoteTarget(req.headers.origin) : undefined;
    this.opts.clientLog.warn(
      `upgrade_${kind}`,
      { status, reason: kind, origin, peer: req.socket.remoteAddress },
      `refused a WebSocket upgrade (${status}): ${message}`,
    );
    this.refuse(socket, status, message);
  }

  private onConnection(ws: WebSocket, role: Role, ip: string, seedLogs: boolean, outcomes: boolean): void {
    const client: Client = {
      role,
      seedLogs,
      outcomes,
      ip,
      bucket: role === 'service' ? undefined : new TokenBucket(this.opts.config.messagesPerSecond),
      inFlight: 0,
      replies: undefined,
      repliesHead: 0,
      drained: undefined,
      alive: true,
      closing: false,
      lastMessageAtMs: Date.now(),
      countedBytes: 0,
      pausedAtMs: undefined,
    };
    this.clients.set(ws, client);
    if (role !== 'service') {
      this.tokenless++;
      this.wantSweep();
    }
    this.opts.metrics.connections.set(this.clients.size);
    this.explainOversizedFrames(ws);
    ws.on('pong', this.onSocketPong);
    ws.on('message', this.onSocketMessage);
    ws.on('error', this.onSocketError);
    ws.on('close', this.onSocketClose);
  }

  /**
   * ws closes with 1009 but no reason when a frame is over maxPayload; its receiver reports the
   * error to us first, so we close with the reason (ws's own close then finds it closing already).
   * One listener for every receiver, which finds its socket through ws's own back-reference: a
   * closure per socket was heap each of 10,000 idle sockets paid for.
   */
  private explainOversizedFrames(ws: WebSocket): void {
    const receiver = (ws as unknown as { _receiver?: Receiver })._receiver;
    if (!receiver) return;
    receiverSocket ??= Object.getOwnPropertySymbols(receiver).find(
      (sym) => sym.description === 'websocket' && (receiver as unknown as Record<symbol, unknown>)[sym] === ws,
    );
    if (receiverSocket === undefined) {
      receiver.prependListener('error', (err) => this.onOversizedFrame(ws, err));
      return;
    }
    const transport = this;
    this.onReceiverError ??= function (this: Receiver, err) {
      const socket = (this as unknown as Record<symbol, WebSocket | undefined>)[receiverSocket!];
      if (socket) transport.onOversizedFrame(socket, err);
    };
    receiver.prependListener('error', this.onReceiverError);
  }

  private onOversizedFrame(ws: WebSocket, err: Error & { code?: string }): void {
    if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') ws.close(CLOSE_TOO_BIG, `frame larger than ${this.opts.config.maxFrameBytes} bytes`);
  }

  private onMessage(ws: WebSocket, client: Client, data: RawData, isBinary: boolean): void {
    client.alive = true;
    client.lastMessageAtMs = Date.now();
    if (client.closing) return;
    let reply: Reply | SeedReply | Promise<Reply | SeedReply>;
    if (isBinary) {
      reply = errorReply('invalid_message', 'binary frames are not supported; send JSON text frames');
    } else if (client.bucket && !client.bucket.take()) {
      reply = errorReply(
        'too_many_requests',
        `more than ${this.opts.config.messagesPerSecond} messages per second on this connection`,
        peekRequestId(data.toString()),
      );
    } else if (client.inFlight >= MAX_IN_FLIGHT_PER_SOCKET) {
      reply = errorReply(
        'too_many_requests',
        `more than ${MAX_IN_FLIGHT_PER_SOCKET} requests waiting on this connection; read the replies`,
        peekRequestId(data.toString()),
      );
    } else if (client.seedLogs) {
      reply = answerSeedFrame(data.toString(), requests, this.opts.decider, client.ip);
    } else {
      const parsed = requests.parseFrame(data.toString());
      if (!parsed.ok) reply = parsed.error;
      else if (parsed.request.type !== 'rate_limit_outcome') reply = this.opts.decider.decide(parsed.request, client.role, client.ip);
      else if (!client.outcomes) reply = errorReply('forbidden', 'only a service (a token) may report outcomes', parsed.request.id);
      else reply = this.opts.outcomes.record(parsed.request, 'ws', parsed.request.id);
    }
    client.inFlight++;
    this.measure(ws, client);
    if (!(reply instanceof Promise)) {
      if (reply.type === 'error') this.opts.metrics.errors.inc({ code: reply.code });
      // Nothing before it: out at once, without a promise (most requests at low rates).
      if (client.inFlight === 1) return this.deliver(ws, client, reply);
      (client.replies ??= []).push({ reply });
      return;
    }
    // One promise per request: its reply goes into its slot, then every reply ready at the head
    // leaves (replies of one statement resolve together and leave together).
    const slot: { reply: Reply | SeedReply | undefined } = { reply: undefined };
    (client.replies ??= []).push(slot);
    reply.then(
      (r) => {
        if (r.type === 'error') this.opts.metrics.errors.inc({ code: r.code });
        slot.reply = r;
        this.flushReplies(ws, client);
      },
      (err: unknown) => {
        // Deciders answer every request; should one throw anyway, its client still gets a reply.
        this.opts.logger.error({ err }, 'request failed');
        slot.reply = errorReply('internal_error', 'the request could not be answered; retry');
        this.flushReplies(ws, client);
      },
    );
  }

  /** Sends the replies at the head of the socket's queue that are decided, in order. */
  private flushReplies(ws: WebSocket, client: Client): void {
    const queue = client.replies!;
    let head = client.repliesHead;
    while (head < queue.length) {
      const r = queue[head]!.reply;
      if (r === undefined) break;
      queue[head++] = undefined as never; // let the reply be collected
      this.deliver(ws, client, r);
    }
    if (head === queue.length) {
      queue.length = 0;
      head = 0;
    } else if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    client.repliesHead = head;
  }

  private deliver(ws: WebSocket, client: Client, r: Reply | SeedReply): void {
    client.inFlight--;
    if (ws.readyState === ws.OPEN) this.sendCorked(ws, client.seedLogs ? JSON.stringify(r) : replyText(r as Reply));
    this.measure(ws, client);
    if (client.inFlight === 0 && client.drained) {
      const drained = client.drained;
      client.drained = undefined;
      drained();
    }
  }

  /** Counts the socket's backlog and stops or resumes reading from it accordingly. */
  private measure(ws: WebSocket, client: Client): void {
    this.backlog.measure(client, ws.bufferedAmount, client.inFlight);
    if (client.pausedAtMs === undefined) {
      if (!this.backlog.shouldPause(client)) return;
      client.pausedAtMs = Date.now();
      this.paused.add(ws);
      this.wantSweep();
      ws.pause();
      this.opts.logger.debug(
        { ip: client.ip, backlogBytes: client.countedBytes, totalBytes: this.backlog.total },
        'not reading a WebSocket whose client is not reading its replies',
      );
    } else if (!client.closing && this.backlog.mayResume(client)) {
      client.pausedAtMs = undefined;
      this.paused.delete(ws);
      ws.resume();
    }
  }

  private sweep(): void {
    const nowMs = Date.now();
    for (const ws of this.paused) {
      const client = this.clients.get(ws);
      if (!client) continue;
      this.measure(ws, client);
      if (client.closing || !this.backlog.stalled(client, nowMs)) continue;
      const reason = `replies not read: ${Math.round(client.countedBytes / 1024)} KiB waiting for ${Math.round((nowMs - client.pausedAtMs!) / 1000)} s`;
      this.opts.clientLog.warn(
        'ws_not_reading',
        { ip: client.ip, backlogBytes: client.countedBytes, code: CLOSE_POLICY_VIOLATION },
        `closing a WebSocket whose client does not read: ${reason}`,
      );
      this.closeWithin(ws, client, CLOSE_POLICY_VIOLATION, reason);
    }
    const idleMs = this.opts.config.wsIdleTimeoutMs;
    if (this.tokenless > 0) {
      for (const [ws, client] of this.clients) {
        if (client.role === 'service' || client.closing || nowMs - client.lastMessageAtMs < idleMs) continue;
        this.closeWithin(ws, client, 1000, `no message for ${Math.round(idleMs / 1000)} s without a token; reconnect when needed`);
      }
    }
    if (this.paused.size === 0 && this.tokenless === 0) this.stopSweep();
  }

  /**
   * Closes with a reason and drops the socket if the client has not completed the close in
   * time. Reading resumes so the client's close frame can be seen; what else it sent is dropped
   * unanswered (closing), so reading costs no memory.
   */
  private closeWithin(ws: WebSocket, client: Client, code: number, reason: string): void {
    client.closing = true;
    ws.close(code, Buffer.from(reason).subarray(0, MAX_CLOSE_REASON_BYTES).toString());
    ws.resume();
    const timer = setTimeout(() => ws.terminate(), this.backlog.limits.closeGraceMs);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
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
        // A paused socket was measured while its replies sat in the cork buffer, so it looked
        // backlogged; measured again now that they are written (or once the kernel takes the
        // rest), it resumes at once instead of at the next sweep: 8192 pipelined requests on one
        // socket ran at half the rate of 512, idle between sweeps.
        const client = this.clients.get(ws);
        if (client?.pausedAtMs === undefined) return;
        this.measure(ws, client);
        if (client.pausedAtMs !== undefined && socket.writableNeedDrain && !this.drainWatched.has(socket)) {
          this.drainWatched.add(socket);
          socket.once('drain', () => {
            this.drainWatched.delete(socket);
            const c = this.clients.get(ws);
            if (c?.pausedAtMs !== undefined) this.measure(ws, c);
          });
        }
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
