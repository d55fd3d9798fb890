// Longer than 350 lines because the outcome routes, the Twilio adapter and their roles share one daemon and its ids.
// Outcomes (docs/protocol.md *Outcomes*) through the binary: decisionId on allowed consumes only,
// reporting over WebSocket and POST /v1/outcome (idempotent, a conflicting second outcome
// refused, unknown and expired ids), who may report, the Twilio adapter (signature, mapping), the
// metric, and `ratelimit status` showing a number's outcomes.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DECISION_ID_HORIZON_MS, DecisionIds, rangeLabel } from '../../src/core/decision-id.js';
import { hashPhone } from '../../src/core/phone.js';
import { twilioSignature } from '../../src/core/twilio.js';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  httpRequest,
  postJson,
  type Reply,
  runCli,
  startDaemon,
  startDaemons,
  stopAll,
  TEST_KEY,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'outcomes-test-token-0123';
const TWILIO_TOKEN = '12345';
const PUBLIC_URL = 'https://ratelimit.example.com';
const ORIGIN = 'https://app.example.com';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let pool: pg.Pool | undefined;
/** Tokens, Twilio and a browser origin configured. */
let service: DaemonProcess;
/** Anonymous, no Twilio token. */
let open: DaemonProcess;
const clients = new Set<WsClient>();
const auth = { authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  pool = new pg.Pool({ connectionString: db.url, max: 2 });
  const common = { RATE_LIMIT_PHONE_MAX: '1', RATE_LIMIT_IP_MAX: '1000000', RATELIMIT_MESSAGES_PER_SECOND: '1000000' };
  [service, open] = await startDaemons([
    {
      databaseUrl: db.url,
      env: { ...common, RATELIMIT_API_TOKENS: TOKEN, TWILIO_AUTH_TOKEN: TWILIO_TOKEN, RATELIMIT_PUBLIC_URL: PUBLIC_URL, ALLOWED_ORIGINS: ORIGIN },
    },
    { databaseUrl: db.url, env: common },
  ]);
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
});

afterAll(async () => {
  await stopAll([service, open]);
  await pool?.end();
  await db?.drop();
});

async function connect(d: DaemonProcess, headers?: Record<string, string>): Promise<WsClient> {
  const c = await WsClient.connect(d.wsUrl, headers ? { headers } : {});
  clients.add(c);
  return c;
}

let numberSeq = 0;
// Four countries under +1, by area code.
const REGIONS: Record<string, string> = { '415': 'US', '604': 'CA', '787': 'PR', '876': 'JM' };
const AREA_CODES = Object.keys(REGIONS);
/**
 * A number not used before, each in a 1,000-number range of its own and the countries taken in
 * turn: once outcomes are reported the default policy's conversion rules engage, and this file's
 * mostly unconverted calls would otherwise use up a range's unconverted budget (5 an hour) and a
 * country's baseline (20 a day). This file is about the outcome protocol, not those budgets
 * (test/daemon/outcome-takeback.test.ts is).
 */
function freshNumber(): string {
  const n = ++numberSeq;
  return `+1${AREA_CODES[n % AREA_CODES.length]}${200 + (Math.floor(n / 10) % 800)}${n % 10}000`;
}

/** An allowed consume's decisionId, over HTTP. */
async function decide(d: DaemonProcess = service, phoneNumber = freshNumber()): Promise<{ decisionId: string; phoneNumber: string }> {
  const r = await postJson(d.url, '/v1/consume', { phoneNumber }, d === service ? auth : {});
  expect(r.status).toBe(200);
  const decisionId = (r.json as Reply).decisionId;
  expect(typeof decisionId).toBe('string');
  return { decisionId: decisionId as string, phoneNumber };
}

async function rows(decisionId: string) {
  const r = await pool!.query<{ outcome: string; duration_ms: number | null; source: string; region: string | null; range_label: string; phone_hash: string }>(
    'SELECT outcome, duration_ms, source, region, range_label, phone_hash FROM rate_limit_outcomes WHERE decision_id = $1',
    [decisionId],
  );
  return r.rows;
}

async function metric(d: DaemonProcess, outcome: string, source: string): Promise<number> {
  const text = (await httpRequest(`${d.url}/metrics`)).text;
  const m = new RegExp(`^ratelimit_outcomes_total\\{outcome="${outcome}",source="${source}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

describe('decisionId', () => {
  it('is on allowed consumes only (WebSocket and HTTP), never on checks or denials', async () => {
    const ws = await connect(service, auth);
    const phoneNumber = freshNumber();
    const check = await ws.call({ type: 'rate_limit_check', id: 1, phoneNumber });
    expect(check.decisionId).toBeUndefined();
    const allowed = await ws.call({ type: 'rate_limit_consume', id: 2, phoneNumber });
    expect(allowed).toMatchObject({ type: 'rate_limit_status', allowed: true });
    expect(allowed.decisionId).toMatch(/^[A-Za-z0-9_-]{100}$/);
    const denied = await ws.call({ type: 'rate_limit_consume', id: 3, phoneNumber });
    expect(denied).toMatchObject({ type: 'rate_limit_exceeded' });
    expect(denied.decisionId).toBeUndefined();
    const viaHttp = await postJson(service.url, '/v1/consume', { phoneNumber: freshNumber() }, auth);
    expect((viaHttp.json as Reply).decisionId).toMatch(/^[A-Za-z0-9_-]{100}$/);
    // Opaque: nothing of the number in it.
    expect(allowed.decisionId).not.toContain(phoneNumber.slice(1, 8));
  });
});

describe('reporting outcomes', () => {
  it('over WebSocket: recorded once, a repeat is a duplicate, a different one refused', async () => {
    const ws = await connect(service, auth);
    const { decisionId, phoneNumber } = await decide();
    const before = await metric(service, 'answered', 'ws');
    const first = await ws.call({ type: 'rate_limit_outcome', id: 'a', decisionId, outcome: 'answered', durationMs: 42_000 });
    expect(first).toEqual({ type: 'rate_limit_outcome_recorded', id: 'a', decisionId, duplicate: false });
    const again = await ws.call({ type: 'rate_limit_outcome', id: 'b', decisionId, outcome: 'answered', durationMs: 42_000 });
    expect(again).toEqual({ type: 'rate_limit_outcome_recorded', id: 'b', decisionId, duplicate: true });
    const other = await ws.call({ type: 'rate_limit_outcome', id: 'c', decisionId, outcome: 'unanswered' });
    expect(other).toMatchObject({ type: 'error', id: 'c', code: 'invalid_message' });
    expect(other.message).toMatch(/already has the outcome "answered"/);
    expect(await rows(decisionId)).toEqual([
      {
        outcome: 'answered',
        duration_ms: 42_000,
        source: 'ws',
        region: REGIONS[phoneNumber.slice(2, 5)],
        range_label: rangeLabel(phoneNumber),
        phone_hash: hashPhone(phoneNumber, TEST_KEY),
      },
    ]);
    expect((await metric(service, 'answered', 'ws')) - before).toBe(1);
  });

  it('over HTTP: 200 recorded or duplicate, 400 conflicting or bad input, 404 unknown_decision', async () => {
    const { decisionId } = await decide();
    const post = (body: unknown, headers: Record<string, string> = auth) => postJson(service.url, '/v1/outcome', body, headers);
    const first = await post({ decisionId, outcome: 'verified' });
    expect(first.status).toBe(200);
    expect(first.json).toEqual({ type: 'rate_limit_outcome_recorded', decisionId, duplicate: false });
    const again = await post({ decisionId, outcome: 'verified' });
    expect([again.status, (again.json as Reply).duplicate]).toEqual([200, true]);
    const conflict = await post({ decisionId, outcome: 'failed' });
    expect([conflict.status, (conflict.json as Reply).code]).toEqual([400, 'invalid_message']);
    expect(await rows(decisionId)).toHaveLength(1);

    const { decisionId: other } = await decide();
    const noDuration = await post({ decisionId: other, outcome: 'answered' });
    expect([noDuration.status, (noDuration.json as Reply).code]).toEqual([400, 'invalid_message']);
    expect((noDuration.json as Reply).message).toMatch(/durationMs/);
    for (const bad of [
      { decisionId: other, outcome: 'converted' },
      { decisionId: other, outcome: 'answered', durationMs: -1 },
      { decisionId: other, outcome: 'answered', durationMs: 1.5 },
      { outcome: 'failed' },
      { decisionId: 7, outcome: 'failed' },
    ]) {
      const r = await post(bad);
      expect([r.status, (r.json as Reply).code]).toEqual([400, 'invalid_message']);
    }
    const wrongType = await post({ type: 'rate_limit_consume', decisionId: other, outcome: 'failed' });
    expect(wrongType.status).toBe(400);
    expect(await rows(other)).toEqual([]);
  });

  it('refuses unknown, tampered, foreign-key and expired ids with unknown_decision', async () => {
    const { decisionId, phoneNumber } = await decide();
    const post = (id: string) => postJson(service.url, '/v1/outcome', { decisionId: id, outcome: 'failed' }, auth);
    const tampered = decisionId.slice(0, 50) + (decisionId[50] === 'A' ? 'B' : 'A') + decisionId.slice(51);
    const facts = { hash: hashPhone(phoneNumber, TEST_KEY), region: 'US', range: rangeLabel(phoneNumber) };
    const foreign = new DecisionIds('some-other-key-0123456789abcdef0123456789').encode({ ...facts, atMs: Date.now() });
    const expired = new DecisionIds(TEST_KEY).encode({ ...facts, atMs: Date.now() - DECISION_ID_HORIZON_MS - 60_000 });
    for (const id of ['nope', tampered, foreign, expired]) {
      const r = await post(id);
      expect([r.status, (r.json as Reply).code]).toEqual([404, 'unknown_decision']);
    }
    expect(((await post(expired)).json as Reply).message).toMatch(/expired/);
    const ws = await connect(service, auth);
    expect(await ws.call({ type: 'rate_limit_outcome', id: 9, decisionId: expired, outcome: 'failed' })).toMatchObject({
      type: 'error',
      id: 9,
      code: 'unknown_decision',
    });
    // A fresh id minted with the daemon's key is accepted: the id is self-contained.
    const minted = new DecisionIds(TEST_KEY).encode({ ...facts, atMs: Date.now() - 60_000 });
    expect((await post(minted)).status).toBe(200);
  });

  it('is for services only: 401 without a token, 403 for a browser origin, forbidden on a browser socket', async () => {
    const { decisionId } = await decide();
    const noToken = await postJson(service.url, '/v1/outcome', { decisionId, outcome: 'failed' });
    expect([noToken.status, (noToken.json as Reply).code]).toEqual([401, 'unauthorized']);
    const browser = await postJson(service.url, '/v1/outcome', { decisionId, outcome: 'failed' }, { origin: ORIGIN });
    expect([browser.status, (browser.json as Reply).code]).toEqual([403, 'forbidden']);
    expect(browser.headers['access-control-allow-origin']).toBeUndefined();
    const ws = await connect(service, { origin: ORIGIN });
    expect(await ws.call({ type: 'rate_limit_outcome', id: 1, decisionId, outcome: 'failed' })).toMatchObject({ type: 'error', code: 'forbidden' });
    expect(await rows(decisionId)).toEqual([]);
  });

  it('in anonymous mode: a local tool (no Origin) may report, a web page may not', async () => {
    const { decisionId } = await decide(open);
    const page = await postJson(open.url, '/v1/outcome', { decisionId, outcome: 'failed' }, { origin: 'https://evil.example' });
    expect(page.status).toBe(403);
    const pageWs = await connect(open, { origin: 'https://evil.example' });
    expect(await pageWs.call({ type: 'rate_limit_outcome', id: 1, decisionId, outcome: 'failed' })).toMatchObject({ type: 'error', code: 'forbidden' });
    const tool = await postJson(open.url, '/v1/outcome', { decisionId, outcome: 'failed' });
    expect([tool.status, (tool.json as Reply).duplicate]).toEqual([200, false]);
    const toolWs = await connect(open);
    expect(await toolWs.call({ type: 'rate_limit_outcome', id: 2, decisionId, outcome: 'failed' })).toMatchObject({
      type: 'rate_limit_outcome_recorded',
      duplicate: true,
    });
  });

  it("`ratelimit status` shows the number's outcomes", async () => {
    const { decisionId, phoneNumber } = await decide();
    expect((await postJson(service.url, '/v1/outcome', { decisionId, outcome: 'answered', durationMs: 15_000 }, auth)).status).toBe(200);
    const json = await runCli(['status', phoneNumber, '--json'], { DATABASE_URL: db!.url });
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as { outcomes: Array<Record<string, unknown>> };
    expect(report.outcomes).toEqual([expect.objectContaining({ outcome: 'answered', durationMs: 15_000, source: 'http' })]);
    const text = await runCli(['status', phoneNumber], { DATABASE_URL: db!.url });
    expect(text.stdout).toMatch(/outcomes[\s│]+answered 15s \(http, call /);
    expect(text.stdout).not.toContain(phoneNumber);
  });
});

describe('POST /v1/twilio/status', () => {
  const form = (params: Record<string, string>) => new URLSearchParams(params).toString();
  async function callback(d: DaemonProcess, query: string, params: Record<string, string>, opts: { signature?: string | null; contentType?: string } = {}) {
    const target = `/v1/twilio/status${query}`;
    const signature = opts.signature === undefined ? twilioSignature(TWILIO_TOKEN, `${PUBLIC_URL}${target}`, Object.entries(params)) : opts.signature;
    return httpRequest(`${d.url}${target}`, {
      method: 'POST',
      headers: { 'content-type': opts.contentType ?? 'application/x-www-form-urlencoded', ...(signature !== null ? { 'x-twilio-signature': signature } : {}) },
      body: form(params),
    });
  }

  it('is refused while TWILIO_AUTH_TOKEN is unset', async () => {
    const { decisionId } = await decide(open);
    const r = await callback(open, `?decisionId=${decisionId}`, { CallStatus: 'busy' });
    expect(r.status).toBe(403);
    expect((r.json as Reply).message).toMatch(/TWILIO_AUTH_TOKEN/);
  });

  it('refuses unsigned and wrongly signed callbacks with 403, and records nothing', async () => {
    const { decisionId } = await decide();
    const q = `?decisionId=${decisionId}`;
    const params = { CallSid: 'CA1', CallStatus: 'completed', CallDuration: '30' };
    expect((await callback(service, q, params, { signature: null })).status).toBe(403);
    expect((await callback(service, q, params, { signature: 'RSOYDt4T1cUTdK1PDd93/VVr8B8=' })).status).toBe(403);
    // Signed for another URL (the daemon's own, not the public one), or with another token.
    const local = twilioSignature(TWILIO_TOKEN, `${service.url}/v1/twilio/status${q}`, Object.entries(params));
    expect((await callback(service, q, params, { signature: local })).status).toBe(403);
    expect(
      (await callback(service, q, params, { signature: twilioSignature('54321', `${PUBLIC_URL}/v1/twilio/status${q}`, Object.entries(params)) })).status,
    ).toBe(403);
    // A parameter changed after signing.
    const sig = twilioSignature(TWILIO_TOKEN, `${PUBLIC_URL}/v1/twilio/status${q}`, Object.entries(params));
    expect((await callback(service, q, { ...params, CallDuration: '3000' }, { signature: sig })).status).toBe(403);
    expect(await rows(decisionId)).toEqual([]);
  });

  it('maps voice statuses: intermediate ones ignored, completed -> answered with its duration, no-answer/busy -> unanswered, failed', async () => {
    const { decisionId, phoneNumber } = await decide();
    const q = `?decisionId=${decisionId}`;
    for (const status of ['queued', 'initiated', 'ringing', 'in-progress']) {
      const r = await callback(service, q, { CallSid: 'CA1', CallStatus: status });
      expect([r.status, r.json]).toEqual([200, { ignored: status }]);
    }
    const before = await metric(service, 'answered', 'twilio');
    const done = await callback(service, q, { CallSid: 'CA1', CallStatus: 'completed', CallDuration: '42', To: phoneNumber });
    expect([done.status, done.json]).toEqual([200, { type: 'rate_limit_outcome_recorded', decisionId, duplicate: false }]);
    // Twilio may deliver a callback twice.
    const twice = await callback(service, q, { CallSid: 'CA1', CallStatus: 'completed', CallDuration: '42', To: phoneNumber });
    expect([twice.status, (twice.json as Reply).duplicate]).toEqual([200, true]);
    expect(await rows(decisionId)).toEqual([expect.objectContaining({ outcome: 'answered', duration_ms: 42_000, source: 'twilio' })]);
    expect((await metric(service, 'answered', 'twilio')) - before).toBe(1);

    for (const [params, outcome] of [
      [{ CallStatus: 'no-answer' }, 'unanswered'],
      [{ CallStatus: 'busy' }, 'unanswered'],
      [{ CallStatus: 'canceled' }, 'unanswered'],
      [{ CallStatus: 'completed', CallDuration: '20', AnsweredBy: 'machine_end_beep' }, 'unanswered'],
      [{ CallStatus: 'failed' }, 'failed'],
    ] as const) {
      const { decisionId: id } = await decide();
      const r = await callback(service, `?decisionId=${id}`, { CallSid: 'CA2', ...params });
      expect(r.status).toBe(200);
      expect((await rows(id)).map((x) => x.outcome)).toEqual([outcome]);
    }
  });

  it('maps messaging statuses: undelivered/failed -> failed, delivered and sent are no outcome', async () => {
    for (const [status, outcome] of [
      ['undelivered', 'failed'],
      ['failed', 'failed'],
      ['delivered', null],
      ['sent', null],
      ['queued', null],
    ] as const) {
      const { decisionId } = await decide();
      const r = await callback(service, `?decisionId=${decisionId}`, { MessageSid: 'SM1', MessageStatus: status, ErrorCode: '30003' });
      expect(r.status).toBe(200);
      expect((await rows(decisionId)).map((x) => x.outcome)).toEqual(outcome ? [outcome] : []);
    }
  });

  it('answers bad callbacks with 400 or 404, never records them', async () => {
    const { decisionId } = await decide();
    expect((await callback(service, '', { CallStatus: 'busy' })).status).toBe(400);
    expect((await callback(service, '?decisionId=nope', { CallStatus: 'busy' })).status).toBe(404);
    expect((await callback(service, `?decisionId=${decisionId}`, { CallStatus: 'exploded' })).status).toBe(400);
    expect((await callback(service, `?decisionId=${decisionId}`, { CallStatus: 'completed' })).status).toBe(400);
    expect((await callback(service, `?decisionId=${decisionId}`, { CallStatus: 'busy' }, { contentType: 'application/json' })).status).toBe(400);
    expect((await httpRequest(`${service.url}/v1/twilio/status?decisionId=${decisionId}`)).status).toBe(405);
    expect(await rows(decisionId)).toEqual([]);
  });
});

describe('the URL Twilio signed', () => {
  let direct: DaemonProcess | undefined;
  let behindFly: DaemonProcess | undefined;
  afterAll(async () => stopAll([direct, behindFly]));

  async function signedCallback(d: DaemonProcess, signedBase: string, headers: Record<string, string> = {}) {
    const r = await postJson(d.url, '/v1/consume', { phoneNumber: freshNumber() });
    const target = `/v1/twilio/status?decisionId=${(r.json as Reply).decisionId as string}`;
    const params: Array<[string, string]> = [['CallStatus', 'busy']];
    return httpRequest(`${d.url}${target}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'x-twilio-signature': twilioSignature(TWILIO_TOKEN, `${signedBase}${target}`, params),
        ...headers,
      },
      body: 'CallStatus=busy',
    });
  }

  it('is the request itself without a proxy, and X-Forwarded-Proto is not believed', async () => {
    direct = await startDaemon({ databaseUrl: db!.url, env: { TWILIO_AUTH_TOKEN: TWILIO_TOKEN, RATE_LIMIT_IP_MAX: '1000000' } });
    expect((await signedCallback(direct, direct.url)).status).toBe(200);
    const host = direct.url.replace('http://', '');
    expect((await signedCallback(direct, `https://${host}`, { 'x-forwarded-proto': 'https' })).status).toBe(403);
  });

  it("is the proxy's (X-Forwarded-Proto and Host) with RATELIMIT_TRUST_PROXY=fly", async () => {
    behindFly = await startDaemon({
      databaseUrl: db!.url,
      env: { TWILIO_AUTH_TOKEN: TWILIO_TOKEN, RATELIMIT_TRUST_PROXY: 'fly', RATE_LIMIT_IP_MAX: '1000000' },
    });
    const host = behindFly.url.replace('http://', '');
    expect((await signedCallback(behindFly, `https://${host}`, { 'x-forwarded-proto': 'https', 'fly-client-ip': '203.0.113.7' })).status).toBe(200);
    expect((await signedCallback(behindFly, `http://${host}`, { 'x-forwarded-proto': 'https', 'fly-client-ip': '203.0.113.7' })).status).toBe(403);
  });
});
