// While the database is unreachable the daemon enforces the same policy from memory (number
// rules, aggregates per instance, lists and destinations as last read); a daemon started during
// the outage enforces the RATE_LIMIT_* default, says so, and switches to the applied policy once
// the database is back.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';
import { setListEntry } from '../../src/db/lists.js';
import { migrate } from '../../src/db/migrate.js';
import { applyPolicy } from '../../src/db/policies.js';
import { createPool } from '../../src/db/pool.js';
import { assertBuilt, closeAll, health, httpRequest, startDaemon, stopAll, waitFor, WsClient, type DaemonProcess } from '../helpers/fixture.js';

const TOKEN = 'policy-outage-token';
const ENV = { RATELIMIT_API_TOKENS: TOKEN, RATELIMIT_DB_TIMEOUT: '1s', RATE_LIMIT_PHONE_MAX: '1000', RATE_LIMIT_IP_MAX: '1000000' };
const POLICY = 'number:\n  limits: [{limit: 2, window: 1h}]\nglobal:\n  limits: [{limit: 4, window: 1h}]\n';

let tempDir: string | undefined;
let server: EmbeddedServer | undefined;
let daemon: DaemonProcess | undefined;
let late: DaemonProcess | undefined;
const clients: WsClient[] = [];

beforeAll(async () => {
  assertBuilt();
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-policy-outage-'));
  // As root the server runs as `postgres`, which must be able to pass through.
  await fs.chmod(tempDir, 0o711);
  server = await startEmbeddedPostgres({ dataDir: path.join(tempDir, 'pg'), fsync: false });
  const pool = createPool({ url: server.url, max: 2 });
  try {
    await migrate(pool);
    await applyPolicy(pool, { yaml: POLICY, by: 'outage test', reason: null });
    await setListEntry(pool, { targetType: 'prefix', target: '+1415444', kind: 'block', masked: '+1415444', forMs: undefined, by: 'test', reason: null });
  } finally {
    await pool.end();
  }
  daemon = await startDaemon({ databaseUrl: server.url, env: ENV });
});

afterAll(async () => {
  await closeAll(clients);
  await stopAll([daemon, late]);
  await server?.stop();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

async function connect(d: DaemonProcess): Promise<WsClient> {
  const c = await WsClient.connect(d.wsUrl, { headers: { Authorization: `Bearer ${TOKEN}` } });
  clients.push(c);
  return c;
}

describe('policy during an outage', () => {
  it('memory mode applies the policy in force; a daemon started meanwhile uses the default until it can read the policy', async () => {
    const d = daemon!;
    await waitFor('policy version 1', () => (d.logs.some((l) => l.msg === 'policy version 1 in force') ? true : undefined));
    const c = await connect(d);
    const url = server!.url;
    await server!.stop();
    await waitFor('memory mode', async () =>
      (await health(d.url)).body.database === 'down' ? true : (await c.call({ type: 'rate_limit_check', phoneNumber: '+14155550000' }), undefined),
    );

    const consume = (phoneNumber: string, via = c) => via.call({ type: 'rate_limit_consume', phoneNumber });
    const x = [await consume('+14155550001'), await consume('+14155550001'), await consume('+14155550001')];
    expect(x.map((r) => r.source)).toEqual(['memory', 'memory', 'memory']);
    expect(x[2]).toMatchObject({ type: 'rate_limit_exceeded', reason: 'phone_rate_limit_exceeded', rule: 'number:1h' });
    // Two more numbers reach this instance's global count of 4; the next is denied by it.
    expect(await consume('+14155550002')).toMatchObject({ allowed: true });
    expect(await consume('+14155550003')).toMatchObject({ allowed: true });
    expect(await consume('+14155550004')).toMatchObject({ reason: 'global_rate_limit_exceeded', rule: 'global:1h', source: 'memory' });
    expect(await consume('+14154440004')).toMatchObject({ reason: 'number_blocked', rule: 'list:block' });
    expect(await consume('+449098790000')).toMatchObject({ reason: 'destination_blocked', rule: 'destination:premium_rate' });
    expect((await httpRequest(`${d.url}/metrics`)).text).toMatch(/^ratelimit_policy_version 1$/m);

    late = await startDaemon({ databaseUrl: url, env: ENV });
    expect(late.logs.some((l) => /could not read the applied policy/.test(String(l.msg)))).toBe(true);
    const lc = await connect(late);
    // The default policy (RATE_LIMIT_PHONE_MAX=1000, no global rule): a third call is allowed.
    const y = [await consume('+14155550005', lc), await consume('+14155550005', lc), await consume('+14155550005', lc)];
    expect(y.map((r) => r.type)).toEqual(['rate_limit_status', 'rate_limit_status', 'rate_limit_status']);
    expect((await httpRequest(`${late.url}/metrics`)).text).toMatch(/^ratelimit_policy_version 0$/m);

    server = await startEmbeddedPostgres({ dataDir: path.join(tempDir!, 'pg'), fsync: false });
    await waitFor('the late daemon reads the policy', () => (late!.logs.some((l) => l.msg === 'policy version 1 in force') ? true : undefined), 30_000);
    await waitFor('back in database mode', async () => ((await health(late!.url)).body.database === 'up' ? true : undefined), 30_000);
    // Its three calls were written; under the applied policy (2 an hour) the number is now denied.
    expect(await consume('+14155550005', lc)).toMatchObject({ reason: 'phone_rate_limit_exceeded', rule: 'number:1h' });
  });
});
