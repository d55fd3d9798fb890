// An SMS-pumping run against the default policy, end to end (issue 20): every call is allowed,
// so only the new signals can show it. The daemon's metrics carry the destination country and
// the spend (never a number or a range); one command blocks the pumped ranges; `list` then says
// how many calls each entry denied (from the heartbeats' rollup, off the decision path's locks).
// Needs dist/ (`npm run build`), like the other daemon tests.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, createTestDatabase, type DaemonProcess, httpRequest, postJson, startDaemon, stopAll, TEST_KEY, waitFor } from '../helpers/fixture.js';
import { cli } from './run.js';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemon: DaemonProcess | undefined;
const ENV = {
  PHONE_ENCRYPTION_KEY: TEST_KEY,
  RATELIMIT_HEARTBEAT_INTERVAL: '300ms',
  RATE_LIMIT_IP_MAX: '100000',
  RATELIMIT_PRICES: 'unit=sms,currency=USD,default=0.01,GB=0.05',
};

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  daemon = await startDaemon({ databaseUrl: db.url, env: ENV });
});

afterAll(async () => {
  await stopAll([daemon]);
  await db?.drop();
});

// Two GB mobile ranges walked one number at a time, and one US number: bounded, loopback.
const pumped = (i: number) => `+4479112${i % 2 === 0 ? '30' : '31'}${String(100 + i).slice(-3)}`;

describe('a pumping run against the default policy', () => {
  it('is counted by country with spend, blocked in one command, and list counts what each entry denied', async () => {
    const d = daemon!;
    for (let i = 0; i < 20; i++) expect((await postJson(d.url, '/v1/consume', { phoneNumber: pumped(i) })).status).toBe(200);
    expect((await postJson(d.url, '/v1/consume', { phoneNumber: '+14155552671' })).status).toBe(200);

    const metrics = (await httpRequest(`${d.url}/metrics`)).text;
    expect(metrics).toMatch(/ratelimit_country_consumes_total\{country="GB",result="allowed"\} 20/);
    expect(metrics).toMatch(/ratelimit_country_consumes_total\{country="US",result="allowed"\} 1/);
    expect(metrics).toMatch(/ratelimit_spend_total\{country="GB"\} 1(\.0+\d*)?\n/);
    // No number, mask or range in any label.
    expect(metrics).not.toMatch(/\+44|447911|\+1415/);

    const block = await cli(['block', '--prefix', '+447911230', '+447911231', '--for', '1h', '--reason', 'pump'], db!.url, ENV);
    expect(block.code, block.stderr).toBe(0);
    // Within the contract's 2 s every daemon denies them. Both ranges already hold 10 distinct
    // numbers, so the default sweep rule denies a new number there too until the block arrives:
    // wait for the block itself (list:block) with checks, which spend and count nothing, so that
    // every consume below is the list's denial.
    await waitFor('the blocks in force', async () => {
      const r = await postJson(d.url, '/v1/check', { phoneNumber: pumped(40) });
      return (r.json as { rule?: string }).rule === 'list:block' ? true : undefined;
    });
    for (let i = 40; i < 45; i++) expect((await postJson(d.url, '/v1/consume', { phoneNumber: pumped(i) })).status).toBe(429);

    const hits = await waitFor('list hit counts from the heartbeats', async () => {
      const r = await cli(['list', '--json'], db!.url, ENV);
      const entries = (JSON.parse(r.stdout) as { entries: Array<{ target: string; deniedCalls: number }> }).entries;
      const total = entries.reduce((n, e) => n + e.deniedCalls, 0);
      return total >= 5 ? entries : undefined;
    });
    const by = Object.fromEntries(hits.map((e) => [e.target, e.deniedCalls]));
    expect(by['+447911230']! + by['+447911231']!).toBe(5);
    expect(by['+447911230']).toBe(3); // 40, 42, 44
    const text = await cli(['list'], db!.url, ENV);
    expect(text.stdout).toMatch(/denied \(1d\)/);
    // The denials are still counted once under their reason.
    const stats = await cli(['stats', '--json'], db!.url, ENV);
    expect((JSON.parse(stats.stdout) as { denialsByReason: Record<string, number> }).denialsByReason).toEqual({ number_blocked: 5 });
  });
});
