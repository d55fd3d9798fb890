// The limit's promise across instances: two daemons on one database admit exactly
// RATE_LIMIT_PHONE_MAX calls for a number however the requests are spread, and a reset made
// with the CLI reaches both daemons' deny caches (LISTEN/NOTIFY).

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  postJson,
  type Reply,
  runCli,
  startDaemons,
  stopAll,
  waitFor,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'cluster-test-token';
const PHONE_MAX = 5;
const SOCKETS_PER_DAEMON = 4;
const WS_PER_SOCKET = 40;
const HTTP_PER_DAEMON = 20;
// What the CLI needs to read what the daemons enforce.
const POLICY_ENV = { RATE_LIMIT_PHONE_MAX: String(PHONE_MAX), RATE_LIMIT_PHONE_WINDOW: '1h' };

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemons: DaemonProcess[] = [];
const clients = new Set<WsClient>();
const auth = { Authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  const env = { ...POLICY_ENV, RATELIMIT_API_TOKENS: TOKEN, RATE_LIMIT_IP_MAX: '1000000' };
  daemons = await startDaemons([
    { databaseUrl: db.url, env },
    { databaseUrl: db.url, env },
  ]);
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
});

afterAll(async () => {
  await stopAll(daemons);
  await db?.drop();
});

async function connect(d: DaemonProcess): Promise<WsClient> {
  const c = await WsClient.connect(d.wsUrl, { headers: auth });
  clients.add(c);
  return c;
}

interface StatusJson {
  used: number;
  limit: number;
  remaining: number;
  allowed: boolean;
  deniedTotal: number;
}

async function cliStatus(phone: string): Promise<StatusJson> {
  const r = await runCli(['status', phone, '--json', '--database-url', db!.url], POLICY_ENV);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as StatusJson;
}

let n = 0;
/** A distinct end-user address per request, so only the phone limit is in play. */
const nextIp = () => `10.${(++n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;

describe('two daemons sharing one database', () => {
  it(`admits exactly ${PHONE_MAX} of hundreds of concurrent consumes for one number`, async () => {
    const phone = freshNumber();
    const sockets = await Promise.all(daemons.flatMap((d) => Array.from({ length: SOCKETS_PER_DAEMON }, () => connect(d))));
    const pending: Array<Promise<Reply>> = [];
    // Interleaved so both daemons and every socket have requests in flight at once.
    for (let i = 0; i < WS_PER_SOCKET; i++) {
      for (const s of sockets) pending.push(s.call({ type: 'rate_limit_consume', phoneNumber: phone, ip: nextIp() }));
      if (i < HTTP_PER_DAEMON) {
        for (const d of daemons) {
          pending.push(
            postJson(d.url, '/v1/consume', { phoneNumber: phone, ip: nextIp() }, auth).then((r) => {
              expect([200, 429]).toContain(r.status);
              return r.json as Reply;
            }),
          );
        }
      }
    }
    const replies = await Promise.all(pending);
    const total = SOCKETS_PER_DAEMON * daemons.length * WS_PER_SOCKET + HTTP_PER_DAEMON * daemons.length;
    expect(replies).toHaveLength(total);
    const allowed = replies.filter((r) => r.type === 'rate_limit_status');
    const denied = replies.filter((r) => r.type === 'rate_limit_exceeded');
    expect(allowed).toHaveLength(PHONE_MAX);
    expect(allowed.every((r) => r.allowed === true && r.source === 'database')).toBe(true);
    expect(denied).toHaveLength(total - PHONE_MAX);
    expect(denied.every((r) => r.reason === 'phone_rate_limit_exceeded' && r.remaining === 0)).toBe(true);
    // Each allowed reply saw a different count: no two instances handed out the same slot.
    expect(allowed.map((r) => r.used).sort()).toStrictEqual([1, 2, 3, 4, 5]);

    const status = await cliStatus(phone);
    expect(status).toMatchObject({ used: PHONE_MAX, limit: PHONE_MAX, remaining: 0, allowed: false });
    // Denials answered from a daemon's deny cache are written behind; all of them arrive.
    await waitFor(
      `${total - PHONE_MAX} denials recorded`,
      async () => ((await cliStatus(phone)).deniedTotal === total - PHONE_MAX ? true : undefined),
      20_000,
      250,
    );
  });

  it('a reset from the CLI makes the next consume allowed on both daemons', async () => {
    const phone = freshNumber();
    const sockets = await Promise.all(daemons.map((d) => connect(d)));
    for (let i = 0; i < PHONE_MAX; i++) await sockets[i % 2]!.call({ type: 'rate_limit_consume', phoneNumber: phone });
    // A denial on each daemon: each now holds the number in its deny cache.
    for (const s of sockets) expect(await s.call({ type: 'rate_limit_consume', phoneNumber: phone })).toMatchObject({ type: 'rate_limit_exceeded' });

    const reset = await runCli(['reset', phone, '--reason', 'cluster test', '--json', '--database-url', db!.url], POLICY_ENV);
    expect(reset.code, reset.stderr).toBe(0);

    // NOTIFY is asynchronous: each daemon may deny from its cache for a moment.
    for (const [i, s] of sockets.entries()) {
      const r = await waitFor(
        `daemon ${i} to admit after the reset`,
        async () => {
          const reply = await s.call({ type: 'rate_limit_consume', phoneNumber: phone });
          return reply.type === 'rate_limit_status' ? reply : undefined;
        },
        10_000,
        100,
      );
      expect(r).toMatchObject({ allowed: true, used: i + 1 });
    }
    expect(await cliStatus(phone)).toMatchObject({ used: 2, remaining: PHONE_MAX - 2 });
  });
});
