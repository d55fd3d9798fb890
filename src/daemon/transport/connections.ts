// Every TCP connection the daemon accepts, HTTP and WebSocket alike (issue #11): a global cap
// below the process's file-descriptor limit with a reserve for /health, a per-address cap, a
// deadline for the first request's headers, and eviction of idle connections under pressure.
// Separate from the transports because it acts before either knows what a connection will carry.
//
// Under the cap nothing changes. Past `max - reserve` a newcomer first evicts the connection
// that has been idle longest (no request in progress and not upgraded: an idle flood costs real
// clients a reconnect, never an answer); when none is idle it is admitted to the reserve, where
// it may only ask /health and /metrics; past `max` it gets a tiny 503 and is closed.

import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { ConnectionCounter } from '../limits.js';
import type { Metrics } from '../metrics.js';
import { socketAddressKey } from './client-address.js';

/** A connection must deliver its first request's headers (or its upgrade) within this. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/** A refused connection gets this long to read its 503/429 before it is dropped. */
const REFUSED_LINGER_MS = 1_000;
/** Used when the fd limit cannot be read (not Linux): the common soft limit. */
const FALLBACK_FD_LIMIT = 1_024;
/** File descriptors kept for the database pool, embedded PostgreSQL pipes, logs and files. */
const FD_HEADROOM = 128;

/**
 * The default global cap: 80% of the soft RLIMIT_NOFILE (Node raises the soft limit to the hard
 * one at start, so this reads the raised value), less headroom for non-client descriptors.
 */
export function defaultMaxConnections(limitsText?: string): number {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      text = '';
    }
  }
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
  const soft = m && m[1] !== 'unlimited' ? Number(m[1]) : m ? 1_048_576 : FALLBACK_FD_LIMIT;
  return Math.max(16, Math.min(Math.floor(soft * 0.8), soft - FD_HEADROOM));
}

/** Connections kept for /health and /metrics when every other slot is busy. */
export function reserveFor(maxConnections: number): number {
  return Math.max(2, Math.min(64, Math.floor(maxConnections / 20)));
}

export type Admission = 'ok' | 'reserve' | 'refused';

interface Tracked {
  /** Per-address quota key, when socket addresses are end users'. */
  key: string | undefined;
  admission: Admission;
  requests: number;
  upgraded: boolean;
  handshake: NodeJS.Timeout | undefined;
}

export interface ConnectionGateOptions {
  maxConnections: number;
  maxPerAddress: number;
  /** False behind a trusted proxy: every socket is the proxy's, so a per-address cap would cap everyone. */
  perAddress: boolean;
  metrics: Metrics;
  logger: Logger;
}

/** For sockets whose errors end in their 'close' anyway: one function for all, not a closure each. */
export const ignoreError = (): void => undefined;

export class ConnectionGate {
  private readonly tracked = new Map<Socket, Tracked>();
  /** Idle connections, longest idle first (a Set keeps insertion order). */
  private readonly idle = new Set<Socket>();
  private readonly byAddress: ConnectionCounter;
  private refusing = 0;
  private loggedCap = false;
  readonly reserve: number;

  /** Shared by every tracked socket (`this` is the socket), not a closure each: idle sockets are many. */
  private readonly onSocketClose: (this: Socket) => void;

  constructor(private readonly opts: ConnectionGateOptions) {
    const gate = this;
    this.onSocketClose = function () {
      const t = gate.tracked.get(this);
      if (!t) return;
      clearTimeout(t.handshake);
      gate.tracked.delete(this);
      gate.idle.delete(this);
      if (t.key !== undefined) gate.byAddress.release(t.key);
      opts.metrics.tcpConnections.set(gate.tracked.size);
    };
    this.byAddress = new ConnectionCounter(opts.maxPerAddress);
    this.reserve = reserveFor(opts.maxConnections);
    opts.metrics.connectionsMax.set(opts.maxConnections);
  }

  /** Open TCP connections, refused ones still lingering excluded. */
  get open(): number {
    return this.tracked.size;
  }

  /** Installs the gate ahead of node:http's own connection handling. */
  attach(server: Server): void {
    server.prependListener('connection', (socket: Socket) => this.onConnection(socket));
    server.prependListener('request', (req, res) => {
      const t = this.tracked.get(req.socket);
      if (!t) return;
      this.busy(req.socket, t);
      t.requests++;
      res.once('close', () => {
        t.requests--;
        if (t.requests === 0 && !t.upgraded && this.tracked.has(req.socket)) this.idle.add(req.socket);
      });
    });
    server.prependListener('upgrade', (req) => {
      const t = this.tracked.get(req.socket);
      if (!t) return;
      this.busy(req.socket, t);
      t.upgraded = true;
    });
  }

  /** What a connection may do: everything, only /health and /metrics, or nothing (answered already). */
  admission(socket: Socket): Admission {
    return this.tracked.get(socket)?.admission ?? 'refused';
  }

  private busy(socket: Socket, t: Tracked): void {
    clearTimeout(t.handshake);
    t.handshake = undefined;
    this.idle.delete(socket);
  }

  private onConnection(socket: Socket): void {
    socket.on('error', ignoreError);
    const key = this.opts.perAddress ? socketAddressKey(socket) : undefined;
    if (key !== undefined && !this.byAddress.acquire(key)) {
      return this.refuse(socket, 429, 'Too Many Requests', 'too_many_requests', `more than ${this.opts.maxPerAddress} connections from this address`);
    }
    let admission: Admission = 'ok';
    if (this.tracked.size >= this.opts.maxConnections - this.reserve && !this.evictIdle()) {
      if (this.tracked.size >= this.opts.maxConnections) {
        if (key !== undefined) this.byAddress.release(key);
        this.logCap();
        return this.refuse(socket, 503, 'Service Unavailable', 'internal_error', 'the daemon is at its connection limit; retry later');
      }
      admission = 'reserve';
      this.logCap();
    }
    const t: Tracked = { key, admission, requests: 0, upgraded: false, handshake: undefined };
    // A connection that never completes a request holds a descriptor for nothing (slowloris).
    t.handshake = setTimeout(() => socket.destroy(), admission === 'reserve' ? REFUSED_LINGER_MS : HANDSHAKE_TIMEOUT_MS);
    t.handshake.unref();
    this.tracked.set(socket, t);
    this.idle.add(socket);
    this.opts.metrics.tcpConnections.set(this.tracked.size);
    socket.once('close', this.onSocketClose);
  }

  private evictIdle(): boolean {
    for (const socket of this.idle) {
      this.idle.delete(socket);
      socket.destroy();
      return true;
    }
    return false;
  }

  private logCap(): void {
    if (this.loggedCap) return;
    this.loggedCap = true;
    this.opts.logger.warn(
      { maxConnections: this.opts.maxConnections, reserve: this.reserve },
      'connection limit reached: new connections get only /health and /metrics, or a 503 (logged once; see ratelimit_connections)',
    );
  }

  /**
   * Answers before the request is even read: the client learns why instead of seeing a reset.
   * Lingering refused sockets are bounded by the reserve; past it they are dropped silently.
   */
  private refuse(socket: Socket, status: number, statusText: string, code: string, message: string): void {
    if (this.refusing >= this.reserve) {
      socket.destroy();
      return;
    }
    this.refusing++;
    const body = JSON.stringify({ type: 'error', code, message });
    socket.end(
      `HTTP/1.1 ${status} ${statusText}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${status === 503 ? 'Retry-After: 1\r\n' : ''}\r\n${body}`,
    );
    const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
    timer.unref();
    socket.once('close', () => {
      clearTimeout(timer);
      this.refusing--;
    });
  }
}
