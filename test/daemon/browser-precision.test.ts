// Browsers get minutes, services get milliseconds (docs/protocol.md, *WebSocket*): one number,
// asked about by a token-holding service and by a page admitted by its Origin, through the
// binary, over WebSocket and HTTP. A browser sees the number's own counts with times rounded up
// to the whole minute; for a denial by a rule over many numbers (here a prefix rule) only
// allowed, reason, rule and a rounded retry.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { migrate } from '../../src/db/migrate.js';
import { applyPolicy } from '../../src/db/policies.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  httpRequest,
  postJson,
  type Reply,
  startDaemon,
  stopAll,
  waitFor,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'browser-precision-service-token';
const ORIGIN = 'https://app.example.com';
const MINUTE_MS = 60_000;
const ENV = { RATELIMIT_API_TOKENS: TOKEN, ALLOWED_ORIGINS: ORIGIN, RATE_LIMIT_IP_MAX: '1000000', RATELIMIT_MESSAGES_PER_SECOND: '1000000' };

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let pool: Pool;
let daemon: DaemonProcess | undefined;
let service: WsClient;
let browser: WsClient;

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 2 });
  await migrate(pool);
  daemon = await startDaemon({ databaseUrl: db.url, env: ENV });
  service = await WsClient.connect(daemon.wsUrl, { headers: { Authorization: `Bearer ${TOKEN}` } });
  browser = await WsClient.connect(daemon.wsUrl, { origin: ORIGIN });
});

afterAll(async () => {
  await closeAll([service, browser].filter(Boolean));
  await stopAll([daemon]);
  await pool?.end();
  await db?.drop();
});

async function apply(yaml: string): Promise<void> {
  const parsed = parsePolicyFile(yaml);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  const { version } = (await applyPolicy(pool, { yaml, by: 'browser precision test', reason: null })).applied;
  await waitFor(
    `policy version ${version}`,
    async () => (new RegExp(`^ratelimit_policy_version ${version}$`, 'm').test((await httpRequest(`${daemon!.url}/metrics`)).text) ? true : undefined),
    10_000,
    50,
  );
}

const check = (c: WsClient, phoneNumber: string) => c.call({ type: 'rate_limit_check', phoneNumber });
const consume = (phoneNumber: string) => service.call({ type: 'rate_limit_consume', phoneNumber });
const ceilMinute = (ms: number) => Math.ceil(ms / MINUTE_MS) * MINUTE_MS;

function expectMinutes(r: Reply): void {
  if (typeof r.resetTime === 'number') expect(r.resetTime % MINUTE_MS).toBe(0);
  if (typeof r.retryAfterMs === 'number') expect(r.retryAfterMs % MINUTE_MS).toBe(0);
}

describe('one number, asked by a service and by a browser', () => {
  it('gives the service exact times and the browser the same counts with times rounded up to the minute', async () => {
    await apply('number:\n  limits: [{limit: 2, window: 1h}]\nprefix:\n  digits: 3\n  limits: [{limit: 100, window: 1h}]\n');
    const phone = '+14155550101';
    // A call at a time that is not a whole minute (the odds of landing on one are 1 in 60,000).
    expect(await consume(phone)).toMatchObject({ type: 'rate_limit_status', allowed: true });

    const exact = await check(service, phone);
    const coarse = await check(browser, phone);
    expect(exact).toMatchObject({ allowed: true, limit: 2, used: 1, remaining: 1, retryAfterMs: 0, source: 'database' });
    expect(coarse).toMatchObject({ allowed: true, limit: 2, used: 1, remaining: 1, retryAfterMs: 0, source: 'database' });
    expect(coarse.resetTime).toBe(ceilMinute(exact.resetTime as number));

    // Over its own limit: the denial is the number's, so the browser sees its counts, rounded.
    expect(await consume(phone)).toMatchObject({ allowed: true });
    const deniedExact = await check(service, phone);
    const deniedCoarse = await check(browser, phone);
    expect(deniedExact).toMatchObject({ allowed: false, reason: 'phone_rate_limit_exceeded', rule: 'number:1h', limit: 2, used: 2, remaining: 0 });
    expect(deniedCoarse).toMatchObject({ allowed: false, reason: 'phone_rate_limit_exceeded', rule: 'number:1h', limit: 2, used: 2, remaining: 0 });
    expectMinutes(deniedCoarse);
    expect(deniedCoarse.resetTime).toBe(ceilMinute(deniedExact.resetTime as number));
    // Rounded up, never down: retrying when told never meets a denial for this reason.
    expect(deniedCoarse.retryAfterMs as number).toBeGreaterThanOrEqual(deniedExact.retryAfterMs as number);
    expect(deniedCoarse.retryAfterMs as number).toBeLessThan((deniedExact.retryAfterMs as number) + 2 * MINUTE_MS);

    // Over HTTP the same.
    const http = await postJson(daemon!.url, '/v1/check', { phoneNumber: phone }, { Origin: ORIGIN });
    expect(http.status).toBe(200);
    expect(http.json).toMatchObject({ allowed: false, used: 2, resetTime: deniedCoarse.resetTime });
    expectMinutes(http.json as Reply);
    const httpExact = await postJson(daemon!.url, '/v1/check', { phoneNumber: phone }, { Authorization: `Bearer ${TOKEN}` });
    expect((httpExact.json as Reply).resetTime).toBe(deniedExact.resetTime);
  });

  it('tells a browser of a range denial only whether, why, by which rule and when to retry, in minutes', async () => {
    await apply('number:\n  limits: [{limit: 5, window: 1h}]\nprefix:\n  digits: 3\n  limits: [{limit: 2, window: 1h}]\n');
    // Two other numbers of the victim's range use up the range.
    expect(await consume('+14155559901')).toMatchObject({ allowed: true });
    expect(await consume('+14155559902')).toMatchObject({ allowed: true });
    const victim = '+14155559903';

    const exact = await check(service, victim);
    const coarseWs = await check(browser, victim);
    const coarseHttp = (await postJson(daemon!.url, '/v1/check', { phoneNumber: victim }, { Origin: ORIGIN })).json as Reply;
    const later = await check(service, victim);
    expect(exact).toMatchObject({ allowed: false, reason: 'prefix_rate_limit_exceeded', rule: 'prefix:1h', limit: 2, used: 2, remaining: 0 });
    expect(typeof exact.resetTime).toBe('number');

    for (const coarse of [coarseWs, coarseHttp]) {
      expect(coarse).toMatchObject({ allowed: false, reason: 'prefix_rate_limit_exceeded', rule: 'prefix:1h' });
      for (const field of ['limit', 'used', 'remaining', 'resetTime', 'shadow']) expect(coarse).not.toHaveProperty(field);
      // The exact retry shrinks between the asks: the browser's is the one of either, rounded up.
      expect([ceilMinute(exact.retryAfterMs as number), ceilMinute(later.retryAfterMs as number)]).toContain(coarse.retryAfterMs);
      expectMinutes(coarse);
    }
    expect(later).toMatchObject({ limit: 2, used: 2, resetTime: exact.resetTime });
  });
});
