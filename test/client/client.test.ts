// The client against real sockets: a scripted ws server on 127.0.0.1 plays the daemon, so
// framing, headers, reconnects and close codes are the library's, not a mock's.
// Longer than 350 lines because each reconnect, timeout and close case needs its own scripted server.

import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  RateLimitClient,
  RateLimitHttpClient,
  RateLimitRequestError,
  isAllowed,
  type ClientOptions,
  type ClientState,
  type FailMode,
} from '../../src/client/index.js';

// Generous: these tests never wait for a timeout unless the timeout is what they test.
const PATIENT_TIMEOUT_MS = 30_000;
const SHORT_TIMEOUT_MS = 150;

type Frame = Record<string, unknown> & { id: number; type: string; phoneNumber: string };
type Script = (frame: Frame, socket: WebSocket, server: ScriptedServer) => void;

interface ScriptedServer {
  port: number;
  url: string;
  received: Frame[];
  authorizations: Array<string | undefined>;
  sockets: WebSocket[];
  close(): Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function scriptedServer(script: Script, opts: { port?: number; requireToken?: string } = {}): Promise<ScriptedServer> {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: opts.port ?? 0,
    path: '/ws',
    verifyClient: (info, done) => {
      if (opts.requireToken === undefined || info.req.headers.authorization === `Bearer ${opts.requireToken}`) done(true);
      else done(false, 401, 'Unauthorized');
    },
  });
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  const port = (wss.address() as AddressInfo).port;
  const server: ScriptedServer = {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    received: [],
    authorizations: [],
    sockets: [],
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of wss.clients) socket.terminate();
        wss.close(() => resolve());
      }),
  };
  wss.on('connection', (socket, req) => {
    server.sockets.push(socket);
    server.authorizations.push(req.headers.authorization);
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Frame;
      server.received.push(frame);
      script(frame, socket, server);
    });
  });
  cleanups.push(() => server.close());
  return server;
}

function client(opts: ClientOptions): RateLimitClient {
  const c = new RateLimitClient(opts);
  cleanups.push(() => c.close());
  return c;
}

function statusReply(frame: Frame, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    type: 'rate_limit_status',
    id: frame.id,
    phoneNumber: frame.phoneNumber,
    allowed: true,
    limit: 2,
    used: 0,
    remaining: 2,
    resetTime: 1_764_072_000_000,
    retryAfterMs: 0,
    region: 'US',
    source: 'database',
    ...extra,
  });
}

function exceededReply(frame: Frame): string {
  return JSON.stringify({
    type: 'rate_limit_exceeded',
    id: frame.id,
    phoneNumber: frame.phoneNumber,
    reason: 'phone_rate_limit_exceeded',
    limit: 2,
    remaining: 0,
    resetTime: 1_764_072_000_000,
    retryAfterMs: 1_234_567,
    source: 'database',
  });
}

const answerAll: Script = (frame, socket) => socket.send(statusReply(frame));
const neverAnswer: Script = () => undefined;

function waitForState(c: RateLimitClient, state: ClientState): Promise<void> {
  if (c.state === state) return Promise.resolve();
  return new Promise((resolve) => {
    const onState = (s: ClientState): void => {
      if (s !== state) return;
      c.off('state', onState);
      resolve();
    };
    c.on('state', onState);
  });
}

/** A port that refuses WebSocket upgrades (connections are reset) until `release()` frees it. */
async function downPort(): Promise<{ port: number; release(): Promise<void> }> {
  const holder = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const port = (holder.address() as AddressInfo).port;
  const release = () => new Promise<void>((resolve) => holder.close(() => resolve()));
  cleanups.push(async () => {
    if (holder.listening) await release();
  });
  return { port, release };
}

describe('RateLimitClient', () => {
  it('matches replies to requests by id when the server answers out of order', async () => {
    const server = await scriptedServer((_frame, socket, s) => {
      if (s.received.length < 3) return;
      socket.send('not json');
      socket.send(JSON.stringify({ type: 'rate_limit_status', id: 999_999, phoneNumber: '+10000000000' }));
      const [a, b, c] = s.received as [Frame, Frame, Frame];
      socket.send(statusReply(c, { used: 1, remaining: 1 }));
      socket.send(exceededReply(b));
      socket.send(statusReply(a));
    });
    const c = client({ url: server.url, failMode: 'closed', requestTimeoutMs: PATIENT_TIMEOUT_MS });

    const [first, second, third] = await Promise.all([c.check('+14155550001'), c.consume('+14155550002', { ip: '203.0.113.9' }), c.consume('+14155550003')]);

    expect(first).toMatchObject({ type: 'rate_limit_status', phoneNumber: '+14155550001', allowed: true, used: 0, source: 'database' });
    expect(second).toMatchObject({ type: 'rate_limit_exceeded', phoneNumber: '+14155550002', reason: 'phone_rate_limit_exceeded', retryAfterMs: 1_234_567 });
    expect(third).toMatchObject({ type: 'rate_limit_status', phoneNumber: '+14155550003', used: 1 });
    expect([isAllowed(first), isAllowed(second), isAllowed(third)]).toEqual([true, false, true]);

    const [a, b, d] = server.received as [Frame, Frame, Frame];
    expect(a).toEqual({ type: 'rate_limit_check', phoneNumber: '+14155550001', id: a.id });
    expect(b).toEqual({ type: 'rate_limit_consume', phoneNumber: '+14155550002', ip: '203.0.113.9', id: b.id });
    expect(d).not.toHaveProperty('ip');
    expect(new Set([a.id, b.id, d.id]).size).toBe(3);
    for (const id of [a.id, b.id, d.id]) expect(Number.isInteger(id)).toBe(true);
  });

  describe.each<FailMode>(['open', 'closed'])('failMode %s', (failMode) => {
    const expected =
      failMode === 'open'
        ? { type: 'rate_limit_status', allowed: true, source: 'unavailable' }
        : { type: 'rate_limit_exceeded', reason: 'daemon_unavailable', source: 'unavailable' };

    it('answers a request the daemon does not reply to in time, and ignores the late reply', async () => {
      const server = await scriptedServer((frame, socket, s) => {
        // The first request is answered only after the second arrives, i.e. after its timeout.
        if (s.received.length === 2) {
          socket.send(statusReply(s.received[0] as Frame, { used: 42 }));
          socket.send(statusReply(frame, { used: 7 }));
        }
      });
      const c = client({ url: server.url, failMode, requestTimeoutMs: SHORT_TIMEOUT_MS });
      await waitForState(c, 'open');

      const late = await c.consume('+14155550001');
      expect(late).toMatchObject({ ...expected, phoneNumber: '+14155550001', unavailableReason: 'timeout', retryAfterMs: 0 });
      expect(isAllowed(late)).toBe(failMode === 'open');

      // The timed-out id's reply arrives first and must not be taken for this one.
      const next = await c.check('+14155550002');
      expect(next).toMatchObject({ source: 'database', phoneNumber: '+14155550002', used: 7 });
    });

    it('answers requests in flight when the server closes the socket, then reconnects', async () => {
      let cutNextRequest = false;
      const server = await scriptedServer((frame, socket) => {
        if (cutNextRequest) {
          cutNextRequest = false;
          socket.close(1001, 'server shutting down');
        } else socket.send(statusReply(frame));
      });
      const c = client({ url: server.url, failMode, requestTimeoutMs: PATIENT_TIMEOUT_MS, reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
      await waitForState(c, 'open');
      cutNextRequest = true;

      const cut = await c.consume('+14155550001');
      expect(cut).toMatchObject({ ...expected, unavailableReason: 'connection_lost' });

      await waitForState(c, 'open');
      await expect(c.check('+14155550002')).resolves.toMatchObject({ source: 'database', phoneNumber: '+14155550002' });
      expect(server.sockets).toHaveLength(2);
    });

    it('answers a queued request when no connection comes up in time', async () => {
      const down = await downPort();
      const c = client({ url: `ws://127.0.0.1:${down.port}/ws`, failMode, requestTimeoutMs: SHORT_TIMEOUT_MS });
      await expect(c.check('+14155550001')).resolves.toMatchObject({ ...expected, unavailableReason: 'not_connected' });
    });
  });

  it('queues requests while the daemon is down and sends them, in order, once it is up', async () => {
    const down = await downPort();
    const c = client({
      url: `ws://127.0.0.1:${down.port}/ws`,
      failMode: 'closed',
      requestTimeoutMs: PATIENT_TIMEOUT_MS,
      reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
    });
    const states: ClientState[] = [];
    c.on('state', (s) => states.push(s));
    await waitForState(c, 'closed');

    const first = c.consume('+14155550001');
    const second = c.check('+14155550002');

    await down.release();
    const server = await scriptedServer(answerAll, { port: down.port });

    await expect(first).resolves.toMatchObject({ source: 'database', phoneNumber: '+14155550001' });
    await expect(second).resolves.toMatchObject({ source: 'database', phoneNumber: '+14155550002' });
    expect(server.received.map((f) => f.type)).toEqual(['rate_limit_consume', 'rate_limit_check']);
    expect(states).toContain('closed');
    expect(states.at(-1)).toBe('open');
  });

  it('answers at once by failMode beyond maxQueued', async () => {
    const down = await downPort();
    const c = client({ url: `ws://127.0.0.1:${down.port}/ws`, failMode: 'open', requestTimeoutMs: PATIENT_TIMEOUT_MS, maxQueued: 1 });
    const queued = c.check('+14155550001');
    await expect(c.check('+14155550002')).resolves.toMatchObject({ allowed: true, source: 'unavailable', unavailableReason: 'queue_full' });
    await c.close();
    await expect(queued).resolves.toMatchObject({ allowed: true, unavailableReason: 'client_closed' });
  });

  it('rejects error replies with RateLimitRequestError, even when failing open, and keeps the socket', async () => {
    const server = await scriptedServer((frame, socket) => {
      if (frame.phoneNumber === 'nope')
        socket.send(JSON.stringify({ type: 'error', id: frame.id, code: 'invalid_phone_number', message: 'not a phone number' }));
      else if (frame.type === 'rate_limit_consume') socket.send(JSON.stringify({ type: 'error', id: frame.id, code: 'forbidden', message: 'check only' }));
      else socket.send(statusReply(frame));
    });
    const c = client({ url: server.url, failMode: 'open', requestTimeoutMs: PATIENT_TIMEOUT_MS });

    const invalid = c.check('nope');
    await expect(invalid).rejects.toBeInstanceOf(RateLimitRequestError);
    await expect(invalid).rejects.toMatchObject({ code: 'invalid_phone_number', message: 'not a phone number' });
    await expect(c.consume('+14155550001')).rejects.toMatchObject({ name: 'RateLimitRequestError', code: 'forbidden' });
    await expect(c.check('+14155550001')).resolves.toMatchObject({ source: 'database' });
    expect(server.sockets).toHaveLength(1);
  });

  it('rejects a reply that is not a protocol shape instead of trusting it', async () => {
    const server = await scriptedServer((frame, socket) => socket.send(JSON.stringify({ type: 'rate_limit_status', id: frame.id, allowed: 'yes' })));
    const c = client({ url: server.url, failMode: 'open', requestTimeoutMs: PATIENT_TIMEOUT_MS });
    await expect(c.check('+14155550001')).rejects.toMatchObject({ code: 'invalid_response' });
  });

  it('refuses to send a frame the daemon would close the socket over', async () => {
    const server = await scriptedServer(answerAll);
    const c = client({ url: server.url, failMode: 'open', requestTimeoutMs: PATIENT_TIMEOUT_MS });
    await expect(c.check('1'.repeat(5000))).rejects.toMatchObject({ code: 'invalid_message' });
    await expect(c.check('+14155550001')).resolves.toMatchObject({ source: 'database' });
    expect(server.received).toHaveLength(1);
  });

  it('sends the token as a bearer Authorization header', async () => {
    const server = await scriptedServer(answerAll, { requireToken: 's3cret' });
    const c = client({ url: server.url, token: 's3cret', failMode: 'closed', requestTimeoutMs: PATIENT_TIMEOUT_MS });
    await expect(c.check('+14155550001')).resolves.toMatchObject({ source: 'database' });
    expect(server.authorizations).toEqual(['Bearer s3cret']);
  });

  it('rejects with unauthorized instead of failing open when the token is refused', async () => {
    const server = await scriptedServer(answerAll, { requireToken: 's3cret' });
    const c = client({ url: server.url, token: 'wrong', failMode: 'open', requestTimeoutMs: PATIENT_TIMEOUT_MS, reconnect: { initialDelayMs: 5_000 } });
    const queued = c.check('+14155550001');
    await expect(queued).rejects.toMatchObject({ name: 'RateLimitRequestError', code: 'unauthorized' });
    await expect(c.consume('+14155550001')).rejects.toMatchObject({ code: 'unauthorized' });
    expect(server.received).toHaveLength(0);
  });

  it('close() is idempotent, settles what is pending and rejects later calls', async () => {
    const server = await scriptedServer(neverAnswer);
    const c = new RateLimitClient({ url: server.url, failMode: 'closed', requestTimeoutMs: PATIENT_TIMEOUT_MS });
    await waitForState(c, 'open');
    const pending = c.consume('+14155550001');
    await vi.waitFor(() => expect(server.received).toHaveLength(1));
    const serverSawClose = new Promise<number>((resolve) => server.sockets[0]?.once('close', resolve));

    const closing = c.close();
    expect(c.close()).toBe(closing);
    await closing;
    await c.close();

    await expect(pending).resolves.toMatchObject({ type: 'rate_limit_exceeded', reason: 'daemon_unavailable', unavailableReason: 'client_closed' });
    await expect(c.check('+14155550001')).rejects.toMatchObject({ code: 'client_closed' });
    expect(c.state).toBe('closed');
    await expect(serverSawClose).resolves.toBe(1000);
  });

  it('close() while still connecting resolves and stops reconnecting', async () => {
    const down = await downPort();
    const c = new RateLimitClient({ url: `ws://127.0.0.1:${down.port}/ws`, failMode: 'open', reconnect: { initialDelayMs: 10, maxDelayMs: 10 } });
    const queued = c.check('+14155550001');
    await c.close();
    await expect(queued).resolves.toMatchObject({ allowed: true, unavailableReason: 'client_closed' });
    const states: ClientState[] = [];
    c.on('state', (s) => states.push(s));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(states).toEqual([]);
  });

  it('requires an explicit failMode', () => {
    expect(() => new RateLimitClient({ url: 'ws://127.0.0.1:1/ws' } as unknown as ClientOptions)).toThrow(/failMode/);
  });
});

describe('RateLimitHttpClient', () => {
  /** A scripted HTTP daemon; a handler that fails ends its request (the client sees a reset). */
  async function httpServer(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>): Promise<string> {
    const server = http.createServer((req, res) => {
      Promise.resolve(handler(req, res)).catch((err: unknown) => res.destroy(err instanceof Error ? err : new Error(String(err))));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      let text = '';
      req.on('data', (chunk: Buffer) => (text += chunk.toString()));
      req.on('end', () => resolve(JSON.parse(text) as Record<string, unknown>));
    });
  }

  it('maps 200, 429, 400 and a proxy 503 to decisions and errors', async () => {
    const seen: Array<{ url: string | undefined; auth: string | undefined; body: Record<string, unknown> }> = [];
    const baseUrl = await httpServer(async (req, res) => {
      const body = await readBody(req);
      seen.push({ url: req.url, auth: req.headers.authorization, body });
      const common = { phoneNumber: body.phoneNumber, limit: 2, remaining: 0, resetTime: 5, source: 'memory' };
      if (body.phoneNumber === 'bad') {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'invalid_phone_number', message: 'bad number' }));
      } else if (body.phoneNumber === '+14155550503') {
        res.writeHead(503).end('<html>upstream unavailable</html>');
      } else if (req.url === '/v1/consume') {
        res.writeHead(429, { 'retry-after': '2' }).end(JSON.stringify({ ...common, reason: 'ip_rate_limit_exceeded', retryAfterMs: 2000 }));
      } else {
        res.writeHead(200).end(JSON.stringify({ ...common, allowed: true, used: 2, retryAfterMs: 0 }));
      }
    });
    const c = new RateLimitHttpClient({ baseUrl, token: 't', failMode: 'closed', requestTimeoutMs: PATIENT_TIMEOUT_MS });

    await expect(c.check('+14155550001')).resolves.toMatchObject({ type: 'rate_limit_status', allowed: true, source: 'memory' });
    await expect(c.consume('+14155550001', { ip: '203.0.113.9' })).resolves.toMatchObject({ type: 'rate_limit_exceeded', reason: 'ip_rate_limit_exceeded' });
    await expect(c.check('bad')).rejects.toMatchObject({ name: 'RateLimitRequestError', code: 'invalid_phone_number' });
    await expect(c.check('+14155550503')).resolves.toMatchObject({ reason: 'daemon_unavailable', unavailableReason: 'server_error' });
    expect(seen[1]).toEqual({ url: '/v1/consume', auth: 'Bearer t', body: { phoneNumber: '+14155550001', ip: '203.0.113.9' } });
  });

  it('answers by failMode when the daemon cannot be reached or is too slow', async () => {
    const down = await downPort();
    await down.release();
    const refused = new RateLimitHttpClient({ baseUrl: `http://127.0.0.1:${down.port}`, failMode: 'open', requestTimeoutMs: PATIENT_TIMEOUT_MS });
    await expect(refused.check('+14155550001')).resolves.toMatchObject({ allowed: true, source: 'unavailable', unavailableReason: 'not_connected' });

    const baseUrl = await httpServer(() => undefined);
    const slow = new RateLimitHttpClient({ baseUrl, failMode: 'closed', requestTimeoutMs: SHORT_TIMEOUT_MS });
    await expect(slow.consume('+14155550001')).resolves.toMatchObject({ reason: 'daemon_unavailable', unavailableReason: 'timeout' });
  });
});
