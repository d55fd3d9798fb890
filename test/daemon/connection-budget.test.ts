// Connection budgets: four daemons and the admin commands against a server whose connection
// limit is sized by the documented formula (docs/self-hosting.md, *Connection budgets*):
//   daemons x (RATELIMIT_DB_POOL_SIZE + 1) + admin commands x 4 <= the limit.
// The limit is a role's CONNECTION LIMIT on the shared test server: the same SQLSTATE (53300,
// "too many connections") as max_connections, without a server of its own. Under load none of
// the daemons may fall back to memory; and when the server is full, a refused connection is
// retried as the capacity problem it is, not taken for an outage.

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  type Reply,
  runCli,
  startDaemon,
  stopAll,
  waitFor,
  WsClient,
} from '../helpers/fixture.js';

const DAEMONS = 4;
const POOL_SIZE = 4;
const ADMIN_COMMANDS = 2;
const ADMIN_POOL = 4;
const FORMULA = DAEMONS * (POOL_SIZE + 1) + ADMIN_COMMANDS * ADMIN_POOL;
const N = 3;
const SOCKETS_PER_DAEMON = 3;
const BURSTS_PER_SOCKET = 15;

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
const role = `ratelimit_budget_${randomBytes(4).toString('hex')}`;
const password = randomBytes(12).toString('hex');
const daemons: DaemonProcess[] = [];
const clients = new Set<WsClient>();

async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: process.env.RATELIMIT_TEST_ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

function roleUrl(): string {
  const u = new URL(db!.url);
  u.username = role;
  u.password = password;
  return u.toString();
}

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  const name = new URL(db.url).pathname.slice(1);
  await admin(`CREATE ROLE ${role} LOGIN PASSWORD '${password}' CONNECTION LIMIT ${FORMULA}`);
  // The owner of the database may create in its public schema (PostgreSQL 15), so it migrates it.
  await admin(`ALTER DATABASE "${name}" OWNER TO ${role}`);
});

afterAll(async () => {
  await closeAll(clients);
  await stopAll(daemons);
  await db?.drop();
  await admin(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
});

/** Every socket: bursts of N + 1 consumes on fresh numbers, all at once. */
async function load(): Promise<Reply[]> {
  const replies: Reply[] = [];
  await Promise.all(
    daemons.map(async (d) => {
      const sockets = await Promise.all(Array.from({ length: SOCKETS_PER_DAEMON }, () => WsClient.connect(d.wsUrl)));
      sockets.forEach((s) => clients.add(s));
      await Promise.all(
        sockets.map(async (s) => {
          for (let i = 0; i < BURSTS_PER_SOCKET; i++) {
            const phone = freshNumber();
            replies.push(...(await Promise.all(Array.from({ length: N + 1 }, () => s.call({ type: 'rate_limit_consume', phoneNumber: phone })))));
          }
        }),
      );
    }),
  );
  return replies;
}

const fellBack = (d: DaemonProcess) => d.logs.filter((l) => /database unreachable/.test(l.msg ?? ''));

describe('connection budgets', () => {
  it(`${DAEMONS} daemons and ${ADMIN_COMMANDS} admin commands within a limit of ${FORMULA} connections never fall back to memory`, async () => {
    // 5 s: room for the second test to free a connection while the daemons retry.
    const env = {
      RATELIMIT_DB_TIMEOUT: '5s',
      RATELIMIT_DB_POOL_SIZE: String(POOL_SIZE),
      RATE_LIMIT_PHONE_MAX: String(N),
      RATE_LIMIT_IP_MAX: '1000000',
      RATELIMIT_MESSAGES_PER_SECOND: '1000000',
    };
    for (let i = 0; i < DAEMONS; i++) daemons.push(await startDaemon({ databaseUrl: roleUrl(), env }));
    // Admin commands while the daemons are busy: they count in the formula too.
    const adminRuns = Promise.all(Array.from({ length: ADMIN_COMMANDS }, () => runCli(['stats', '--json', '--database-url', roleUrl()])));
    const replies = await load();
    for (const r of await adminRuns) expect(r.code, r.stderr).toBe(0);
    expect(replies.filter((r) => r.type !== 'rate_limit_status' && r.type !== 'rate_limit_exceeded')).toStrictEqual([]);
    expect(replies.filter((r) => r.source !== 'database')).toStrictEqual([]);
    for (const d of daemons) expect(fellBack(d)).toStrictEqual([]);
  }, 90_000);

  it('a full server: "too many connections" is retried as capacity, logged as such, and does not make a daemon fall back', async () => {
    const c = new pg.Client({ connectionString: process.env.RATELIMIT_TEST_ADMIN_URL });
    await c.connect();
    try {
      // The limit becomes what the listeners hold, then the pools' connections are closed: every
      // daemon's next connection is refused with 53300 (a lower limit closes no connection).
      await c.query(`ALTER ROLE ${role} CONNECTION LIMIT ${DAEMONS}`);
      await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND application_name LIKE $2', [role, 'ratelimit serve%']);
      const held = async () => (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1', [role])).rows[0]!.n;
      await waitFor('only the listeners connected', async () => ((await held()) === DAEMONS ? true : undefined), 10_000, 20);
      const sockets = await Promise.all(daemons.map((d) => WsClient.connect(d.wsUrl)));
      sockets.forEach((s) => clients.add(s));
      const pending = sockets.map((s) => s.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() }));
      // Each daemon says it is retrying for capacity; then a connection frees up (here: the limit
      // is raised back to the formula's), well within RATELIMIT_DB_TIMEOUT.
      await waitFor(
        'every daemon retrying for capacity',
        async () => (daemons.every((d) => d.logs.some((l) => /refused a connection for capacity/.test(l.msg ?? ''))) ? true : undefined),
        10_000,
        20,
      );
      await c.query(`ALTER ROLE ${role} CONNECTION LIMIT ${FORMULA}`);
      const replies = await Promise.all(pending);
      expect(replies.map((r) => [r.type, r.source])).toStrictEqual(daemons.map(() => ['rate_limit_status', 'database']));
      for (const d of daemons) expect(fellBack(d)).toStrictEqual([]);
    } finally {
      await c.end();
    }
  }, 90_000);
});
