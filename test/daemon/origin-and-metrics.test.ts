// Issue 17 and 21, transport side, against the running binary:
// - anonymous mode: a request carrying an Origin not in ALLOWED_ORIGINS may check, never
//   consume (a web page must not spend a victim's quota through its visitors' browsers); local
//   tools without Origin still consume;
// - refused upgrades say why, naming ALLOWED_ORIGINS and the origin received, and are logged at
//   most once a minute per kind;
// - RATELIMIT_METRICS_PORT moves /metrics to its own port (the main port answers 404).

import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  httpRequest,
  postJson,
  startDaemons,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'origin-metrics-test-token-01234';
const ORIGIN = 'https://app.example.com';
const FOREIGN = 'https://evil.example.net';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let anonymous: DaemonProcess;
let guarded: DaemonProcess;
let metricsApart: DaemonProcess;
const clients = new Set<WsClient>();

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  const env = { RATE_LIMIT_PHONE_MAX: '5', RATELIMIT_MESSAGES_PER_SECOND: '1000000', RATE_LIMIT_IP_MAX: '1000000' };
  [anonymous, guarded, metricsApart] = await startDaemons([
    { databaseUrl: db.url, env },
    { databaseUrl: db.url, env: { ...env, RATELIMIT_API_TOKENS: TOKEN, ALLOWED_ORIGINS: ORIGIN } },
    { databaseUrl: db.url, env: { ...env, RATELIMIT_METRICS_PORT: '0' } },
  ]);
});

afterAll(async () => {
  await closeAll(clients);
  await stopAll([anonymous, guarded, metricsApart]);
  await db?.drop();
});

describe('anonymous mode (no RATELIMIT_API_TOKENS, no ALLOWED_ORIGINS)', () => {
  it('over HTTP: a foreign Origin may check but its consume is 403 forbidden; without Origin a consume is allowed', async () => {
    const number = freshNumber();
    const consume = await postJson(anonymous.url, '/v1/consume', { phoneNumber: number }, { Origin: FOREIGN });
    expect(consume.status).toBe(403);
    expect(consume.json).toMatchObject({ type: 'error', code: 'forbidden' });
    const check = await postJson(anonymous.url, '/v1/check', { phoneNumber: number }, { Origin: FOREIGN });
    expect(check.status).toBe(200);
    // Nothing was spent by the refused consume.
    expect(check.json).toMatchObject({ allowed: true });
    expect((await postJson(anonymous.url, '/v1/consume', { phoneNumber: number })).status).toBe(200);
  });

  it('over WebSocket: a foreign Origin connects, and its consume gets an error forbidden', async () => {
    const c = await WsClient.connect(anonymous.wsUrl, { origin: FOREIGN });
    clients.add(c);
    expect(await c.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() })).toMatchObject({ type: 'error', code: 'forbidden' });
    expect(await c.call({ type: 'rate_limit_check', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status', allowed: true });
    const local = await WsClient.connect(anonymous.wsUrl);
    clients.add(local);
    expect(await local.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status', allowed: true });
  });
});

describe('refused upgrades (issue 21)', () => {
  const upgrade = (d: DaemonProcess, headers: Record<string, string>) =>
    httpRequest(`${d.url}/ws`, {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });

  it('name ALLOWED_ORIGINS and the origin received, and are logged once per minute per kind', async () => {
    const refused = [];
    for (let i = 0; i < 5; i++) refused.push(await upgrade(guarded, { Origin: FOREIGN }));
    for (const r of refused) {
      expect(r.status).toBe(401);
      expect((r.json as { message: string }).message).toContain('ALLOWED_ORIGINS');
      expect((r.json as { message: string }).message).toContain(FOREIGN);
    }
    const noToken = await upgrade(guarded, {});
    expect(noToken.status).toBe(401);
    expect((noToken.json as { message: string }).message).toMatch(/bearer token is required/);
    const warns = () => guarded.logs.filter((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.startsWith('refused a WebSocket upgrade'));
    // One line for the five foreign-origin refusals, one for the refusal without a token (the
    // log reaches us through a pipe, after the answer).
    await expect.poll(() => warns().length).toBe(2);
    expect(warns().map((w) => w.kind)).toEqual(['upgrade_origin_not_allowed', 'upgrade_token_required']);
    expect(warns()[0]).toMatchObject({ status: 401, reason: 'origin_not_allowed', origin: JSON.stringify(FOREIGN) });
  });
});

describe('aborted requests', () => {
  it('are logged at most once a minute, and the daemon answers on', async () => {
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect(anonymous.port, '127.0.0.1', () => {
          s.write('POST /v1/consume HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"phone');
          setImmediate(() => s.destroy());
        });
        s.on('error', () => undefined);
        s.on('close', () => resolve());
      });
    }
    const aborted = () => anonymous.logs.filter((l) => l.kind === 'request_aborted');
    await expect.poll(() => aborted().length).toBe(1);
    expect(aborted()[0]!.level).toBe(40);
    expect(anonymous.logs.filter((l) => l.level === 50)).toEqual([]);
    expect((await httpRequest(`${anonymous.url}/health`)).status).toBe(200);
    // Still one, once all five have been seen through (the health answer came after them).
    expect(aborted()).toHaveLength(1);
  });
});

describe('RATELIMIT_METRICS_PORT', () => {
  it('serves /metrics only on its own port; the main port answers 404 for it', async () => {
    const listening = metricsApart.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('ratelimit listening'));
    const port = listening?.metricsPort as number;
    expect(port).toBeGreaterThan(0);
    expect(port).not.toBe(metricsApart.port);
    const scraped = await httpRequest(`http://127.0.0.1:${port}/metrics`);
    expect(scraped.status).toBe(200);
    expect(scraped.text).toContain('ratelimit_ip_table_full_total');
    expect((await httpRequest(`${metricsApart.url}/metrics`)).status).toBe(404);
    expect((await httpRequest(`${metricsApart.url}/health`)).status).toBe(200);
    // The metrics port serves nothing else, and parses its targets like the main port.
    expect((await httpRequest(`http://127.0.0.1:${port}/health`)).status).toBe(404);
    expect((await httpRequest(`http://127.0.0.1:${port}/metrics%zz`)).status).toBe(400);
    // Unset (the other daemons): /metrics on the main port, as before.
    expect((await httpRequest(`${anonymous.url}/metrics`)).status).toBe(200);
  });
});
