// The browser entry's own rules, in Node: `ws`'s WHATWG-style WebSocket class stands in for the
// browser's global one (same onopen/onmessage/onclose API) against a scripted server on
// 127.0.0.1. The real browser runs in test/browser/example.test.ts.

import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { BrowserRateLimitClient, RateLimitRequestError, isAllowed, type ClientState } from '../../src/client/browser.js';

const PATIENT_TIMEOUT_MS = 30_000;
const globals = globalThis as { WebSocket?: unknown };
const hadWebSocket = 'WebSocket' in globals;
const ownWebSocket = globals.WebSocket;
const cleanups: Array<() => Promise<void>> = [];

beforeEach(() => {
  globals.WebSocket = WebSocket;
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  if (hadWebSocket) globals.WebSocket = ownWebSocket;
  else delete globals.WebSocket;
});

/** Answers every check with a status; records frames and whether an Authorization header came. */
async function server(opts: { refuse?: number } = {}): Promise<{ url: string; frames: Array<Record<string, unknown>>; headers: string[] }> {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    path: '/ws',
    verifyClient: (_info, done) => (opts.refuse ? done(false, opts.refuse) : done(true)),
  });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const frames: Array<Record<string, unknown>> = [];
  const headers: string[] = [];
  wss.on('connection', (socket, req) => {
    headers.push(req.headers.authorization ?? '');
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as Record<string, unknown>;
      frames.push(frame);
      const reply = { type: 'rate_limit_status', id: frame.id, phoneNumber: frame.phoneNumber, allowed: false, reason: 'phone_rate_limit_exceeded' };
      socket.send(
        JSON.stringify({ ...reply, limit: 2, used: 2, remaining: 0, resetTime: 1_764_072_000_000, retryAfterMs: 2_580_000, region: 'US', source: 'database' }),
      );
    });
  });
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  );
  return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/ws`, frames, headers };
}

function browserClient(opts: ConstructorParameters<typeof BrowserRateLimitClient>[0]): BrowserRateLimitClient {
  const c = new BrowserRateLimitClient(opts);
  cleanups.push(() => c.close());
  return c;
}

describe('BrowserRateLimitClient', () => {
  it('checks over the global WebSocket, without any Authorization header', async () => {
    const s = await server();
    const c = browserClient({ url: s.url, failMode: 'closed', requestTimeoutMs: PATIENT_TIMEOUT_MS });
    const [a, b] = await Promise.all([c.check('+14155552671'), c.check('+14155552672')]);
    expect(a).toMatchObject({ phoneNumber: '+14155552671', used: 2, limit: 2, source: 'database' });
    expect(b.phoneNumber).toBe('+14155552672');
    expect(isAllowed(a)).toBe(false);
    expect(s.frames.map((f) => f.type)).toEqual(['rate_limit_check', 'rate_limit_check']);
    expect(s.headers).toEqual(['']);
  });

  it('refuses consume locally with forbidden, sending nothing', async () => {
    const s = await server();
    const c = browserClient({ url: s.url, failMode: 'open', requestTimeoutMs: PATIENT_TIMEOUT_MS });
    await c.check('+14155552671');
    const err = await c.consume('+14155552671').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitRequestError);
    expect((err as RateLimitRequestError).code).toBe('forbidden');
    expect(s.frames.map((f) => f.type)).toEqual(['rate_limit_check']);
  });

  it('refuses a token: anything in a page is public', () => {
    expect(() => new BrowserRateLimitClient({ url: 'ws://127.0.0.1:1/ws', failMode: 'open', token: 't' } as never)).toThrow(/ALLOWED_ORIGINS/);
  });

  it('says where to look when the environment has no WebSocket', () => {
    delete globals.WebSocket;
    expect(() => new BrowserRateLimitClient({ url: 'ws://127.0.0.1:1/ws', failMode: 'open' })).toThrow(/phone-ratelimit\/client/);
  });

  it('answers by failMode when the upgrade is refused, naming the origin as a possible cause', async () => {
    const s = await server({ refuse: 403 });
    const states: Array<[ClientState, string | undefined]> = [];
    const c = browserClient({ url: s.url, failMode: 'open', requestTimeoutMs: 300, onState: (st, cause) => states.push([st, cause?.message]) });
    const d = await c.check('+14155552671');
    expect(d).toMatchObject({ allowed: true, source: 'unavailable', unavailableReason: 'not_connected' });
    const closed = states.find(([st]) => st === 'closed');
    expect(closed?.[1]).toMatch(/unreachable, or .*ALLOWED_ORIGINS/);
  });
});
