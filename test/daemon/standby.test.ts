// A standby given as the database by mistake (or reached during a failover) is named as such:
// by serve, which answers from memory until it is promoted, and by the admin commands.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replication, type Replication } from '../helpers/replication.js';
import { assertBuilt, freshNumber, runCli, startDaemon, stopAll, waitFor, health, type DaemonProcess } from './helpers.js';

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
  it('serve and the admin commands say "standby"; serve decides in the database once it is promoted', async () => {
    const { primary, standby } = await repl!.pair('standby_test');
    // The schema exists (replicated from the primary), as it would in a real deployment.
    const init = await runCli(['db', 'init', '--database-url', primary.url('standby_test')]);
    expect(init.code, init.stderr).toBe(0);

    const status = await runCli(['status', freshNumber(), '--database-url', standby.url('standby_test')]);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/is a standby \(in recovery, read-only\)/);
    expect(status.stderr).toMatch(/target_session_attrs=read-write/);
    expect(status.stderr).not.toMatch(/is it running/);

    const d = await startDaemon({ databaseUrl: standby.url('standby_test'), env: { RATELIMIT_DATA_DIR: tempDir, RATELIMIT_DB_TIMEOUT: '1s' } });
    daemons.push(d);
    const fallback = d.logs.find((l) => /database unreachable/.test(l.msg ?? ''));
    expect(String(fallback?.err)).toMatch(/is a standby \(in recovery, read-only\)/);

    await primary.stop('immediate');
    await standby.promote();
    await waitFor('the daemon on the promoted standby', async () => ((await health(d.url)).body.source === 'database' ? true : undefined), 30_000, 100);
  }, 60_000);
});
