// The start-up check that notifications arrive: a listener that cannot hear what is announced
// through the pool (here RATELIMIT_LISTEN_URL names another database, as a mistake would; behind a
// transaction-mode pooler it is the pooler) is reported, naming RATELIMIT_LISTEN_URL.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, createTestDatabase, type DaemonProcess, startDaemon, stopAll, waitFor } from '../helpers/fixture.js';

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let other: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
const daemons: DaemonProcess[] = [];

beforeAll(async () => {
  assertBuilt();
  [db, other] = await Promise.all([createTestDatabase(), createTestDatabase()]);
});

afterAll(async () => {
  await stopAll(daemons);
  await Promise.all([db?.drop(), other?.drop()]);
});

describe('the notification check', () => {
  it('is silent when notifications arrive, and names RATELIMIT_LISTEN_URL when they do not', async () => {
    const good = await startDaemon({ databaseUrl: db!.url, env: { RATELIMIT_LISTEN_URL: db!.url } });
    const deaf = await startDaemon({ databaseUrl: db!.url, env: { RATELIMIT_LISTEN_URL: other!.url } });
    daemons.push(good, deaf);
    const warning = await waitFor(
      'the deaf listener reported',
      async () => deaf.logs.find((l) => /notifications do not arrive/.test(l.msg ?? '')),
      20_000,
      100,
    );
    expect(warning.msg).toMatch(/RATELIMIT_LISTEN_URL/);
    expect(good.logs.filter((l) => /notifications do not arrive/.test(l.msg ?? ''))).toStrictEqual([]);
  }, 60_000);
});
