// Tokens and browser origins (docs/protocol.md "Auth"), on the upgrade and on the HTTP routes.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  httpRequest,
  postJson,
  refusedUpgradeStatus,
  startDaemons,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const TOKENS = ['token-alpha-0123456789', 'token-beta-0123456789'];
const ORIGIN = 'https://app.example.com';
const FOREIGN = 'https://evil.example.net';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
/** Tokens and an allowed origin. */
let guarded: DaemonProcess;
/** No tokens, but an allowed origin: other browser origins must still be kept out. */
let open: DaemonProcess;
const clients = new Set<WsClient>();

async function connect(url: string, opts: { headers?: Record<string, string>; origin?: string } = {}): Promise<WsClient> {
  const c = await WsClient.connect(url, opts);
  clients.add(c);
  return c;
}

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  const env = { ALLOWED_ORIGINS: ORIGIN, RATE_LIMIT_PHONE_MAX: '5', RATELIMIT_MESSAGES_PER_SECOND: '1000000', RATE_LIMIT_IP_MAX: '1000000' };
  [guarded, open] = await startDaemons([
    { databaseUrl: db.url, env: { ...env, RATELIMIT_API_TOKENS: TOKENS.join(',') } },
    { databaseUrl: db.url, env },
  ]);
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
});

afterAll(async () => {
  await stopAll([guarded, open]);
  await db?.drop();
});

describe('WebSocket upgrade with RATELIMIT_API_TOKENS set', () => {
  it('refuses an upgrade without a token with HTTP 401', async () => {
    expect(await refusedUpgradeStatus(guarded.wsUrl)).toBe(401);
  });

  it('refuses a wrong token with 401, in the header or the query', async () => {
    expect(await refusedUpgradeStatus(guarded.wsUrl, { headers: { Authorization: 'Bearer nope' } })).toBe(401);
    expect(await refusedUpgradeStatus(`${guarded.wsUrl}?token=nope`)).toBe(401);
    // A prefix of a real token is not that token.
    expect(await refusedUpgradeStatus(guarded.wsUrl, { headers: { Authorization: `Bearer ${TOKENS[0]!.slice(0, -1)}` } })).toBe(401);
  });

  it('accepts every configured token, as a bearer header or as ?token=', async () => {
    const viaHeader = await connect(guarded.wsUrl, { headers: { Authorization: `Bearer ${TOKENS[0]}` } });
    expect(await viaHeader.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status', allowed: true });
    const viaQuery = await connect(`${guarded.wsUrl}?token=${TOKENS[1]}`);
    expect(await viaQuery.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status', allowed: true });
  });

  it('lets an allowed browser origin connect without a token, check, but not consume', async () => {
    const browser = await connect(guarded.wsUrl, { origin: ORIGIN });
    const phone = freshNumber();
    expect(await browser.call({ type: 'rate_limit_check', phoneNumber: phone })).toMatchObject({ type: 'rate_limit_status', allowed: true, used: 0 });
    expect(await browser.call({ type: 'rate_limit_consume', id: 'b1', phoneNumber: phone })).toMatchObject({ type: 'error', id: 'b1', code: 'forbidden' });
    // Forbidden is an answer, not a disconnect; and nothing was counted.
    expect(browser.isOpen).toBe(true);
    expect(await browser.call({ type: 'rate_limit_check', phoneNumber: phone })).toMatchObject({ used: 0 });
  });

  it('refuses a disallowed origin without a token with 401', async () => {
    expect(await refusedUpgradeStatus(guarded.wsUrl, { origin: FOREIGN })).toBe(401);
  });

  it('does not let an allowed origin make up for a wrong token', async () => {
    expect(await refusedUpgradeStatus(guarded.wsUrl, { origin: ORIGIN, headers: { Authorization: 'Bearer nope' } })).toBe(401);
  });
});

describe('WebSocket upgrade without tokens but with ALLOWED_ORIGINS', () => {
  it('accepts non-browser clients and allowed origins, and refuses other origins', async () => {
    const service = await connect(open.wsUrl);
    expect(await service.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() })).toMatchObject({ type: 'rate_limit_status', allowed: true });
    const browser = await connect(open.wsUrl, { origin: ORIGIN });
    expect(await browser.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() })).toMatchObject({ type: 'error', code: 'forbidden' });
    // A page on another site must not borrow a visitor's network position.
    expect(await refusedUpgradeStatus(open.wsUrl, { origin: FOREIGN })).toBe(403);
  });
});

describe('HTTP with RATELIMIT_API_TOKENS set', () => {
  it('answers 401 without a token or with a wrong one', async () => {
    for (const route of ['/v1/check', '/v1/consume']) {
      const none = await postJson(guarded.url, route, { phoneNumber: freshNumber() });
      expect(none.status).toBe(401);
      expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(none.json).toMatchObject({ type: 'error', code: 'unauthorized' });
      expect((await postJson(guarded.url, route, { phoneNumber: freshNumber() }, { Authorization: 'Bearer nope' })).status).toBe(401);
      expect((await postJson(`${guarded.url}`, `${route}?token=nope`, { phoneNumber: freshNumber() })).status).toBe(401);
    }
  });

  it('accepts a bearer header and ?token=', async () => {
    const phone = freshNumber();
    expect((await postJson(guarded.url, '/v1/consume', { phoneNumber: phone }, { Authorization: `Bearer ${TOKENS[1]}` })).status).toBe(200);
    const r = await postJson(guarded.url, `/v1/check?token=${TOKENS[0]}`, { phoneNumber: phone });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ used: 1 });
  });

  it('lets an allowed origin check (with CORS) and answers its consume with 403', async () => {
    const phone = freshNumber();
    const check = await postJson(guarded.url, '/v1/check', { phoneNumber: phone }, { Origin: ORIGIN });
    expect(check.status).toBe(200);
    expect(check.headers['access-control-allow-origin']).toBe(ORIGIN);
    const consume = await postJson(guarded.url, '/v1/consume', { phoneNumber: phone }, { Origin: ORIGIN });
    expect(consume.status).toBe(403);
    expect(consume.json).toMatchObject({ type: 'error', code: 'forbidden' });
    const preflight = await httpRequest(`${guarded.url}/v1/check`, {
      method: 'OPTIONS',
      headers: { Origin: ORIGIN, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    expect(preflight.status).toBeLessThan(300);
    expect(preflight.headers['access-control-allow-origin']).toBe(ORIGIN);
  });

  it('answers a disallowed origin without a token with 401 and no CORS grant', async () => {
    const r = await postJson(guarded.url, '/v1/check', { phoneNumber: freshNumber() }, { Origin: FOREIGN });
    expect(r.status).toBe(401);
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('keeps /health reachable without a token, for load balancers', async () => {
    const r = await httpRequest(`${guarded.url}/health`);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ status: 'ok' });
  });
});
