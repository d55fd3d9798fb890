// docs/protocol.md's WebSocket and HTTP surface, against the real binary and a real PostgreSQL.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  httpRequest,
  postJson,
  type Reply,
  startDaemons,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'protocol-test-token';
const PHONE_MAX = 2;

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
/** Open (no tokens), generous IP limit: the plain protocol. */
let main: DaemonProcess;
/** Open, RATE_LIMIT_IP_MAX=3: the socket's address counts. */
let ipOpen: DaemonProcess;
/** Tokens, RATE_LIMIT_IP_MAX=3: the message's `ip` counts. */
let ipToken: DaemonProcess;
const clients = new Set<WsClient>();

async function connect(d: DaemonProcess, headers?: Record<string, string>): Promise<WsClient> {
  const c = await WsClient.connect(d.wsUrl, headers ? { headers } : {});
  clients.add(c);
  return c;
}

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  const common = { RATE_LIMIT_PHONE_MAX: String(PHONE_MAX), RATELIMIT_MESSAGES_PER_SECOND: '1000000' };
  // Started together: concurrent migrations of one database are part of the contract.
  [main, ipOpen, ipToken] = await startDaemons([
    { databaseUrl: db.url, env: { ...common, RATE_LIMIT_IP_MAX: '1000000' } },
    { databaseUrl: db.url, env: { ...common, RATE_LIMIT_IP_MAX: '3' } },
    { databaseUrl: db.url, env: { ...common, RATE_LIMIT_IP_MAX: '3', RATELIMIT_API_TOKENS: TOKEN } },
  ]);
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
});

afterAll(async () => {
  await stopAll([main, ipOpen, ipToken]);
  await db?.drop();
});

function expectStatus(r: Reply, fields: Partial<Reply>): void {
  expect(r).toMatchObject({ type: 'rate_limit_status', source: 'database', ...fields });
  expect(typeof r.resetTime).toBe('number');
  expect(typeof r.limit).toBe('number');
}

describe('WebSocket check and consume', () => {
  it('check reports usage without changing it', async () => {
    const c = await connect(main);
    const phone = freshNumber();
    const first = await c.call({ type: 'rate_limit_check', phoneNumber: phone });
    expectStatus(first, { phoneNumber: phone, allowed: true, limit: PHONE_MAX, used: 0, remaining: PHONE_MAX, retryAfterMs: 0, region: 'US' });
    const again = await c.call({ type: 'rate_limit_check', phoneNumber: phone });
    expect(again).toMatchObject({ used: 0, remaining: PHONE_MAX, allowed: true });
  });

  it('consume admits exactly the limit, then denies with the time to wait', async () => {
    const c = await connect(main);
    const phone = freshNumber();
    const before = Date.now();
    const one = await c.call({ type: 'rate_limit_consume', phoneNumber: phone });
    expectStatus(one, { allowed: true, used: 1, remaining: 1, retryAfterMs: 0 });
    const two = await c.call({ type: 'rate_limit_consume', phoneNumber: phone });
    expectStatus(two, { allowed: true, used: 2, remaining: 0, retryAfterMs: 0 });
    const three = await c.call({ type: 'rate_limit_consume', phoneNumber: phone });
    expect(three).toMatchObject({
      type: 'rate_limit_exceeded',
      reason: 'phone_rate_limit_exceeded',
      phoneNumber: phone,
      limit: PHONE_MAX,
      remaining: 0,
      source: 'database',
    });
    expect(three.retryAfterMs as number).toBeGreaterThan(0);
    expect(three.resetTime as number).toBeGreaterThan(before);
    const check = await c.call({ type: 'rate_limit_check', phoneNumber: phone });
    expectStatus(check, { allowed: false, used: PHONE_MAX, remaining: 0 });
  });

  it('treats two spellings of one number as one number', async () => {
    const c = await connect(main);
    const phone = freshNumber(); // +1415XXXYYYY
    const spelled = `+1 (415) ${phone.slice(5, 8)}-${phone.slice(8)}`;
    const consumed = await c.call({ type: 'rate_limit_consume', phoneNumber: spelled });
    expectStatus(consumed, { phoneNumber: phone, used: 1 });
    expect(await c.call({ type: 'rate_limit_check', phoneNumber: phone })).toMatchObject({ used: 1 });
  });

  it('echoes string and number ids, and adds none when absent', async () => {
    const c = await connect(main);
    const phone = freshNumber();
    for (const id of ['abc', '', 0, -7, 3.5, 2 ** 53 - 1]) {
      c.sendJson({ type: 'rate_limit_check', id, phoneNumber: phone });
      expect((await c.next()).id).toStrictEqual(id);
    }
    c.sendJson({ type: 'rate_limit_check', phoneNumber: phone });
    const noId = await c.next();
    expect(noId.type).toBe('rate_limit_status');
    expect('id' in noId).toBe(false);
    // Errors echo the id too, so a pipelining client can match them.
    c.sendJson({ type: 'rate_limit_check', id: 'bad-1', phoneNumber: 'not a number' });
    expect(await c.next()).toMatchObject({ type: 'error', id: 'bad-1', code: 'invalid_phone_number' });
  });

  it('answers 200 pipelined requests on one socket in request order', async () => {
    const c = await connect(main);
    // 11 numbers: coprime with the check period, so every number gets consumes.
    const numbers = Array.from({ length: 11 }, () => freshNumber());
    const N = 200;
    for (let i = 0; i < N; i++) {
      const phoneNumber = numbers[i % numbers.length]!;
      // Every fifth is a check and every 37th is broken, so fast and slow answers interleave.
      const frame =
        i % 37 === 36
          ? { type: 'rate_limit_consume', id: i, phoneNumber: 'nope' }
          : { type: i % 5 === 0 ? 'rate_limit_check' : 'rate_limit_consume', id: i, phoneNumber };
      c.sendJson(frame);
    }
    const replies: Reply[] = [];
    for (let i = 0; i < N; i++) replies.push(await c.next());
    expect(replies.map((r) => r.id)).toStrictEqual(Array.from({ length: N }, (_, i) => i));
    const allowedPerNumber = new Map<string, number>();
    for (const r of replies) {
      if (r.type === 'rate_limit_status' && r.allowed && (r.id as number) % 5 !== 0) {
        allowedPerNumber.set(r.phoneNumber as string, (allowedPerNumber.get(r.phoneNumber as string) ?? 0) + 1);
      }
    }
    for (const n of numbers) expect(allowedPerNumber.get(n)).toBe(PHONE_MAX);
    expect(replies.filter((r) => r.type === 'error').every((r) => r.code === 'invalid_phone_number')).toBe(true);
  });

  it('answers a binary frame with invalid_message and keeps the socket open', async () => {
    const c = await connect(main);
    c.send(Buffer.from(JSON.stringify({ type: 'rate_limit_check', phoneNumber: '+14155552671' })), { binary: true });
    expect(await c.next()).toMatchObject({ type: 'error', code: 'invalid_message' });
    expect(await c.call({ type: 'rate_limit_check', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status' });
    expect(c.isOpen).toBe(true);
  });

  it('accepts a 4 KiB frame and closes the socket with 1009 on a larger one', async () => {
    const c = await connect(main);
    const frame = (bytes: number) => {
      const base = JSON.stringify({ type: 'rate_limit_check', id: 'big', phoneNumber: '+14155552671', pad: '' });
      return base.replace('"pad":""', `"pad":"${'x'.repeat(bytes - base.length)}"`);
    };
    expect(Buffer.byteLength(frame(4096))).toBe(4096);
    c.send(frame(4096));
    // At the limit the frame is read and answered (the unknown field is ignored), not dropped.
    expect(await c.next()).toMatchObject({ type: 'rate_limit_status', id: 'big' });
    c.send(frame(4097));
    expect((await c.closed).code).toBe(1009);
    // Only that connection is gone.
    const other = await connect(main);
    expect(await other.call({ type: 'rate_limit_check', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status' });
  });
});

describe('HTTP', () => {
  it('POST /v1/check answers 200 with the WebSocket reply fields', async () => {
    const phone = freshNumber();
    const r = await postJson(main.url, '/v1/check', { phoneNumber: phone });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expectStatus(r.json as Reply, { phoneNumber: phone, allowed: true, limit: PHONE_MAX, used: 0, remaining: PHONE_MAX, retryAfterMs: 0 });
  });

  it('POST /v1/consume answers 200 while allowed, then 429 with Retry-After', async () => {
    const phone = freshNumber();
    for (const used of [1, 2]) {
      const r = await postJson(main.url, '/v1/consume', { phoneNumber: phone });
      expect(r.status).toBe(200);
      expectStatus(r.json as Reply, { allowed: true, used });
    }
    const denied = await postJson(main.url, '/v1/consume', { phoneNumber: phone });
    expect(denied.status).toBe(429);
    const body = denied.json as Reply;
    expect(body).toMatchObject({ reason: 'phone_rate_limit_exceeded', remaining: 0, phoneNumber: phone });
    const retryAfter = Number(denied.headers['retry-after']);
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBe(Math.max(1, Math.ceil((body.retryAfterMs as number) / 1000)));
  });

  it('shares counts with the WebSocket', async () => {
    const phone = freshNumber();
    expect((await postJson(main.url, '/v1/consume', { phoneNumber: phone })).status).toBe(200);
    const c = await connect(main);
    expect(await c.call({ type: 'rate_limit_check', phoneNumber: phone })).toMatchObject({ used: 1 });
  });

  it('answers bad input with 400 and the error code', async () => {
    const cases: Array<[string, string, string]> = [
      ['/v1/check', '{"phoneNumber":', 'invalid_json'],
      ['/v1/consume', '[]', 'invalid_message'],
      ['/v1/consume', '{}', 'invalid_message'],
      ['/v1/check', '{"phoneNumber":42}', 'invalid_message'],
      ['/v1/consume', '{"phoneNumber":"+14155552671","ip":"not-an-ip"}', 'invalid_message'],
      ['/v1/consume', '{"type":"rate_limit_check","phoneNumber":"+14155552671"}', 'invalid_message'],
      ['/v1/check', '{"phoneNumber":"12345"}', 'invalid_phone_number'],
      ['/v1/consume', '{"phoneNumber":"+1 415 555"}', 'invalid_phone_number'],
    ];
    for (const [route, body, code] of cases) {
      const r = await postJson(main.url, route, body);
      expect({ route, body, status: r.status, json: r.json }).toMatchObject({ status: 400, json: { type: 'error', code } });
    }
  });

  it('accepts a body that names its own route type', async () => {
    const r = await postJson(main.url, '/v1/check', { type: 'rate_limit_check', id: 'h1', phoneNumber: freshNumber() });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ type: 'rate_limit_status', id: 'h1' });
  });

  it('takes the same body on both routes, `ip` included', async () => {
    const body = { phoneNumber: freshNumber(), ip: '203.0.113.7' };
    const check = await postJson(main.url, '/v1/check', body);
    expect(check.status).toBe(200);
    expect(check.json).toMatchObject({ type: 'rate_limit_status', used: 0 });
    expect((await postJson(main.url, '/v1/consume', body)).status).toBe(200);
  });

  it('/health says ok while the database is up', async () => {
    const r = await httpRequest(`${main.url}/health`);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ status: 'ok', database: 'up' });
  });

  it('/metrics exposes decisions, fallback state, connections, DB latency and process metrics', async () => {
    const c = await connect(main);
    await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() });
    await c.call({ type: 'rate_limit_check', phoneNumber: 'x' });
    const r = await httpRequest(`${main.url}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
    const line = (re: RegExp) => r.text.split('\n').find((l) => re.test(l));
    const allowed = line(/^ratelimit_decisions_total\{.*kind="consume".*result="allowed".*source="database".*\} \d+/);
    expect(allowed, r.text).toBeDefined();
    expect(Number(allowed!.split(' ').at(-1))).toBeGreaterThanOrEqual(1);
    expect(line(/^ratelimit_request_errors_total\{code="invalid_phone_number"\} [1-9]/)).toBeDefined();
    expect(line(/^ratelimit_fallback_active 0$/)).toBeDefined();
    expect(Number(line(/^ratelimit_websocket_connections /)?.split(' ')[1])).toBeGreaterThanOrEqual(1);
    expect(line(/^ratelimit_db_query_duration_seconds_count\{op="consume"\} [1-9]/)).toBeDefined();
    expect(line(/^process_cpu_user_seconds_total /)).toBeDefined();
  });
});

describe('per-IP limit (RATE_LIMIT_IP_MAX=3)', () => {
  it('denies the 4th consume from one address across numbers, and ignores `ip` without a token', async () => {
    const c = await connect(ipOpen);
    const ips = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4'];
    for (const ip of ips.slice(0, 3)) {
      expect(await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber(), ip })).toMatchObject({ type: 'rate_limit_status', allowed: true });
    }
    // A fresh `ip` does not help: without a token the socket's address is what counts.
    const fourth = await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber(), ip: ips[3] });
    expect(fourth).toMatchObject({ type: 'rate_limit_exceeded', reason: 'ip_rate_limit_exceeded', remaining: 0, limit: 3 });
    expect(fourth.retryAfterMs as number).toBeGreaterThan(0);
    // The same address over HTTP is the same client.
    const http = await postJson(ipOpen.url, '/v1/consume', { phoneNumber: freshNumber() });
    expect(http.status).toBe(429);
    expect(http.json).toMatchObject({ reason: 'ip_rate_limit_exceeded' });
    expect(Number(http.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Checks are not consumes.
    expect(await c.call({ type: 'rate_limit_check', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status', allowed: true });
  });

  it('honours `ip` from a token-authenticated client', async () => {
    const c = await connect(ipToken, { Authorization: `Bearer ${TOKEN}` });
    const user = '203.0.113.9';
    for (let i = 0; i < 3; i++) {
      expect(await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber(), ip: user })).toMatchObject({ type: 'rate_limit_status', allowed: true });
    }
    expect(await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber(), ip: user })).toMatchObject({
      type: 'rate_limit_exceeded',
      reason: 'ip_rate_limit_exceeded',
    });
    // Another end user behind the same service is not affected, nor is the service's own address.
    expect(await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber(), ip: '2001:db8::1' })).toMatchObject({
      type: 'rate_limit_status',
      allowed: true,
    });
    expect(await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status', allowed: true });
  });
});
