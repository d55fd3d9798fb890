// The phone-screen seed's web app against the daemon (issue 21, docs/phone-screen.md): its React
// hook webapp/lib/use-rate-limit.ts, byte for byte (test/fixtures/phone-screen/), bundled with
// a page that renders what the seed's UI would (test/browser/phone-screen/page.jsx), in Debian's
// chromium through playwright-core, against the real daemon binary with the page's origin in
// ALLOWED_ORIGINS. As in the seed, NEXT_PUBLIC_WEBSOCKET_SERVER_URL is inlined at build time and
// the hook appends /logs. A service (the seed's backend) spends calls with its token through
// POST /v1/consume; the page shows each state, a premium-rate number, and the daemon gone.
// PHONE_SCREEN_SCREENSHOTS=<dir> saves a screenshot of each state there.

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { build } from 'rolldown';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, createTestDatabase, type DaemonProcess, freshNumber, postJson, ROOT, startDaemon, stopAll } from '../helpers/fixture.js';
import { CHROMIUM, haveChromium, launchChromium } from './chromium.js';

const TOKEN = 'phone-screen-backend-service-token';
// Generous: chromium on a loaded 2-core machine.
const UI_TIMEOUT_MS = 15_000;
const HOOK = path.join(ROOT, 'test/fixtures/phone-screen/use-rate-limit.ts');
const SCREENSHOTS = process.env.PHONE_SCREEN_SCREENSHOTS;

const HTML = '<!doctype html><meta charset="utf-8"><title>phone-screen hook</title><div id="root"></div><script type="module" src="/page.js"></script>';

/**
 * The page and its bundle, and nothing else. `bundle()` is read per request: the page's origin
 * must be known before the daemon starts (ALLOWED_ORIGINS), and the daemon's URL before the page
 * is bundled, so the server listens first and the bundle arrives later.
 */
function pageServer(bundle: () => string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url === '/') res.writeHead(200, { 'content-type': 'text/html' }).end(HTML);
    else if (req.url === '/page.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle());
    else res.writeHead(404).end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** The seed's hook and the page, bundled as Next.js would: the server URL inlined. */
async function bundlePage(websocketServerUrl: string): Promise<string> {
  const out = await build({
    input: path.join(ROOT, 'test/browser/phone-screen/page.jsx'),
    platform: 'browser',
    write: false,
    logLevel: 'warn',
    transform: {
      jsx: 'react-jsx',
      define: { 'process.env.NEXT_PUBLIC_WEBSOCKET_SERVER_URL': JSON.stringify(websocketServerUrl), 'process.env.NODE_ENV': '"production"' },
    },
    output: { format: 'esm', codeSplitting: false },
  });
  return out.output[0].code;
}

const title = haveChromium ? "phone-screen's hook in chromium" : `phone-screen's hook in chromium (skipped: ${CHROMIUM} is missing; apt-get install chromium)`;

describe.skipIf(!haveChromium)(title, () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let daemon: DaemonProcess | undefined;
  let files: http.Server | undefined;
  let userDataDir: string | undefined;
  let browser: BrowserContext | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    assertBuilt();
    db = await createTestDatabase();
    let bundle = '';
    files = await pageServer(() => bundle);
    const origin = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
    daemon = await startDaemon({
      databaseUrl: db.url,
      env: { ALLOWED_ORIGINS: origin, RATELIMIT_API_TOKENS: TOKEN, RATE_LIMIT_PHONE_MAX: '2', RATE_LIMIT_PHONE_WINDOW: '1h' },
    });
    // What a phone-screen deployment sets: the daemon's base URL; the hook adds /logs.
    bundle = await bundlePage(daemon.url);
    userDataDir = mkdtempSync(path.join(tmpdir(), 'ratelimit-chromium-'));
    browser = await launchChromium(userDataDir);
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${origin}/`);
    await page.waitForSelector('#indicator[data-kind="none"]', { state: 'attached' });
  });

  afterAll(async () => {
    await browser?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await stopAll([daemon]);
    await new Promise((resolve) => (files ? files.close(resolve) : resolve(undefined)));
    await db?.drop();
  });

  /** Types the number as a user would (clearing first) and waits for the box to show `kind`. */
  async function show(
    number: string,
    kind: string,
    shot: string,
  ): Promise<{ text: string; callEnabled: boolean; callText: string; state: Record<string, unknown> | null }> {
    await page.fill('#phone', '');
    await page.waitForSelector('#indicator[data-kind="none"]', { state: 'attached' });
    await page.locator('#phone').pressSequentially(number);
    try {
      await page.waitForSelector(`#indicator[data-kind="${kind}"]`, { state: 'attached' });
    } catch (err) {
      // Say what the page shows instead, or the failure says only "timeout".
      const shown = await page.evaluate(`document.querySelector('#indicator').dataset.kind + ' ' + document.querySelector('#state').textContent`);
      throw new Error(`the page never showed "${kind}" for ${number}; it shows ${String(shown)}`, { cause: err });
    }
    if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, `${shot}.png`) });
    return {
      text: (await page.locator('#indicator').innerText()).replace(/\s*\n\s*/g, ' | '),
      callEnabled: !(await page.isDisabled('#call')),
      callText: (await page.textContent('#call')) ?? '',
      state: JSON.parse((await page.textContent('#state')) ?? 'null') as Record<string, unknown> | null,
    };
  }

  const consume = (number: string) => postJson(daemon!.url, '/v1/consume', { phoneNumber: number }, { Authorization: `Bearer ${TOKEN}` });

  it('runs the seed file unchanged', () => {
    // git's blob id of the fixture: the one recorded in test/fixtures/phone-screen/README.md.
    const bytes = readFileSync(HOOK);
    const blob = createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
    expect(blob).toBe('2ad87d907dd26d834c995c0bc9e55670e62cc962');
  });

  it('shows the calls left as a service spends them, then the limit, with the number written as the user wrote it', async () => {
    const e164 = freshNumber();
    // Spaces and a dash: the hook keeps only replies whose phoneNumber is the string it sent.
    const written = `${e164.slice(0, 2)} ${e164.slice(2, 5)}-${e164.slice(5, 8)}-${e164.slice(8)}`;

    const fresh = await show(written, 'available', '1-fresh');
    expect(fresh.text).toMatch(/^Calls available \| Limit resets in (now|0m) \| 2\/2 calls$/);
    expect(fresh.callEnabled).toBe(true);
    expect(fresh.state).toMatchObject({ phoneNumber: written, allowed: true, remaining: 2, isLoading: false });

    // The seed's backend, before placing the call: one consume with its token.
    expect((await consume(e164)).status).toBe(200);
    const one = await show(written, 'last', '2-after-one-consume');
    // The oldest call leaves the 1 h window in 59-60 minutes.
    expect(one.text).toMatch(/^Last call available \| Limit resets in (1h 0m|59m) \| 1\/2 calls$/);
    expect(one.callEnabled).toBe(true);

    expect((await consume(written)).status).toBe(200);
    const two = await show(written, 'limited', '3-after-two-consumes');
    const limitedText =
      /^Call limit reached \| This number has reached its call limit; try again in (1 hour|[1-5]?\d minutes) \| Limit resets in (1h 0m|59m|58m) \| 0\/2 calls$/;
    expect(two.text).toMatch(limitedText);
    expect(two.callEnabled).toBe(false);
    expect(two.callText).toBe('Call Limit Reached');

    // At the limit: the backend's next consume is refused and spends nothing; the page says the same.
    const third = await consume(e164);
    expect(third.status).toBe(429);
    const atLimit = await show(written, 'limited', '4-at-the-limit');
    // The same words (the minutes may have moved on between the two looks).
    expect(atLimit.text).toMatch(limitedText);
    expect(atLimit.state).toMatchObject({ allowed: false, remaining: 0, resetTime: two.state?.resetTime });
    expect(atLimit.callEnabled).toBe(false);
  });

  it('says a premium-rate number is never allowed, without promising a reset in an hour', async () => {
    const premium = await show('+44 909 879 0000', 'limited', '5-premium-rate');
    expect(premium.text).toMatch(
      /^Call limit reached \| Calls to premium-rate numbers are not allowed; this does not expire \| Limit resets in (\d+)h \d+m \| 0\/2 calls$/,
    );
    // JavaScript's last date, not now + 1 h: more than two billion hours.
    const hours = Number(/resets in (\d+)h/.exec(premium.text)![1]);
    expect(hours).toBeGreaterThan(2_000_000_000);
    expect(premium.callEnabled).toBe(false);
    expect(premium.state).toMatchObject({ phoneNumber: '+44 909 879 0000', allowed: false, resetTime: 8_640_000_000_000_000 });
  });

  it('with the daemon stopped, the hook reports a connection error, which the seed hides, and leaves Call to the backend', async () => {
    await daemon!.stop();
    const down = await show(freshNumber(), 'hidden-error', '6-daemon-stopped');
    expect(down.text).toBe('');
    expect(String(down.state?.error)).toMatch(/^(Connection error|Unable to check rate limit - connection not available)$/);
    // The seed's page fails open; its backend's POST /v1/consume decides whether the call is placed.
    expect(down.callEnabled).toBe(true);
    expect(pageErrors).toEqual([]);
  });
});
