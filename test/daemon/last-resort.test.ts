// Issue 17: a bug that escapes its request (an uncaught exception, an unhandled rejection) must
// degrade to a restart, not a hang or a silent death: the daemon logs it with its stack, drains
// through its one shutdown path (open sockets closed with 1001, decisions written) and exits
// non-zero. The error is injected by a preloaded module (test/daemon/fixtures/inject-uncaught.mjs)
// on SIGUSR2, so the daemon itself carries no test hook.

import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  freshNumber,
  postJson,
  ROOT,
  startDaemon,
  stopAll,
  WsClient,
} from '../helpers/fixture.js';

const TOKEN = 'last-resort-test-token-0123456';
const PRELOAD = path.join(ROOT, 'test', 'daemon', 'fixtures', 'inject-uncaught.mjs');

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
const daemons: DaemonProcess[] = [];
const clients = new Set<WsClient>();

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
});

afterEach(async () => {
  await closeAll(clients);
  clients.clear();
  await stopAll(daemons.splice(0));
});

afterAll(async () => {
  await db?.drop();
});

for (const kind of ['exception', 'rejection'] as const) {
  describe(`an unhandled ${kind}`, () => {
    it('is logged with its stack, drains through the shutdown path and exits non-zero', async () => {
      const d = await startDaemon({
        databaseUrl: db!.url,
        env: { RATELIMIT_API_TOKENS: TOKEN, NODE_OPTIONS: `--import=${PRELOAD}`, INJECT_KIND: kind },
      });
      daemons.push(d);
      const ws = await WsClient.connect(d.wsUrl, { headers: { Authorization: `Bearer ${TOKEN}` } });
      clients.add(ws);
      const consumed = await ws.call({ type: 'rate_limit_consume', phoneNumber: freshNumber() });
      expect(consumed).toMatchObject({ type: 'rate_limit_status', allowed: true });
      expect((await postJson(d.url, '/v1/check', { phoneNumber: freshNumber() }, { Authorization: `Bearer ${TOKEN}` })).status).toBe(200);

      const exit = await d.stop('SIGUSR2');
      expect(exit.code).toBe(1);
      const fatal = d.logs.find(
        (l) => l.level === 60 && typeof l.msg === 'string' && l.msg.includes(kind === 'exception' ? 'uncaughtException' : 'unhandledRejection'),
      );
      expect(fatal, d.stdout()).toBeDefined();
      // pino's err serializer: the stack, not only the message.
      expect((fatal!.err as { stack?: string }).stack).toMatch(/injected .* \(test\)\n\s+at /);
      // Drained through the one shutdown path, after the fatal line.
      const msgs = d.logs.map((l) => l.msg);
      const fatalAt = d.logs.indexOf(fatal!);
      expect(msgs.indexOf('shutting down: no new connections, answering what is in flight')).toBeGreaterThan(fatalAt);
      expect(msgs.indexOf('shut down cleanly')).toBeGreaterThan(fatalAt);
      expect((await ws.closed).code).toBe(1001);
      expect(d.stderr()).toMatch(/stopped after an (uncaughtException|unhandledRejection)/);
    });
  });
}
