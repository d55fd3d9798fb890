// The client's outcome() (docs/client.md *Reporting outcomes*) over WebSocket and HTTP against
// the real binary: recorded, duplicate, the daemon's refusals as RateLimitRequestError, and
// daemon_unavailable (never a failMode answer) when it cannot be delivered.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RateLimitClient, RateLimitHttpClient, RateLimitRequestError, isAllowed } from '../../src/client/index.js';
import { assertBuilt, createTestDatabase, type DaemonProcess, freshNumber, startDaemon, stopAll } from '../helpers/fixture.js';

const TOKEN = 'client-outcome-token-0123';
let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemon: DaemonProcess;
const closers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  daemon = await startDaemon({ databaseUrl: db.url, env: { RATELIMIT_API_TOKENS: TOKEN, RATE_LIMIT_IP_MAX: '1000000' } });
});

afterAll(async () => {
  for (const close of closers) await close();
  await stopAll([daemon]);
  await db?.drop();
});

async function rejection(p: Promise<unknown>): Promise<RateLimitRequestError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RateLimitRequestError);
  return err as RateLimitRequestError;
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('outcome()', () => {
  it('over WebSocket: recorded, then duplicate; a conflicting or unknown one rejects', async () => {
    const limiter = new RateLimitClient({ url: daemon.wsUrl, token: TOKEN, failMode: 'closed' });
    closers.push(() => limiter.close());
    const d = await limiter.consume(freshNumber());
    expect(isAllowed(d)).toBe(true);
    const id = (d as { decisionId?: string }).decisionId!;
    expect(await limiter.outcome(id, 'answered', 30_000)).toEqual({ decisionId: id, duplicate: false });
    expect(await limiter.outcome(id, 'answered', 30_000)).toEqual({ decisionId: id, duplicate: true });
    expect((await rejection(limiter.outcome(id, 'failed'))).code).toBe('invalid_message');
    expect((await rejection(limiter.outcome(`${id.slice(0, -1)}${id.endsWith('A') ? 'B' : 'A'}`, 'failed'))).code).toBe('unknown_decision');
  });

  it('over HTTP: the same answers', async () => {
    const limiter = new RateLimitHttpClient({ baseUrl: daemon.url, token: TOKEN, failMode: 'closed' });
    const d = await limiter.consume(freshNumber());
    const id = (d as { decisionId?: string }).decisionId!;
    expect(await limiter.outcome(id, 'verified')).toEqual({ decisionId: id, duplicate: false });
    expect(await limiter.outcome(id, 'verified')).toEqual({ decisionId: id, duplicate: true });
    expect((await rejection(limiter.outcome(id, 'unanswered'))).code).toBe('invalid_message');
    expect((await rejection(limiter.outcome('nope', 'failed'))).code).toBe('unknown_decision');
    const anonymous = new RateLimitHttpClient({ baseUrl: daemon.url, failMode: 'closed' });
    expect((await rejection(anonymous.outcome(id, 'verified'))).code).toBe('unauthorized');
  });

  it('rejects with daemon_unavailable when it cannot be delivered (never a failMode answer)', async () => {
    const port = await deadPort();
    const http = new RateLimitHttpClient({ baseUrl: `http://127.0.0.1:${port}`, token: TOKEN, failMode: 'open', requestTimeoutMs: 2_000 });
    expect((await rejection(http.outcome('x', 'failed'))).code).toBe('daemon_unavailable');
    const ws = new RateLimitClient({ url: `ws://127.0.0.1:${port}/ws`, token: TOKEN, failMode: 'open', requestTimeoutMs: 300 });
    closers.push(() => ws.close());
    expect((await rejection(ws.outcome('x', 'failed'))).code).toBe('daemon_unavailable');
    // A consume on the same client still gets its failMode answer.
    expect(await ws.consume(freshNumber())).toMatchObject({ source: 'unavailable', allowed: true });
  });
});
