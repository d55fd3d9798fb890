// Protocol polish (issue #13 part 6) against the running binary: 426 for GET /ws without an
// upgrade, `unauthorized` in 401 bodies, a reason on the 1009 close, `too_many_requests` echoing
// the request's id, and WebSockets without a token closed after RATELIMIT_WS_IDLE_TIMEOUT idle.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  httpRequest,
  postJson,
  startDaemon,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'polish-test-token';
const ORIGIN = 'https://app.example.com';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let d: DaemonProcess;
const clients = new Set<WsClient>();

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  d = await startDaemon({
    databaseUrl: db.url,
    env: { RATELIMIT_API_TOKENS: TOKEN, ALLOWED_ORIGINS: ORIGIN, RATELIMIT_MESSAGES_PER_SECOND: '1', RATELIMIT_WS_IDLE_TIMEOUT: '2s' },
  });
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
});

afterAll(async () => {
  await stopAll([d]);
  await db?.drop();
});

async function connect(opts: { headers?: Record<string, string>; origin?: string }): Promise<WsClient> {
  const c = await WsClient.connect(d.wsUrl, opts);
  clients.add(c);
  return c;
}

const bearer = { Authorization: `Bearer ${TOKEN}` };

describe('HTTP', () => {
  it('answers GET /ws without an upgrade with 426 Upgrade Required', async () => {
    const r = await httpRequest(`${d.url}/ws`);
    expect(r.status).toBe(426);
    expect(r.headers.upgrade).toBe('websocket');
    expect(r.json).toMatchObject({ type: 'error' });
  });

  it('answers 401 with code `unauthorized`, on the routes and on the upgrade', async () => {
    const post = await postJson(d.url, '/v1/check', { phoneNumber: freshNumber() });
    expect(post.status).toBe(401);
    expect(post.json).toMatchObject({ type: 'error', code: 'unauthorized' });
    const upgrade = await httpRequest(d.wsUrl.replace('ws:', 'http:'), {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    expect(upgrade.status).toBe(401);
    expect(upgrade.json).toMatchObject({ type: 'error', code: 'unauthorized' });
  });
});

describe('WebSocket', () => {
  it('closes with 1009 and a reason on a frame over the size limit', async () => {
    const c = await connect({ headers: bearer });
    c.send(JSON.stringify({ type: 'rate_limit_check', phoneNumber: freshNumber(), pad: 'x'.repeat(5000) }));
    const close = await c.closed;
    expect(close.code).toBe(1009);
    expect(close.reason).toMatch(/larger than 4096 bytes/);
  });

  it('echoes the id of a throttled request in its too_many_requests error', async () => {
    const c = await connect({ origin: ORIGIN });
    const ids = ['a', 'b', 'c', 4, 5, 6];
    for (const id of ids) c.sendJson({ type: 'rate_limit_check', id, phoneNumber: freshNumber() });
    const replies = [];
    for (let i = 0; i < ids.length; i++) replies.push(await c.next());
    expect(replies.map((r) => r.id)).toEqual(ids);
    const throttled = replies.filter((r) => r.type === 'error' && r.code === 'too_many_requests');
    // One message per second with a burst of two: at least the last few are throttled.
    expect(throttled.length).toBeGreaterThanOrEqual(3);
    // An id that is not one the protocol allows is not echoed, throttled or not.
    c.sendJson({ type: 'rate_limit_check', id: { nested: true }, phoneNumber: freshNumber() });
    expect((await c.next()).id).toBeUndefined();
  });

  it('closes a socket without a token that sends nothing for RATELIMIT_WS_IDLE_TIMEOUT, not a token-holding one', async () => {
    const browser = await connect({ origin: ORIGIN });
    const service = await connect({ headers: bearer });
    const close = await browser.closed;
    expect(close.code).toBe(1000);
    expect(close.reason).toMatch(/no message for 2 s/);
    expect(service.isOpen).toBe(true);
    expect(await service.call({ type: 'rate_limit_check', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status' });
  });
});
