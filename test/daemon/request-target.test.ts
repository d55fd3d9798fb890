// Issue 17: one request must not kill the daemon. Raw request lines and headers, written byte
// for byte on a socket (no HTTP client would send most of them), against the real daemon, as
// upgrades and as plain requests, with and without a token: every one gets an answer or a
// closed socket, malformed targets get 400, and afterwards the daemon is alive and /health
// answers. Bounded: a fixed list plus fast-check runs of fixed size, each request with a timeout.

import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, createTestDatabase, type DaemonProcess, health, startDaemon, stopAll } from '../helpers/fixture.js';

const TOKEN = 'request-target-test-token-0123';
const ORIGIN = 'https://app.example.com';
const REQUEST_TIMEOUT_MS = 5_000;

let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
let daemon: DaemonProcess;

beforeAll(async () => {
  assertBuilt();
  db = await createTestDatabase();
  daemon = await startDaemon({
    databaseUrl: db.url,
    env: {
      RATELIMIT_API_TOKENS: TOKEN,
      ALLOWED_ORIGINS: ORIGIN,
      RATELIMIT_MESSAGES_PER_SECOND: '1000000',
      RATELIMIT_MAX_CONNECTIONS_PER_IP: '1000',
      RATE_LIMIT_IP_MAX: '1000000',
    },
  });
});

afterAll(async () => {
  await stopAll([daemon]);
  await db?.drop();
});

/**
 * Writes `raw` and resolves with the status of the answer (0: the daemon closed the socket
 * without one). Never rejects on the daemon's doing; fails the test if nothing happens in time.
 */
function rawRequest(raw: string | Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(daemon.port, '127.0.0.1');
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms to ${JSON.stringify(raw.toString().slice(0, 120))}`));
    }, REQUEST_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, text });
    };
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      // One answer is all we wait for: headers plus a body of the announced length.
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      // A 101 is followed by WebSocket frames, not a body: its headers are the answer.
      if (text.startsWith('HTTP/1.1 101')) return done();
      const length = /content-length: *(\d+)/i.exec(text.slice(0, end));
      if (!length || text.length - end - 4 >= Number(length[1])) done();
    });
    socket.on('error', () => undefined);
    socket.on('close', done);
    socket.write(raw);
  });
}

const UPGRADE_HEADERS = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

function request(target: string, opts: { upgrade?: boolean; token?: boolean; method?: string; headers?: string } = {}): string {
  const method = opts.method ?? (opts.upgrade ? 'GET' : 'POST');
  const body = method === 'POST' ? '{"phoneNumber":"+14155552671"}' : '';
  return (
    `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    (opts.upgrade ? UPGRADE_HEADERS : '') +
    (opts.token ? `Authorization: Bearer ${TOKEN}\r\n` : '') +
    (opts.headers ?? '') +
    (body ? `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n` : '') +
    `Connection: close\r\n\r\n${body}`
  );
}

async function assertAlive(): Promise<void> {
  expect(daemon.running()).toBe(true);
  const h = await health(daemon.url);
  expect(h.status).toBe(200);
}

const MALFORMED_TARGETS = [
  '//x:99999/ws',
  '//x/ws',
  'http://[/ws',
  '//[',
  '[',
  'http://x:99999/ws',
  'http://user@x/ws',
  '/ws%zz',
  '/%zz',
  '/v1/consume%',
  '/ws#frag',
  `/ws?token=${'%zz'.repeat(3)}`,
  `/${'a'.repeat(9 * 1024)}`,
  `/ws?token=${'a'.repeat(9 * 1024)}`,
  'ws',
  '*',
  'localhost:8081',
  'http:/ws',
  'javascript:alert(1)',
];

describe('request targets that once threw (issue 17)', () => {
  for (const upgrade of [true, false]) {
    for (const token of [false, true]) {
      it(`answers malformed targets with 400 (${upgrade ? 'upgrade' : 'plain'}, ${token ? 'with' : 'without'} a token) and stays up`, async () => {
        const statuses: Record<string, number> = {};
        for (const target of MALFORMED_TARGETS) statuses[target.slice(0, 40)] = (await rawRequest(request(target, { upgrade, token }))).status;
        // Everything malformed is a 400, whatever the method or the token (or a 414/431 from
        // Node's own parser, for lengths past its limits: none here).
        for (const [target, status] of Object.entries(statuses)) expect({ target, status }).toEqual({ target, status: 400 });
        await assertAlive();
      });
    }
  }

  it('routes origin-form and absolute-form alike', async () => {
    expect((await rawRequest(request('/health', { method: 'GET' }))).status).toBe(200);
    expect((await rawRequest(request('http://127.0.0.1/health', { method: 'GET' }))).status).toBe(200);
    expect((await rawRequest(request('http://localhost:8081/health?x=%41', { method: 'GET' }))).status).toBe(200);
    expect((await rawRequest(request('http://localhost/ws', { upgrade: true, token: true }))).status).toBe(101);
    expect((await rawRequest(request('/ws', { upgrade: true, token: true }))).status).toBe(101);
    // A token in the query still works (docs/protocol.md: it ends up in access logs).
    expect((await rawRequest(request(`/ws?token=${TOKEN}`, { upgrade: true }))).status).toBe(101);
    // Paths are not decoded or normalised: only /ws is /ws.
    expect((await rawRequest(request('/%77s', { upgrade: true, token: true }))).status).toBe(404);
    expect((await rawRequest(request('/v1/../ws', { upgrade: true, token: true }))).status).toBe(404);
    await assertAlive();
  });

  it('answers hostile headers (Host, Origin, Authorization, X-Forwarded-For, Fly-Client-IP) and stays up', async () => {
    const values = [
      '',
      ' ',
      '[',
      '//[',
      'http://[',
      '%zz',
      'a'.repeat(9 * 1024),
      'Bearer',
      'Bearer ',
      `Bearer ${'x'.repeat(4000)}`,
      'null',
      '::1',
      '999.999.999.999',
      '1.2.3.4, 5.6.7.8',
      '\u00ff\u00fe',
    ];
    const names = ['Host', 'Origin', 'Authorization', 'X-Forwarded-For', 'Fly-Client-IP', 'Sec-WebSocket-Key', 'Sec-WebSocket-Version', 'Content-Length'];
    let answered = 0;
    for (const name of names) {
      for (const value of values) {
        for (const upgrade of [true, false]) {
          const extra = `${name}: ${value}\r\n`;
          const r = await rawRequest(
            name === 'Host' ? request('/ws', { upgrade, token: true }).replace('Host: 127.0.0.1\r\n', extra) : request('/ws', { upgrade, headers: extra }),
          );
          // An answer (any status) or a closed socket; never a hang, never a dead process.
          expect(r.status === 0 || (r.status >= 100 && r.status < 600)).toBe(true);
          answered++;
        }
      }
    }
    await assertAlive();
    console.log(`hostile headers: ${answered} requests answered, daemon up`);
  });

  it('raw NUL and control bytes in the request line are refused by the parser, not the process', async () => {
    for (const line of ['GET /ws\u0000 HTTP/1.1', 'GET /\u0000/ws HTTP/1.1', 'GET \u0000 HTTP/1.1', 'GET /ws\u0001x HTTP/1.1', 'GET /ws HTTP/1.1\u0000']) {
      const r = await rawRequest(Buffer.from(`${line}\r\nHost: x\r\n${UPGRADE_HEADERS}\r\n`, 'latin1'));
      expect([0, 400]).toContain(r.status);
    }
    await assertAlive();
  });

  it('property: any target, upgrade or plain, with or without a token: an answer, and never a 5xx', async () => {
    // Printable ASCII without space (the request line's separator) and with the characters that
    // broke URL parsing weighted in.
    const char = fc.oneof(
      fc.constantFrom('/', '/', '[', ']', ':', '%', '?', '#', '@', '.', 'w', 's', '9', 'z'),
      fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
    );
    const target = fc.oneof(
      fc.array(char, { maxLength: 40 }).map((cs) => cs.join('')),
      fc.array(char, { maxLength: 20 }).map((cs) => `/${cs.join('')}`),
      fc.array(char, { maxLength: 20 }).map((cs) => `//${cs.join('')}`),
      fc.array(char, { maxLength: 20 }).map((cs) => `http://${cs.join('')}`),
    );
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(
        target.filter((t) => t.length > 0),
        fc.boolean(),
        fc.boolean(),
        async (t, upgrade, token) => {
          const r = await rawRequest(request(t, { upgrade, token }));
          seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
          return r.status > 0 && r.status < 500;
        },
      ),
      { numRuns: 300 },
    );
    await assertAlive();
    console.log(`generated targets: statuses ${JSON.stringify(Object.fromEntries(seen))}`);
  });
});
