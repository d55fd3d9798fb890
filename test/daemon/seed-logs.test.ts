// GET /logs, the route the phone-screen seed's browser hook opens (src/daemon/transport/seed-logs.ts,
// docs/phone-screen.md), against the real binary: the same upgrade rules as /ws, check only, the
// number echoed exactly as sent, `reason` a sentence, whole minutes, a resetTime that never
// promises an end to a block without one; and /ws unchanged beside it. Fuzzed: every frame gets
// one answer, nothing from /logs ever spends quota, the daemon stays up.

import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NEVER_RESETS_MS, reasonSentence, seedReply, waitWords } from '../../src/daemon/transport/seed-logs.js';
import type { StatusReply } from '../../src/protocol/wire.js';
import {
  assertBuilt,
  closeAll,
  crashSigns,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  health,
  postJson,
  refusedUpgradeStatus,
  type Reply,
  startDaemon,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'seed-logs-test-service-token';
const ORIGIN = 'https://phone-screen.example';
const MINUTE_MS = 60_000;
// A UK premium-rate number (09xx): denied by the default policy's destination controls.
const PREMIUM_RATE = '+44 909 879 0000';

describe('the words /logs puts in reason', () => {
  it('says how long to wait in whole minutes, rounded up', () => {
    expect(waitWords(1)).toBe('1 minute');
    expect(waitWords(42 * MINUTE_MS)).toBe('42 minutes');
    expect(waitWords(42 * MINUTE_MS + 1)).toBe('43 minutes');
    expect(waitWords(60 * MINUTE_MS)).toBe('1 hour');
    expect(waitWords(125 * MINUTE_MS)).toBe('2 hours 5 minutes');
    expect(waitWords(3 * 24 * 60 * MINUTE_MS)).toBe('3 days');
  });

  it('gives every reason a sentence, and says when it does not expire', () => {
    expect(reasonSentence('phone_rate_limit_exceeded', 'number:1h', 42 * MINUTE_MS)).toBe('This number has reached its call limit; try again in 42 minutes');
    expect(reasonSentence('destination_blocked', 'destination:premium_rate', null)).toBe('Calls to premium-rate numbers are not allowed; this does not expire');
    expect(reasonSentence('destination_blocked', 'destination:country', null)).toBe('Calls to this country are not allowed; this does not expire');
    expect(reasonSentence('number_blocked', 'list:block', 5 * MINUTE_MS)).toBe('This number is blocked from receiving calls; try again in 5 minutes');
    // A reason this daemon does not know yet (a newer rule) still reads as a sentence.
    expect(reasonSentence('some_future_reason', 'x:1h', MINUTE_MS)).toBe('Calls to this number are not allowed right now; try again in 1 minute');
  });
});

describe('the /logs reply built from a decision', () => {
  const now = 1_764_072_000_000;
  const status = (over: Partial<StatusReply>): StatusReply => ({
    type: 'rate_limit_status',
    phoneNumber: '+14155552671',
    allowed: true,
    limit: 2,
    used: 0,
    remaining: 2,
    resetTime: now,
    retryAfterMs: 0,
    region: 'US',
    source: 'database',
    ...over,
  });

  it('rounds every time up to the minute, even when the decision path did not', () => {
    const r = seedReply(
      status({
        allowed: false,
        used: 2,
        remaining: 0,
        resetTime: now + 42 * MINUTE_MS + 1,
        retryAfterMs: 42 * MINUTE_MS + 1,
        reason: 'phone_rate_limit_exceeded',
        rule: 'number:1h',
      }),
      '+1 415 555 2671',
    );
    expect(r).toMatchObject({
      phoneNumber: '+1 415 555 2671',
      resetTime: now + 43 * MINUTE_MS,
      retryAfterMs: 43 * MINUTE_MS,
      reason: 'This number has reached its call limit; try again in 43 minutes',
    });
  });

  it('shows no call left when an aggregate rule denies while the number has room', () => {
    const r = seedReply(
      status({
        allowed: false,
        used: 1,
        remaining: 1,
        resetTime: now + 5 * MINUTE_MS,
        retryAfterMs: 5 * MINUTE_MS,
        reason: 'country_rate_limit_exceeded',
        rule: 'country:1h',
      }),
      'x',
    );
    expect(r).toMatchObject({
      allowed: false,
      remaining: 0,
      reasonCode: 'country_rate_limit_exceeded',
      reason: 'Too many calls to this country right now; try again in 5 minutes',
    });
  });

  it('gives a block with an end its end, and one without the last date', () => {
    expect(
      seedReply(
        status({
          allowed: false,
          limit: 0,
          remaining: 0,
          resetTime: now + 5 * MINUTE_MS,
          retryAfterMs: 5 * MINUTE_MS,
          reason: 'number_blocked',
          rule: 'list:block',
        }),
        'x',
      ),
    ).toMatchObject({ resetTime: now + 5 * MINUTE_MS, reason: 'This number is blocked from receiving calls; try again in 5 minutes' });
    expect(
      seedReply(status({ allowed: false, limit: 0, remaining: 0, resetTime: null, retryAfterMs: null, reason: 'number_blocked', rule: 'list:block' }), 'x'),
    ).toMatchObject({ resetTime: NEVER_RESETS_MS, reason: 'This number is blocked from receiving calls; this does not expire' });
  });

  it('passes errors that are no verdict through as errors, with the number as sent', () => {
    expect(seedReply({ type: 'error', code: 'internal_error', message: 'retry' }, '+1 415')).toEqual({
      type: 'error',
      code: 'internal_error',
      message: 'retry',
      phoneNumber: '+1 415',
    });
  });
});

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemon: DaemonProcess;
const clients = new Set<WsClient>();
let logsUrl: string;

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  daemon = await startDaemon({
    databaseUrl: db.url,
    env: {
      ALLOWED_ORIGINS: ORIGIN,
      RATELIMIT_API_TOKENS: TOKEN,
      RATE_LIMIT_PHONE_MAX: '2',
      RATE_LIMIT_PHONE_WINDOW: '1h',
      // The fuzz sends fast; throttling is not what this file is about.
      RATELIMIT_MESSAGES_PER_SECOND: '1000000',
    },
  });
  logsUrl = daemon.wsUrl.replace(/\/ws$/, '/logs');
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
});

afterAll(async () => {
  await stopAll([daemon]);
  await db?.drop();
});

async function page(url = logsUrl): Promise<WsClient> {
  const c = await WsClient.connect(url, { origin: ORIGIN });
  clients.add(c);
  return c;
}

const asService = { Authorization: `Bearer ${TOKEN}` };

async function serviceConsume(number: string): Promise<number> {
  return (await postJson(daemon.url, '/v1/consume', { phoneNumber: number }, asService)).status;
}

async function usedBy(number: string): Promise<number> {
  const r = await postJson(daemon.url, '/v1/check', { phoneNumber: number }, asService);
  return (r.json as { used: number }).used;
}

/** What the seed's hook sends: no id, one check at a time. */
async function seedCheck(c: WsClient, phoneNumber: string): Promise<Reply> {
  c.sendJson({ type: 'rate_limit_check', phoneNumber });
  return c.next();
}

describe('GET /logs', () => {
  it('is upgraded under the same rules as /ws: a listed origin or a token, nothing else', async () => {
    expect(await refusedUpgradeStatus(logsUrl)).toBe(401);
    expect(await refusedUpgradeStatus(logsUrl, { origin: 'https://elsewhere.example' })).toBe(401);
    expect(await refusedUpgradeStatus(logsUrl, { headers: { Authorization: 'Bearer not-the-token-at-all' } })).toBe(401);
    const withToken = await WsClient.connect(logsUrl, { headers: asService });
    clients.add(withToken);
    expect(withToken.isOpen).toBe(true);
    expect((await page()).isOpen).toBe(true);
  });

  it('echoes the number exactly as the page wrote it, and follows its counts as a service spends them', async () => {
    const e164 = freshNumber();
    const written = `${e164.slice(0, 2)} ${e164.slice(2, 5)}-${e164.slice(5, 8)}-${e164.slice(8)}`;
    const c = await page();

    const fresh = await seedCheck(c, written);
    expect(fresh).toMatchObject({ type: 'rate_limit_status', phoneNumber: written, allowed: true, remaining: 2, used: 0, limit: 2 });
    expect(fresh.reason).toBeUndefined();

    expect(await serviceConsume(e164)).toBe(200);
    expect(await seedCheck(c, written)).toMatchObject({ phoneNumber: written, allowed: true, remaining: 1, used: 1 });

    expect(await serviceConsume(written)).toBe(200);
    const limited = await seedCheck(c, written);
    expect(limited).toMatchObject({
      type: 'rate_limit_status',
      phoneNumber: written,
      allowed: false,
      remaining: 0,
      reasonCode: 'phone_rate_limit_exceeded',
      rule: 'number:1h',
    });
    // Browser precision: whole minutes in every time, and the sentence says the same wait.
    expect((limited.resetTime as number) % MINUTE_MS).toBe(0);
    expect((limited.retryAfterMs as number) % MINUTE_MS).toBe(0);
    expect(limited.reason).toMatch(/^This number has reached its call limit; try again in (1 hour|[1-5]?\d minutes?)$/);
    expect(limited.resetTime as number).toBeGreaterThan(Date.now());
    expect(limited.resetTime as number).toBeLessThanOrEqual(Date.now() + 61 * MINUTE_MS);

    // /ws beside it is unchanged: the E.164 form and the reason code.
    const ws = await page(daemon.wsUrl);
    expect(await ws.call({ type: 'rate_limit_check', phoneNumber: written })).toMatchObject({
      phoneNumber: e164,
      allowed: false,
      reason: 'phone_rate_limit_exceeded',
    });
  });

  it('never resets a premium-rate number "in an hour": resetTime is the last date JavaScript knows', async () => {
    const c = await page();
    expect(await seedCheck(c, PREMIUM_RATE)).toMatchObject({
      phoneNumber: PREMIUM_RATE,
      allowed: false,
      remaining: 0,
      resetTime: NEVER_RESETS_MS,
      retryAfterMs: null,
      reasonCode: 'destination_blocked',
      rule: 'destination:premium_rate',
      reason: 'Calls to premium-rate numbers are not allowed; this does not expire',
    });
    expect(new Date(NEVER_RESETS_MS).getTime()).toBe(NEVER_RESETS_MS);
  });

  it('answers what is not a phone number with a denial the page can show, not a silent error', async () => {
    const c = await page();
    const r = await seedCheck(c, '12');
    expect(r).toMatchObject({ type: 'rate_limit_status', phoneNumber: '12', allowed: false, reasonCode: 'invalid_phone_number', resetTime: NEVER_RESETS_MS });
    expect(r.reason).toMatch(/^This is not a phone number that can be called: /);
  });

  it('only checks: a consume is forbidden, even with a token, and spends nothing', async () => {
    const number = freshNumber();
    const c = await page();
    c.sendJson({ type: 'rate_limit_consume', phoneNumber: number });
    expect(await c.next()).toMatchObject({ type: 'error', code: 'forbidden' });
    const withToken = await WsClient.connect(logsUrl, { headers: asService });
    clients.add(withToken);
    expect(await withToken.call({ type: 'rate_limit_consume', phoneNumber: number })).toMatchObject({ type: 'error', code: 'forbidden' });
    expect(await usedBy(number)).toBe(0);
  });

  it('fuzz: every frame gets one answer in order, a check echoes its number, nothing spends quota', async () => {
    const numbers = Array.from({ length: 8 }, () => freshNumber());
    const spelled = fc.oneof(
      fc.constantFrom(...numbers),
      fc.constantFrom(...numbers).map((n) => ` ${n.slice(0, 2)} (${n.slice(2, 5)}) ${n.slice(5, 8)}.${n.slice(8)} `),
      fc.constant(PREMIUM_RATE),
      fc.string({ maxLength: 40 }),
      fc.string({ unit: 'grapheme', maxLength: 20 }),
    );
    const frame = fc.oneof(
      fc.record({ type: fc.constantFrom('rate_limit_check', 'rate_limit_consume', 'session.update', ''), phoneNumber: spelled }, { requiredKeys: ['type'] }),
      fc.record(
        {
          type: fc.constantFrom('rate_limit_check', 'rate_limit_consume'),
          phoneNumber: fc.oneof(spelled, fc.integer(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 })),
          id: fc.oneof(fc.integer(), fc.string({ maxLength: 10 }), fc.constant(null), fc.string({ minLength: 129, maxLength: 140 })),
          ip: fc.oneof(fc.constant('203.0.113.9'), fc.string({ maxLength: 10 })),
        },
        { requiredKeys: ['type'] },
      ),
      fc.jsonValue({ maxDepth: 2 }),
    );
    const c = await page();
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            frame.map((f) => JSON.stringify(f) ?? 'null'),
            fc.string({ maxLength: 30 }),
          ),
          { minLength: 1, maxLength: 12 },
        ),
        async (texts) => {
          for (const t of texts) c.send(t);
          for (const t of texts) {
            const r = await c.next();
            let sent: unknown;
            try {
              sent = JSON.parse(t);
            } catch {
              expect(r).toMatchObject({ type: 'error', code: 'invalid_json' });
              continue;
            }
            const obj = typeof sent === 'object' && sent !== null && !Array.isArray(sent) ? (sent as Record<string, unknown>) : undefined;
            if (r.type === 'rate_limit_status') {
              expect(obj?.type).toBe('rate_limit_check');
              expect(r.phoneNumber).toBe(obj?.phoneNumber);
              expect((r.resetTime as number) % MINUTE_MS).toBe(0);
              if (r.allowed === false) expect(r.reason).toMatch(/^[A-Z].* /);
              else expect(r.reason).toBeUndefined();
            } else {
              expect(r.type).toBe('error');
              expect(['invalid_json', 'invalid_message', 'unknown_type', 'forbidden']).toContain(r.code);
              // A well-formed check is always answered with a status the page can show.
              if (obj?.type === 'rate_limit_check' && typeof obj.phoneNumber === 'string' && !('id' in obj) && !('ip' in obj))
                expect.unreachable(JSON.stringify(r));
              if (obj?.type === 'rate_limit_consume' && r.code !== 'forbidden') expect(r.code).toBe('invalid_message');
            }
          }
        },
      ),
      { numRuns: 60 },
    );
    expect(c.isOpen).toBe(true);
    for (const n of numbers) expect(await usedBy(n)).toBe(0);
    expect((await health(daemon.url)).status).toBe(200);
    expect(crashSigns(daemon)).toEqual([]);
  });
});
