// `ratelimit top` end to end through the real binary: two daemons share one database and take
// traffic; `top --once` run as a separate process must show the fleet from the database alone.

import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  type CliResult,
  closeAll,
  createTestDatabase,
  type DaemonProcess,
  postJson,
  ROOT,
  runCli,
  startDaemon,
  stopAll,
  waitFor,
  WsClient,
} from '../helpers/fixture.js';

const HOT = '+14155552671';
const HOT_MASKED = '+14155552•••';
const OTHER = '+442079460958';
// Short enough for the 80-column INSTANCE column, like Fly's 14-character machine ids.
const A = 'e2e-top-a';
const B = 'e2e-top-b';
const ENV = { RATELIMIT_HEARTBEAT_INTERVAL: '500ms', RATE_LIMIT_PHONE_MAX: '2', RATE_LIMIT_PHONE_WINDOW: '1h', RATE_LIMIT_IP_MAX: '1000' };

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemons: DaemonProcess[] = [];
const clients = new Set<WsClient>();

/** The fixture's assertBuilt leaves out the dashboard (src/cli/top), which this test does run. */
function assertViewsBuilt(): void {
  const built = path.join(ROOT, 'dist/src/cli/top/TopView.js');
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npm run build\``);
  const dir = path.join(ROOT, 'src/cli/top');
  for (const f of readdirSync(dir)) {
    if (statSync(path.join(dir, f)).mtimeMs > statSync(built).mtimeMs) throw new Error(`dist/ is older than src/cli/top/${f}: run \`npm run build\``);
  }
}

function top(...args: string[]): Promise<CliResult> {
  return runCli(['top', ...args, '--database-url', db!.url], {
    RATE_LIMIT_PHONE_MAX: ENV.RATE_LIMIT_PHONE_MAX,
    RATE_LIMIT_PHONE_WINDOW: ENV.RATE_LIMIT_PHONE_WINDOW,
  });
}

function line(out: string, needle: string): string {
  return out.split('\n').find((l) => l.includes(needle)) ?? '';
}

beforeAll(async () => {
  assertBuilt();
  assertViewsBuilt();
  db = await createTestDatabase();
  daemons = await Promise.all([
    startDaemon({ databaseUrl: db.url, env: { ...ENV, FLY_MACHINE_ID: A, FLY_REGION: 'iad' } }),
    startDaemon({ databaseUrl: db.url, env: { ...ENV, FLY_MACHINE_ID: B, FLY_REGION: 'lhr' } }),
  ]);
  const [a, b] = daemons as [DaemonProcess, DaemonProcess];
  // Three consumes of one number on each daemon (WebSocket on one, HTTP on the other):
  // 2 allowed and 4 denied in all. One more number, allowed once.
  const ws = await WsClient.connect(a.wsUrl);
  clients.add(ws);
  for (let i = 0; i < 3; i++) await ws.call({ type: 'rate_limit_consume', phoneNumber: HOT });
  for (let i = 0; i < 3; i++) await postJson(b.url, '/v1/consume', { phoneNumber: HOT });
  expect((await postJson(b.url, '/v1/consume', { phoneNumber: OTHER })).status).toBe(200);
});

afterAll(async () => {
  await closeAll(clients);
  await stopAll(daemons);
  await db?.drop();
});

describe('ratelimit top --once', () => {
  it('shows both instances, the totals and the hottest number, masked', async () => {
    // Until both daemons have published a beat, and have written the denials they answered
    // from their deny caches (those reach the database a little after the reply).
    const out = await waitFor('both instances and every denial in top', async () => {
      const r = await top('--once');
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.includes(A) && r.stdout.includes(B) && r.stdout.includes(' 4 denied ') ? r.stdout : undefined;
    });
    expect(out).toMatch(/ratelimit top · 2\/2 up/);
    expect(line(out, A)).toMatch(/ iad .* up\s*$/);
    expect(line(out, B)).toMatch(/ lhr .* up\s*$/);
    expect(out).toMatch(/window +2 per 1h · 2 numbers tracked · 2 active · 1 at limit · 3 calls\s+4 denied · 0 resets/);
    expect(out).toMatch(/database up · [\d.]+ ms · PostgreSQL/);
    // RESET IN counts whole seconds up: "1h" when top runs within a second of the first call
    // (a fast machine), "59m 5xs" otherwise.
    // The movers panel names the number's range too (its mask is that range): HOTTEST's row is the
    // one with the hash beside the mask.
    expect(out).toMatch(/\+14155552••• +[0-9a-f]{8,12} US +2\/2 +4 +(1h|59m)\b/);
    expect(out).toMatch(/\+4420\S* +[0-9a-f]{8,12} GB +1\/2 +0/);
    expect(out).not.toContain(HOT);
    expect(out).not.toContain(HOT.slice(1));
    expect(out).not.toContain(OTHER);
    for (const l of out.split('\n')) expect([...l].length).toBeLessThanOrEqual(80);
    // Plain text for pipes: no colour codes, no key help.
    expect(out).not.toMatch(/\u001B\[/);
    expect(out).not.toContain('q quit');
  });

  it('prints one frame and exits without a TTY even without --once', async () => {
    const r = await top('--interval', '500ms');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(HOT_MASKED);
    expect(r.stdout).toContain('every 500ms');
  });

  it('refuses a bad --interval as a usage error and an unreachable database with exit 1', async () => {
    const bad = await top('--once', '--interval', 'soon');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--interval/);
    const down = await runCli(['top', '--once', '--database-url', 'postgres://nobody:x@127.0.0.1:1/none']);
    expect(down.code).toBe(1);
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('shows a gracefully stopped instance as left and a killed one as down', async () => {
    const [a, b] = daemons as [DaemonProcess, DaemonProcess];
    expect((await b.stop('SIGTERM')).code).toBe(0);
    const left = await waitFor('the stopped instance as left', async () => {
      const r = await top('--once');
      return /left/.test(line(r.stdout, B)) ? r.stdout : undefined;
    });
    expect(left).toMatch(/ratelimit top · 1\/1 up/);

    await a.stop('SIGKILL');
    const down = await waitFor('the killed instance as down', async () => {
      const r = await top('--once');
      return /DOWN/.test(line(r.stdout, A)) ? r.stdout : undefined;
    });
    expect(down).toMatch(/ratelimit top · 0\/1 up/);
    expect(down).toMatch(/1 down/);
  });
});
