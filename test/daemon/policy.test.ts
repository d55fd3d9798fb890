// The daemon enforces the applied policy (issue #10): every rule kind denies with its reason and
// rule id, a denial spends nothing anywhere, shadow rules only report, the limit holds across two
// daemons, and policy and list changes reach running daemons without a restart. Policies and
// lists are written with src/db (as `ratelimit policy apply|block|allow` do) and then observed
// through the binary.

import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maskPhone } from '../../src/core/phone.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { migrate } from '../../src/db/migrate.js';
import { removeListEntry, setListEntry } from '../../src/db/lists.js';
import { applyPolicy } from '../../src/db/policies.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { lookupPhone } from '../../src/db/phones.js';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  httpRequest,
  postJson,
  type Reply,
  startDaemons,
  stopAll,
  TEST_KEY,
  waitFor,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'policy-test-token';
const ORIGIN = 'https://app.example.com';
const auth = { Authorization: `Bearer ${TOKEN}` };
// Given to the daemons, so they must say these are ignored once a policy is applied.
const ENV = {
  RATELIMIT_API_TOKENS: TOKEN,
  ALLOWED_ORIGINS: ORIGIN,
  RATE_LIMIT_PHONE_MAX: '1000',
  RATE_LIMIT_IP_MAX: '1000000',
  RATELIMIT_MESSAGES_PER_SECOND: '1000000',
};

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let pool: Pool;
let daemons: DaemonProcess[] = [];
let clients: WsClient[] = [];
let version = 0;

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 4 });
  await migrate(pool);
  daemons = await startDaemons([
    { databaseUrl: db.url, env: ENV },
    { databaseUrl: db.url, env: ENV },
  ]);
  clients = await Promise.all(daemons.map((d) => WsClient.connect(d.wsUrl, { headers: auth })));
});

afterAll(async () => {
  await closeAll(clients);
  await stopAll(daemons);
  await pool?.end();
  await db?.drop();
});

const hash = (e164: string) => createHmac('sha256', TEST_KEY).update(e164).digest('hex');
const consume = (phoneNumber: string, ip?: string, c = clients[0]!) => c.call({ type: 'rate_limit_consume', phoneNumber, ...(ip ? { ip } : {}) });
const check = (phoneNumber: string, c = clients[0]!) => c.call({ type: 'rate_limit_check', phoneNumber });

async function policyVersionOf(d: DaemonProcess): Promise<number> {
  const m = /^ratelimit_policy_version (\d+)$/m.exec((await httpRequest(`${d.url}/metrics`)).text);
  return m ? Number(m[1]) : -1;
}

/** Applies a policy and waits until both daemons enforce it (they switch without restart). */
async function apply(yaml: string): Promise<void> {
  const parsed = parsePolicyFile(yaml);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  version = (await applyPolicy(pool, { yaml, by: 'policy test', reason: null })).applied.version;
  for (const d of daemons)
    await waitFor(`policy version ${version} on ${d.url}`, async () => ((await policyVersionOf(d)) === version ? true : undefined), 10_000, 50);
}

/** Consumes until the first denial (at most `max` tries); returns every reply. */
async function untilDenied(phone: () => string, max: number, ip?: string): Promise<Reply[]> {
  const out: Reply[] = [];
  for (let i = 0; i < max; i++) {
    const r = await consume(phone(), ip);
    out.push(r);
    if (r.type !== 'rate_limit_status') break;
  }
  return out;
}

describe('the default policy', () => {
  it('refuses premium-rate numbers before any policy is applied', async () => {
    expect(await policyVersionOf(daemons[0]!)).toBe(0);
    const r = await consume('+449098790000');
    expect(r).toMatchObject({ type: 'rate_limit_exceeded', reason: 'destination_blocked', rule: 'destination:premium_rate', retryAfterMs: null });
    const http = await postJson(daemons[0]!.url, '/v1/consume', { phoneNumber: '+449098790000' }, auth);
    expect(http.status).toBe(429);
    expect(http.headers['retry-after']).toBeUndefined();
    expect(await check('+449098790000')).toMatchObject({
      type: 'rate_limit_status',
      allowed: false,
      reason: 'destination_blocked',
      rule: 'destination:premium_rate',
    });
  });
});

describe('each rule kind', () => {
  it('number rules, and the daemons say RATE_LIMIT_* is ignored', async () => {
    await apply('number:\n  limits: [{limit: 2, window: 1h}]\n');
    const replies = await untilDenied(() => '+14155550101', 5);
    expect(replies.map((r) => r.type)).toEqual(['rate_limit_status', 'rate_limit_status', 'rate_limit_exceeded']);
    expect(replies[2]).toMatchObject({ reason: 'phone_rate_limit_exceeded', rule: 'number:1h', limit: 2, used: 2, remaining: 0 });
    expect(replies[2]!.shadow).toBeUndefined();
    expect(await check('+14155550101')).toMatchObject({ allowed: false, reason: 'phone_rate_limit_exceeded', rule: 'number:1h' });
    for (const d of daemons) {
      expect(d.logs.some((l) => /RATE_LIMIT_PHONE_MAX.*ignored/.test(String(l.msg)))).toBe(true);
      expect(d.logs.some((l) => l.msg === `policy version ${version} in force`)).toBe(true);
    }
  });

  it('prefix rules', async () => {
    await apply('prefix:\n  digits: 3\n  limits: [{limit: 2, window: 2h}]\n');
    let n = 200;
    const replies = await untilDenied(() => `+14155550${n++}`, 5);
    expect(replies).toHaveLength(3);
    expect(replies[2]).toMatchObject({ reason: 'prefix_rate_limit_exceeded', rule: 'prefix:2h', limit: 2, remaining: 0 });
    // Another range is not affected.
    expect(await consume('+14155551300')).toMatchObject({ type: 'rate_limit_status', allowed: true });
  });

  it('country rules, an override replacing the default list', async () => {
    await apply(
      'number:\n  limits: [{limit: 1000, window: 3h}]\ncountry:\n  limits: [{limit: 100, window: 3h}]\n  overrides: {GB: [{limit: 1, window: 3h}]}\n',
    );
    expect(await consume('+442079460001')).toMatchObject({ type: 'rate_limit_status', region: 'GB' });
    expect(await consume('+442079460002')).toMatchObject({ reason: 'country_rate_limit_exceeded', rule: 'country:GB:3h', limit: 1 });
    expect(await consume('+14155550401')).toMatchObject({ type: 'rate_limit_status', allowed: true });
  });

  it('aggregate counts are not shown to browser origins', async () => {
    const browser = await WsClient.connect(daemons[0]!.wsUrl, { origin: ORIGIN });
    try {
      const r = await check('+442079460003', browser);
      // The denying rule is the GB override (limit 1): the browser is told whether, why, by
      // which rule and when to retry (rounded up to the minute), no counts or instants.
      expect(r).toMatchObject({ allowed: false, reason: 'country_rate_limit_exceeded', rule: 'country:GB:3h' });
      for (const field of ['limit', 'used', 'remaining', 'resetTime']) expect(r).not.toHaveProperty(field);
      expect((r.retryAfterMs as number) % 60_000).toBe(0);
    } finally {
      await browser.close();
    }
  });

  it('global rules', async () => {
    await apply('global:\n  limits: [{limit: 3, window: 4h}]\n');
    let n = 500;
    const replies = await untilDenied(() => `+1415555${String(n++).padStart(4, '0')}`, 6);
    expect(replies).toHaveLength(4);
    expect(replies[3]).toMatchObject({ reason: 'global_rate_limit_exceeded', rule: 'global:4h', limit: 3, used: 3, remaining: 0 });
  });

  it('ip rules, several windows', async () => {
    await apply('ip:\n  limits: [{limit: 5, window: 1d}, {limit: 2, window: 1h}]\n');
    let n = 600;
    const replies = await untilDenied(() => `+1415555${String(n++).padStart(4, '0')}`, 5, '203.0.113.7');
    expect(replies).toHaveLength(3);
    expect(replies[2]).toMatchObject({ reason: 'ip_rate_limit_exceeded', rule: 'ip:1h', limit: 2, remaining: 0 });
  });

  it('destination countries', async () => {
    await apply('destinations:\n  countries: {deny: [FR]}\n');
    expect(await consume('+33612345678')).toMatchObject({ reason: 'destination_blocked', rule: 'destination:country', retryAfterMs: null });
    expect(await consume('+14155550701')).toMatchObject({ type: 'rate_limit_status', allowed: true });
    // A policy file's destinations keep the default number-type block unless it says otherwise.
    expect(await consume('+449098790000')).toMatchObject({ reason: 'destination_blocked', rule: 'destination:premium_rate' });
  });

  it('block_after blocks a number that keeps being denied', async () => {
    await apply('number:\n  limits: [{limit: 1, window: 5h}]\n  block_after: {denials: 2, within: 1h, for: 1d}\n');
    const replies = await untilDenied(() => '+14155550801', 1);
    expect(replies[0]).toMatchObject({ allowed: true });
    const denied = [await consume('+14155550801'), await consume('+14155550801'), await consume('+14155550801')];
    expect(denied.slice(0, 2).map((r) => r.reason)).toEqual(['phone_rate_limit_exceeded', 'phone_rate_limit_exceeded']);
    expect(denied[2]).toMatchObject({ reason: 'number_blocked', rule: 'number:block_after' });
    expect(denied[2]!.retryAfterMs as number).toBeGreaterThan(23 * 3_600_000);
  });
});

describe('lists', () => {
  it('a blocked number and a blocked prefix, until unlisted; an unlisted number is not denied from the deny cache', async () => {
    await apply('number:\n  limits: [{limit: 1, window: 6h}]\n');
    const phone = '+14155550901';
    expect(await consume(phone)).toMatchObject({ allowed: true });
    // Denied by its number rule: from now on the deny cache may answer for it.
    expect(await consume(phone)).toMatchObject({ reason: 'phone_rate_limit_exceeded' });
    await setListEntry(pool, {
      targetType: 'number',
      target: hash(phone),
      kind: 'allow',
      masked: maskPhone(phone),
      forMs: undefined,
      by: 'test',
      reason: null,
    });
    for (const c of clients)
      await waitFor('allow entry', async () => ((await consume(phone, undefined, c)).type === 'rate_limit_status' ? true : undefined), 10_000, 50);
    await removeListEntry(pool, 'number', hash(phone), 'test', null);
    for (const c of clients)
      await waitFor('unlisted', async () => ((await consume(phone, undefined, c)).reason === 'phone_rate_limit_exceeded' ? true : undefined), 10_000, 50);

    const other = '+14155550902';
    await setListEntry(pool, {
      targetType: 'number',
      target: hash(other),
      kind: 'block',
      masked: maskPhone(other),
      forMs: 3_600_000,
      by: 'test',
      reason: null,
    });
    const blocked = await waitFor(
      'block entry',
      async () => {
        const r = await consume(other);
        return r.reason === 'number_blocked' ? r : undefined;
      },
      10_000,
      50,
    );
    expect(blocked).toMatchObject({ rule: 'list:block' });
    expect(blocked.retryAfterMs as number).toBeGreaterThan(3_500_000);

    await setListEntry(pool, { targetType: 'prefix', target: '+1415666', kind: 'block', masked: '+1415666', forMs: undefined, by: 'test', reason: null });
    const byPrefix = await waitFor(
      'prefix block',
      async () => {
        const r = await consume('+14156661234');
        return r.reason === 'number_blocked' ? r : undefined;
      },
      10_000,
      50,
    );
    expect(byPrefix).toMatchObject({ rule: 'list:block', retryAfterMs: null });
    expect(await check('+14156669999')).toMatchObject({ allowed: false, reason: 'number_blocked', rule: 'list:block' });
  });
});

describe('all or nothing', () => {
  it('a denial by one rule spends nothing in the others', async () => {
    await apply(
      'number:\n  limits: [{limit: 5, window: 7h}]\nprefix:\n  digits: 3\n  limits: [{limit: 1, window: 7h}]\n' +
        'global:\n  limits: [{limit: 1000, window: 7h}]\nip:\n  limits: [{limit: 2, window: 7h}]\n',
    );
    const ip = '198.51.100.9';
    expect(await consume('+14157770001', ip)).toMatchObject({ allowed: true });
    expect(await consume('+14157770002', ip)).toMatchObject({ reason: 'prefix_rate_limit_exceeded', rule: 'prefix:7h' });
    // The denied number's log, the global counter and the ip slot were not spent.
    const row = (await lookupPhone(pool, hash('+14157770002'))).row;
    expect(row?.callCount ?? 0).toBe(0);
    const { rows } = await pool.query<{ n: number[] }>("SELECT bucket_n AS n FROM rate_limit_counters WHERE rule_id = 'global:7h'");
    expect(rows[0]!.n.reduce((a, b) => a + b, 0)).toBe(1);
    expect(await consume('+14157780001', ip)).toMatchObject({ allowed: true });
    expect(await consume('+14157790001', ip)).toMatchObject({ reason: 'ip_rate_limit_exceeded', rule: 'ip:7h' });
  });
});

describe('shadow rules', () => {
  it('never deny, and are reported in `shadow` and the metrics', async () => {
    await apply('global:\n  limits: [{limit: 1, window: 8h}]\n  shadow: true\n');
    const first = await consume('+14155551001');
    expect(first).toMatchObject({ allowed: true });
    expect(first.shadow).toBeUndefined();
    const second = await consume('+14155551002');
    expect(second).toMatchObject({ type: 'rate_limit_status', allowed: true, shadow: ['global:8h'] });
    const metrics = (await httpRequest(`${daemons[0]!.url}/metrics`)).text;
    expect(metrics).toMatch(/^ratelimit_shadow_denials_total\{rule="global:8h"\} [1-9]/m);
    expect(metrics).toMatch(
      /^ratelimit_decisions_total\{kind="consume",result="denied",reason="prefix_rate_limit_exceeded",rule="prefix:2h",source="database"\} 1$/m,
    );
  });
});

describe('two daemons', () => {
  it('a global limit of 50 admits 49 or 50 of 400 concurrent consumes over distinct numbers', async () => {
    await apply('global:\n  limits: [{limit: 50, window: 30s}]\n');
    const replies = await Promise.all(Array.from({ length: 400 }, (_, i) => consume(`+1415${String(3_000_000 + i)}`, undefined, clients[i % 2]!)));
    const allowed = replies.filter((r) => r.type === 'rate_limit_status').length;
    expect(allowed).toBeGreaterThanOrEqual(49);
    expect(allowed).toBeLessThanOrEqual(50);
    expect(replies.filter((r) => r.type === 'rate_limit_exceeded').every((r) => r.rule === 'global:30s')).toBe(true);
  });
});
