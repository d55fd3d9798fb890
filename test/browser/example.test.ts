// The browser example (examples/browser) in a real browser: Debian's chromium driven by
// playwright-core, the page served by a plain static file server, the real daemon binary with
// the page's origin in ALLOWED_ORIGINS and a token for the service side. The user types a
// number and sees its status; a service spends its calls; the page shows the limit; the daemon
// goes away and the page says so.

import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RateLimitClient } from '../../src/client/index.js';
import { assertBuilt, createTestDatabase, type DaemonProcess, freshNumber, postJson, ROOT, startDaemon, stopAll } from '../helpers/fixture.js';
import { CHROMIUM, haveChromium, launchChromium } from './chromium.js';

const TOKEN = 'browser-test-service-token';
// Generous: chromium on a loaded 2-core machine.
const UI_TIMEOUT_MS = 30_000;

const CONTENT_TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.map': 'application/json' };

/** A static file server for the example and the built client, and nothing else of the checkout. */
function staticServer(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    let file = path.join(ROOT, path.normalize(urlPath));
    if (urlPath.endsWith('/')) file = path.join(file, 'index.html');
    const served = [path.join(ROOT, 'examples') + path.sep, path.join(ROOT, 'dist', 'src') + path.sep];
    if (!served.some((dir) => file.startsWith(dir)) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const title = haveChromium ? 'browser example in chromium' : `browser example in chromium (skipped: ${CHROMIUM} is missing; apt-get install chromium)`;

describe.skipIf(!haveChromium)(title, () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let daemon: DaemonProcess | undefined;
  let files: http.Server | undefined;
  let origin: string;
  let userDataDir: string | undefined;
  let browser: BrowserContext | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    assertBuilt();
    files = await staticServer();
    origin = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
    db = await createTestDatabase();
    daemon = await startDaemon({
      databaseUrl: db.url,
      env: { ALLOWED_ORIGINS: origin, RATELIMIT_API_TOKENS: TOKEN, RATE_LIMIT_PHONE_MAX: '2', RATE_LIMIT_PHONE_WINDOW: '1h' },
    });
    userDataDir = mkdtempSync(path.join(tmpdir(), 'ratelimit-chromium-'));
    browser = await launchChromium(userDataDir);
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${origin}/examples/browser/?daemon=${encodeURIComponent(daemon.wsUrl)}`);
    await page.waitForSelector('#connection[data-state="open"]');
  });

  afterAll(async () => {
    await browser?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await stopAll([daemon]);
    await new Promise((resolve) => (files ? files.close(resolve) : resolve(undefined)));
    await db?.drop();
  });

  /** Types `number` as a user would (clearing first) and waits for the status of that check. */
  async function typeAndWait(number: string, kind: string): Promise<string> {
    await page.fill('#phone', '');
    await page.locator('#phone').pressSequentially(number);
    await page.waitForSelector(`#status[data-kind="${kind}"]`);
    return (await page.textContent('#status')) ?? '';
  }

  it('shows a number status while typing, then the limit once a service has spent its calls', async () => {
    const number = freshNumber();
    expect(await typeAndWait(number, 'allowed')).toBe('0 of 2 calls used, 2 left');
    expect(await page.isDisabled('#call')).toBe(false);

    // The service side: one consume through the Node client, one over HTTP, both with the token.
    const service = new RateLimitClient({ url: daemon!.wsUrl, token: TOKEN, failMode: 'closed' });
    try {
      const first = await service.consume(number);
      expect(first).toMatchObject({ type: 'rate_limit_status', allowed: true, used: 1 });
    } finally {
      await service.close();
    }
    const second = await postJson(daemon!.url, '/v1/consume', { phoneNumber: number }, { Authorization: `Bearer ${TOKEN}` });
    expect(second.status).toBe(200);

    const limited = await typeAndWait(number, 'limited');
    // 1h window: the next call is possible within the hour ("1 h" rounded up, or "59 min").
    // A browser's resetTime is rounded up to the minute: up to a minute past the hour's window.
    expect(limited).toMatch(/^2 of 2 calls used, next in (1 h|1 h 1 min|[1-5]?\d min)$/);
    expect(await page.isDisabled('#call')).toBe(true);
  });

  it('shows why a number is not one', async () => {
    expect(await typeAndWait('12', 'invalid')).toMatch(/^Not a phone number we can call: /);
  });

  it('refuses consume in the browser before asking the daemon', async () => {
    // A string, not a function: vitest would rewrite a function's import() for Node.
    const outcome = await page.evaluate(`(async () => {
      const { BrowserRateLimitClient } = await import('/dist/src/client/browser.js');
      const c = new BrowserRateLimitClient({ url: ${JSON.stringify(daemon!.wsUrl)}, failMode: 'closed' });
      try {
        await c.consume('+14155552671');
        return 'resolved';
      } catch (err) {
        return err.name + ' ' + err.code;
      } finally {
        await c.close();
      }
    })()`);
    expect(outcome).toBe('RateLimitRequestError forbidden');
  });

  it('words the other denials and long waits from reason, retryAfterMs and resetTime', async () => {
    const now = 1_764_072_000_000;
    const base = { phoneNumber: '+14155552671', limit: 2, remaining: 0, source: 'database' };
    const cases = [
      { ...base, type: 'rate_limit_status', allowed: false, reason: 'phone_rate_limit_exceeded', used: 2, resetTime: now + 42 * 60_000 + 1, retryAfterMs: 1 },
      { ...base, type: 'rate_limit_status', allowed: false, reason: 'phone_rate_limit_exceeded', used: 2, resetTime: now + 125 * 60_000, retryAfterMs: 1 },
      { ...base, type: 'rate_limit_status', allowed: false, reason: 'number_blocked', limit: 0, used: 0, resetTime: now, retryAfterMs: null },
      { ...base, type: 'rate_limit_status', allowed: true, used: 1, remaining: 1, resetTime: now, retryAfterMs: 0, source: 'memory' },
      // What a browser is told of a range denial: no counts, no instant, a wait in minutes.
      {
        type: 'rate_limit_status',
        phoneNumber: '+14155552671',
        allowed: false,
        reason: 'prefix_rate_limit_exceeded',
        rule: 'prefix:1h',
        retryAfterMs: 21 * 60_000,
        source: 'database',
      },
    ];
    const texts = await page.evaluate(`(async () => {
      const { describeDecision } = await import('/examples/browser/describe.js');
      return ${JSON.stringify(cases)}.map((d) => describeDecision(d, ${now}).text);
    })()`);
    expect(texts).toEqual([
      '2 of 2 calls used, next in 43 min',
      '2 of 2 calls used, next in 2 h 5 min',
      'This number is blocked until further notice',
      '1 of 2 calls used, 1 left (limiter running on its fallback)',
      'Too many calls to numbers in this range, next in 21 min',
    ]);
  });

  it('says the limiter cannot be reached when the daemon is down (fail open)', async () => {
    await daemon!.stop();
    await page.locator('#connection', { hasText: 'could not connect' }).waitFor();
    expect(await page.textContent('#connection')).toContain('ALLOWED_ORIGINS');
    expect(await typeAndWait(freshNumber(), 'unavailable')).toMatch(/cannot be reached/);
    expect(await page.isDisabled('#call')).toBe(false);
    expect(pageErrors).toEqual([]);
  });
});
