// The shared spawner (test/helpers/daemon.ts): when one of several daemons started together fails
// to start, the ones that did start are stopped at once, not left running for the caller (which
// never received them) to leak.
import { describe, expect, it } from 'vitest';
import { spawnDaemon, spawnDaemons, type DaemonOptions, type DaemonProcess } from '../helpers/daemon.js';
import { assertBuilt, createTestDatabase, TEST_KEY } from '../helpers/fixture.js';

describe('spawnDaemons', () => {
  it('stops the daemons that started when a sibling fails to start, and throws that failure', async () => {
    assertBuilt();
    const db = await createTestDatabase();
    const env = { DATABASE_URL: db.url, PORT: '0', HOST: '127.0.0.1', PHONE_ENCRYPTION_KEY: TEST_KEY };
    const started: DaemonProcess[] = [];
    const start = async (o: DaemonOptions) => {
      const d = await spawnDaemon(o);
      started.push(d);
      return d;
    };
    // A port that is not a number: serve refuses its configuration and exits before listening.
    const failure = spawnDaemons([{ env }, { env: { ...env, PORT: 'not-a-port' } }], start);
    await expect(failure).rejects.toThrow(/daemon exited before listening/);
    expect(started).toHaveLength(1);
    expect(started[0]!.running()).toBe(false);
    expect(await started[0]!.exited).toStrictEqual({ code: null, signal: 'SIGKILL' });
  });

  it('returns every daemon when all start', async () => {
    const db = await createTestDatabase();
    const env = { DATABASE_URL: db.url, PORT: '0', HOST: '127.0.0.1', PHONE_ENCRYPTION_KEY: TEST_KEY };
    const [a, b] = await spawnDaemons([{ env }, { env: { ...env, LOG_LEVEL: 'debug' } }]);
    try {
      expect(a!.port).not.toBe(b!.port);
      expect(a!.running() && b!.running()).toBe(true);
    } finally {
      await Promise.all([a!.stop(), b!.stop()]);
    }
  });
});
