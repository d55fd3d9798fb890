// A standby given as the database by mistake (or reached during a failover) is named as such:
// by serve, which answers from memory until it is promoted, and by the admin commands.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replication, type Replication } from '../helpers/replication.js';
import { assertBuilt, freshNumber, runCli, startDaemon, stopAll, waitFor, health, WsClient, type DaemonProcess } from '../helpers/fixture.js';

let repl: Replication | undefined;
let tempDir = '';
const daemons: DaemonProcess[] = [];

beforeAll(async () => {
  assertBuilt();
  repl = await replication();
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-standby-'));
}, 60_000);

afterAll(async () => {
  await stopAll(daemons);
  await repl?.cleanup();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

describe('a standby as DATABASE_URL', () => {
  it('serve and the admin commands say "standby"; serve decides in the database once it is promoted, with the spool of a daemon that stopped during the outage', async () => {
    const { primary, standby } = await repl!.pair('standby_test');
    // The schema exists (replicated from the primary), as it would in a real deployment.
    const init = await runCli(['db', 'init', '--database-url', primary.url('standby_test')]);
    expect(init.code, init.stderr).toBe(0);

    // A daemon on the primary's URL allows a call from memory once the primary is gone, and is
    // stopped: the call waits in its spool.
    const env = { RATELIMIT_DATA_DIR: tempDir, RATELIMIT_DB_TIMEOUT: '1s', RATELIMIT_SHUTDOWN_TIMEOUT: '2s', RATE_LIMIT_PHONE_MAX: '5' };
    const before = await startDaemon({ databaseUrl: primary.url('standby_test'), env });
    daemons.push(before);
    const phone = freshNumber();
    const ws = await WsClient.connect(before.wsUrl);
    expect(await ws.call({ type: 'rate_limit_consume', phoneNumber: phone })).toMatchObject({ allowed: true, source: 'database' });
    await primary.stop('immediate');
    expect(await ws.call({ type: 'rate_limit_consume', phoneNumber: phone })).toMatchObject({ allowed: true, source: 'memory' });
    await ws.close();
    expect((await before.stop('SIGTERM')).code).toBe(0);

    const status = await runCli(['status', freshNumber(), '--database-url', standby.url('standby_test')]);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/is a standby \(in recovery, read-only\)/);
    expect(status.stderr).toMatch(/target_session_attrs=read-write/);
    expect(status.stderr).not.toMatch(/is it running/);

    // Started on the standby's URL, never seen before: it cannot know which database that is yet.
    const d = await startDaemon({ databaseUrl: standby.url('standby_test'), env });
    daemons.push(d);
    const fallback = d.logs.find((l) => /database unreachable/.test(l.msg ?? ''));
    expect(String(fallback?.err)).toMatch(/is a standby \(in recovery, read-only\)/);

    await standby.promote();
    await waitFor('the daemon on the promoted standby', async () => ((await health(d.url)).body.source === 'database' ? true : undefined), 30_000, 100);
    // Once the database answered with its id, the first daemon's spool was replayed into it.
    const after = await runCli(['status', phone, '--json', '--database-url', standby.url('standby_test')], { RATE_LIMIT_PHONE_MAX: '5' });
    expect(after.code, after.stderr).toBe(0);
    expect(JSON.parse(after.stdout)).toMatchObject({ used: 2 });
  }, 60_000);
});
