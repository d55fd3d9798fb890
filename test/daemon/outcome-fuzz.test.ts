// The two outcome routes under hostile input, against the running binary: POST /v1/outcome and
// POST /v1/twilio/status get random JSON, random bytes, bad UTF-8 and percent-escapes, forged and
// missing signatures, huge bodies; WebSocket outcome frames get random fields. Every request is
// answered with a status the contract allows, nothing unsigned is ever accepted, and the daemon
// neither crashes nor logs an unhandled error.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { twilioSignature } from '../../src/core/twilio.js';
import {
  assertBuilt,
  crashSigns,
  createTestDatabase,
  type DaemonProcess,
  health,
  httpRequest,
  postJson,
  type Reply,
  startDaemon,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'outcome-fuzz-token-012345';
const TWILIO_TOKEN = 'twilio-fuzz-auth-token';
const PUBLIC_URL = 'https://rl.example.net';
const ERROR_CODES = ['invalid_json', 'invalid_message', 'unknown_type', 'unauthorized', 'forbidden', 'too_many_requests', 'unknown_decision'];
const RUNS = 120;

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemon: DaemonProcess;
const ids: string[] = [];

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  daemon = await startDaemon({
    databaseUrl: db.url,
    env: {
      RATELIMIT_API_TOKENS: TOKEN,
      TWILIO_AUTH_TOKEN: TWILIO_TOKEN,
      RATELIMIT_PUBLIC_URL: PUBLIC_URL,
      RATE_LIMIT_PHONE_MAX: '1000',
      RATE_LIMIT_IP_MAX: '1000000',
    },
  });
  for (let i = 0; i < 8; i++) {
    const r = await postJson(daemon.url, '/v1/consume', { phoneNumber: `+1415555${String(1000 + i)}` }, { authorization: `Bearer ${TOKEN}` });
    ids.push((r.json as Reply).decisionId as string);
  }
});

afterAll(async () => {
  await stopAll([daemon]);
  await db?.drop();
});

/** A decision id: a real one, one altered, or junk. */
const decisionId = () =>
  fc.oneof(
    fc.constantFrom(...ids),
    fc
      .tuple(fc.constantFrom(...ids), fc.nat({ max: 99 }), fc.constantFrom('A', 'z', '-', '+', '=', '\u00e9'))
      .map(([id, i, c]) => id.slice(0, i) + c + id.slice(i + 1)),
    fc.string({ maxLength: 300 }),
    fc.anything(),
  );
const outcome = () => fc.oneof(fc.constantFrom('verified', 'answered', 'unanswered', 'failed'), fc.string({ maxLength: 20 }), fc.anything());
const durationMs = () => fc.oneof(fc.integer({ min: -10, max: 10 ** 10 }), fc.double(), fc.string({ maxLength: 10 }), fc.constant(undefined));

function expectAnswer(status: number, json: unknown): void {
  const body = json as Reply;
  if (status === 200) {
    expect(body.type).toBe('rate_limit_outcome_recorded');
    expect(ids).toContain(body.decisionId);
    return;
  }
  expect([400, 401, 403, 404, 413]).toContain(status);
  expect(body.type).toBe('error');
  expect(ERROR_CODES).toContain(body.code);
  if (status === 404) expect(body.code).toBe('unknown_decision');
}

describe('POST /v1/outcome under hostile input', () => {
  it('answers random JSON bodies with a status the contract allows', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ decisionId: decisionId(), outcome: outcome(), durationMs: durationMs() }, { requiredKeys: [] }),
          fc.record({ type: fc.string({ maxLength: 30 }), decisionId: decisionId(), outcome: outcome() }),
          fc.jsonValue(),
        ),
        async (body) => {
          const r = await postJson(daemon.url, '/v1/outcome', body, { authorization: `Bearer ${TOKEN}` });
          expectAnswer(r.status, r.json);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('answers random bytes, bad UTF-8 and huge bodies without falling over', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }),
          fc.constantFrom(Buffer.from([0xff, 0xfe, 0x7b]), Buffer.from('{"decisionId":"\xc3\x28","outcome":"failed"}', 'latin1')),
        ),
        async (bytes) => {
          const r = await httpRequest(`${daemon.url}/v1/outcome`, {
            method: 'POST',
            headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
            body: Buffer.from(bytes),
          });
          expectAnswer(r.status, r.json);
        },
      ),
      { numRuns: RUNS },
    );
    const huge = await httpRequest(`${daemon.url}/v1/outcome`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: 'x'.repeat(1 << 20) });
    expect(huge.status).toBe(413);
    const unauthenticated = await postJson(daemon.url, '/v1/outcome', { decisionId: ids[0], outcome: 'failed' });
    expect(unauthenticated.status).toBe(401);
  });

  it('answers random WebSocket outcome frames on a socket that stays open', async () => {
    const ws = await WsClient.connect(daemon.wsUrl, { headers: { authorization: `Bearer ${TOKEN}` } });
    try {
      await fc.assert(
        fc.asyncProperty(fc.record({ decisionId: decisionId(), outcome: outcome(), durationMs: durationMs() }, { requiredKeys: [] }), async (fields) => {
          const reply = await ws.call({ type: 'rate_limit_outcome', id: 1, ...fields });
          if (reply.type === 'error') expect(ERROR_CODES).toContain(reply.code);
          else expect(reply).toMatchObject({ type: 'rate_limit_outcome_recorded', id: 1 });
        }),
        { numRuns: RUNS },
      );
    } finally {
      await ws.close();
    }
  });
});

describe('POST /v1/twilio/status under hostile input', () => {
  const STATUSES = ['queued', 'ringing', 'in-progress', 'completed', 'busy', 'no-answer', 'canceled', 'failed', 'delivered', 'undelivered', 'sent'];
  const params = () =>
    fc.array(
      fc.tuple(
        fc.oneof(fc.constantFrom('CallStatus', 'CallDuration', 'MessageStatus', 'ErrorCode', 'AnsweredBy', 'CallSid', 'To'), fc.string({ maxLength: 12 })),
        fc.oneof(fc.constantFrom(...STATUSES), fc.integer({ min: -5, max: 100_000 }).map(String), fc.string({ maxLength: 40 })),
      ),
      { maxLength: 8 },
    );
  const query = () =>
    fc.oneof(
      fc.constantFrom(...ids).map((id) => `?decisionId=${id}`),
      fc.string({ maxLength: 60 }).map((s) => `?decisionId=${encodeURIComponent(s)}`),
      fc.constant(''),
      fc.constant('?decisionId=%zz%c3%28'),
    );

  it('never accepts what is not signed, and answers what is with 200, 400 or 404', async () => {
    await fc.assert(
      fc.asyncProperty(query(), params(), fc.boolean(), fc.option(fc.string({ maxLength: 80 })), async (q, pairs, sign, forged) => {
        const target = `/v1/twilio/status${q}`;
        const body = new URLSearchParams(pairs).toString();
        // Signed as it goes on the wire: node's http.request escapes some characters (`'`) of the query.
        const wire = new URL(target, 'http://localhost');
        const signature = sign ? twilioSignature(TWILIO_TOKEN, `${PUBLIC_URL}${wire.pathname}${wire.search}`, [...new URLSearchParams(body)]) : forged;
        const r = await httpRequest(`${daemon.url}${target}`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...(signature !== null ? { 'x-twilio-signature': signature } : {}) },
          body,
        });
        if (!sign) {
          // A malformed target (`%zz`) is refused before any route, as every route's is (transport/target.ts).
          expect(r.status).toBe(q.includes('%zz') ? 400 : 403);
          return;
        }
        expect([200, 400, 404]).toContain(r.status);
        if (r.status === 200)
          expect((r.json as Reply).type === 'rate_limit_outcome_recorded' || typeof (r.json as { ignored?: unknown }).ignored === 'string').toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('answers random bytes, bad encodings, odd content types and huge bodies', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
          fc.constant(Buffer.from('CallStatus=%E0%A4%A&CallDuration=%ff%fe', 'latin1')),
          fc.constant(Buffer.from([0xc3, 0x28, 0x3d, 0x26])),
        ),
        fc.constantFrom('application/x-www-form-urlencoded', 'application/json', 'text/plain', 'application/x-www-form-urlencoded; charset=utf-8'),
        fc.option(fc.string({ maxLength: 40 })),
        async (body, type, signature) => {
          const r = await httpRequest(`${daemon.url}/v1/twilio/status?decisionId=${ids[0]}`, {
            method: 'POST',
            headers: { 'content-type': type, ...(signature !== null ? { 'x-twilio-signature': signature } : {}) },
            body,
          });
          expect([400, 403]).toContain(r.status);
          expect((r.json as Reply).type).toBe('error');
        },
      ),
      { numRuns: RUNS },
    );
    const huge = await httpRequest(`${daemon.url}/v1/twilio/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'a='.padEnd(1 << 20, 'x'),
    });
    expect(huge.status).toBe(413);
  });

  it('leaves the daemon healthy, without unhandled errors', async () => {
    expect((await health(daemon.url)).body).toMatchObject({ status: 'ok' });
    expect(crashSigns(daemon)).toEqual([]);
  });
});
