// The daemon and the admin commands behind a real PgBouncer (the Debian package) in front of the
// test PostgreSQL. Session mode with PgBouncer's defaults (no ignore_startup_parameters) works end
// to end with two daemons; transaction mode is refused at start, naming pool_mode.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
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
import { PGBOUNCER, startPgBouncer, type PgBouncer } from '../helpers/pgbouncer.js';

const TOKEN = 'pgbouncer-test-token-0123456789';
const PHONE_MAX = 3;
const POLICY_ENV = { RATE_LIMIT_PHONE_MAX: String(PHONE_MAX), RATE_LIMIT_PHONE_WINDOW: '1h' };
const auth = { Authorization: `Bearer ${TOKEN}` };

if (!PGBOUNCER) console.warn('pgbouncer is not installed: the PgBouncer tests are skipped (apt-get install pgbouncer)');

describe.skipIf(!PGBOUNCER)('behind PgBouncer', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  const bouncers: PgBouncer[] = [];
  const daemons: DaemonProcess[] = [];
  const clients = new Set<WsClient>();

  beforeAll(async () => {
    assertBuilt();
    db = await createTestDatabase();
  });

  afterAll(async () => {
    await closeAll(clients);
    await stopAll(daemons);
    await Promise.all(bouncers.map((b) => b.stop()));
    await db?.drop();
  });

  const connect = async (d: DaemonProcess) => {
    const c = await WsClient.connect(d.wsUrl, { headers: auth });
    clients.add(c);
    return c;
  };
  const consume = (c: WsClient, phone: string) => c.call({ type: 'rate_limit_consume', phoneNumber: phone });

  it('session mode with the default ini: decisions in the database, reset, block and policy apply reach both daemons', async () => {
    const bouncer = await startPgBouncer({ server: db!.url });
    bouncers.push(bouncer);
    const url = bouncer.through(db!.url);
    const env = { ...POLICY_ENV, RATELIMIT_API_TOKENS: TOKEN, RATE_LIMIT_IP_MAX: '1000000' };
    daemons.push(await startDaemon({ databaseUrl: url, env }));
    daemons.push(await startDaemon({ databaseUrl: url, env }));
    const [a, b] = await Promise.all(daemons.map(connect));
    const cli = (args: string[]) => runCli([...args, '--database-url', url], POLICY_ENV);

    // Decisions are made by the database (source "database"), and land there: status reads them back.
    const phone = freshNumber();
    const replies: Reply[] = [];
    for (let i = 0; i < PHONE_MAX + 1; i++) replies.push(await consume(i % 2 ? b! : a!, phone));
    expect(replies.map((r) => r.type)).toStrictEqual([...Array<string>(PHONE_MAX).fill('rate_limit_status'), 'rate_limit_exceeded']);
    expect(replies.every((r) => r.source === 'database')).toBe(true);
    const status = await cli(['status', phone, '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ used: PHONE_MAX, remaining: 0 });

    // Both daemons deny (each now caches the denial); a reset through PgBouncer reaches both.
    expect(await consume(a!, phone)).toMatchObject({ type: 'rate_limit_exceeded' });
    expect(await consume(b!, phone)).toMatchObject({ type: 'rate_limit_exceeded' });
    const reset = await cli(['reset', phone, '--reason', 'pgbouncer test']);
    expect(reset.code, reset.stderr).toBe(0);
    for (const c of [a!, b!]) {
      await waitFor('admitted after the reset', async () => ((await consume(c, phone)).type === 'rate_limit_status' ? true : undefined), 10_000, 100);
    }

    // A block through PgBouncer reaches both.
    const blocked = freshNumber();
    const block = await cli(['block', blocked, '--reason', 'pgbouncer test']);
    expect(block.code, block.stderr).toBe(0);
    for (const c of [a!, b!]) {
      await waitFor('denied after the block', async () => ((await consume(c, blocked)).type === 'rate_limit_exceeded' ? true : undefined), 10_000, 100);
    }

    // A policy applied through PgBouncer reaches both: a limit of 1 for a fresh number.
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-pgbouncer-policy-'));
    const file = path.join(dir, 'policy.yaml');
    await fs.writeFile(file, 'number:\n  limits: [{limit: 1, window: 1h}]\n');
    const apply = await cli(['policy', 'apply', file, '--reason', 'pgbouncer test']);
    await fs.rm(dir, { recursive: true, force: true });
    expect(apply.code, apply.stderr).toBe(0);
    for (const c of [a!, b!]) {
      await waitFor(
        'the new policy in force',
        async () => {
          const p = freshNumber();
          const first = await consume(c, p);
          const second = await consume(c, p);
          return first.type === 'rate_limit_status' && second.type === 'rate_limit_exceeded' && second.limit === 1 ? true : undefined;
        },
        10_000,
        100,
      );
    }

    // Nothing of this was decided from memory, and notifications were heard.
    for (const d of daemons) {
      expect(
        d.logs.filter((l) => /database unreachable|notifications do not arrive/.test(l.msg ?? '')),
        d.stdout().slice(-3000),
      ).toStrictEqual([]);
    }
  });

  it('transaction mode: serve refuses at start, naming pool_mode', async () => {
    // ignore_startup_parameters as the usual transaction-mode setups have it (ratelimit sends none it needs).
    const bouncer = await startPgBouncer({ server: db!.url, poolMode: 'transaction', extra: { ignore_startup_parameters: 'extra_float_digits' } });
    bouncers.push(bouncer);
    const started = startDaemon({ databaseUrl: bouncer.through(db!.url), env: { ...POLICY_ENV, RATELIMIT_API_TOKENS: TOKEN } });
    await expect(started).rejects.toThrow(/pool_mode/);
    await expect(started).rejects.toThrow(/exited before listening \(1\)/);
  });

  it('a parameter the pooler refuses is named as such, not "is it running?"', async () => {
    const bouncer = bouncers[0]!;
    const url = new URL(bouncer.through(db!.url));
    url.searchParams.set('options', '-c work_mem=8MB');
    const r = await runCli(['status', freshNumber(), '--database-url', url.toString()], POLICY_ENV);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused the connection: .*unsupported startup parameter: options/);
    expect(r.stderr).toMatch(/ignore_startup_parameters/);
    expect(r.stderr).not.toMatch(/is it running/);
  });
});
