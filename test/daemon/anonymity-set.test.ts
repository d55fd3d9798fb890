// The anonymity set (docs/protocol.md, *The limit's promise*): no stored, logged, spooled,
// exported or printed artefact, alone or combined with another, narrows a number to fewer than
// 1,000 candidates without the key. A prefix rule of 3 digits is applied; one number (and its
// neighbours in its range) is driven through the database and through an outage (spool); then
// every column of every table, the spool files, the daemon's logs, /metrics, and the output of
// `top --once`, `stats --json`, `status` and `list` are collected, and searched for anything
// that shows more of the number than its 1,000-number range: a run of its digits longer than
// the range's, a mask with digits after its bullets or a longer head, a key narrower than the
// range, or a plain (unkeyed) digest of the number.

import { createHash, createHmac } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';
import {
  assertBuilt,
  closeAll,
  health,
  httpRequest,
  postJson,
  runCli,
  startDaemon,
  stopAll,
  TEST_KEY,
  waitFor,
  WsClient,
  type DaemonProcess,
  type Reply,
} from '../helpers/fixture.js';

const TOKEN = 'anonymity-set-service-token-0123';
const ORIGIN = 'https://app.example.com';
const NUMBER = '+14155552671';
const DIGITS = NUMBER.slice(1);
/** The number's 1,000-number range: what a mask and a prefix key may show of it. */
const RANGE_DIGITS = DIGITS.length - 3;
const NEIGHBOURS = ['+14155552672', '+14155552999', '+14155552000'];
const POLICY = [
  'number:',
  '  limits: [{limit: 2, window: 1h}, {limit: 20, window: 1d}]',
  '  block_after: {denials: 2, within: 1h, for: 1h}',
  'prefix:',
  '  digits: 3',
  '  limits: [{limit: 50, window: 1h}]',
  'country:',
  '  limits: [{limit: 1000, window: 1h}]',
  'global:',
  '  limits: [{limit: 100000, window: 1d}]',
  '',
].join('\n');

let tempDir: string;
let dataDir: string;
let server: EmbeddedServer | undefined;
let daemon: DaemonProcess | undefined;
const clients = new Set<WsClient>();
/** Every artefact, by where it came from. */
const artefacts = new Map<string, string>();

beforeAll(async () => {
  assertBuilt();
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-anonymity-'));
  await fs.chmod(tempDir, 0o711);
  dataDir = path.join(tempDir, 'data');
  server = await startEmbeddedPostgres({ dataDir: path.join(tempDir, 'pg'), fsync: false });
});

afterAll(async () => {
  await closeAll(clients);
  await stopAll([daemon]);
  await server?.stop();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

const cli = async (args: string[]) => {
  const r = await runCli(args, { DATABASE_URL: server!.url, RATELIMIT_DATA_DIR: dataDir });
  expect(r.code, `ratelimit ${args.join(' ')}: ${r.stderr}`).toBe(0);
  artefacts.set(`ratelimit ${args.join(' ')} (stdout)`, r.stdout);
  artefacts.set(`ratelimit ${args.join(' ')} (stderr)`, r.stderr);
  return r;
};

async function readTree(dir: string): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await readTree(full)));
    else if (e.isFile()) out.push([full, await fs.readFile(full, 'utf8')]);
    // The path itself is an artefact too (a spool's directory and file names).
    out.push([`path ${full}`, path.relative(dataDir, full)]);
  }
  return out;
}

async function everyTable(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const tables = await client.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name`,
    );
    expect(tables.rows.map((t) => t.table_name)).toEqual(
      expect.arrayContaining(['phone_rate_limits', 'rate_limit_counters', 'rate_limit_lists', 'rate_limit_audit']),
    );
    for (const { table_name } of tables.rows) {
      const rows = await client.query<{ row: string }>(`SELECT row_to_json(t)::text AS row FROM "${table_name}" t`);
      artefacts.set(`table ${table_name}`, rows.rows.map((r) => r.row).join('\n'));
    }
  } finally {
    await client.end();
  }
}

const consume = (c: WsClient, phoneNumber: string) => c.call({ type: 'rate_limit_consume', phoneNumber });

describe('no artefact narrows a number below 1,000 candidates', () => {
  it('through the database, an outage and recovery, in every table, spool, log and printout', async () => {
    const policyFile = path.join(tempDir, 'policy.yaml');
    await fs.writeFile(policyFile, POLICY);
    await cli(['db', 'init']);
    await cli(['policy', 'apply', policyFile, '--reason', 'anonymity test']);
    daemon = await startDaemon({
      databaseUrl: server!.url,
      env: {
        RATELIMIT_API_TOKENS: TOKEN,
        ALLOWED_ORIGINS: ORIGIN,
        RATELIMIT_DATA_DIR: dataDir,
        RATELIMIT_DB_TIMEOUT: '1s',
        RATE_LIMIT_IP_MAX: '1000000',
        RATELIMIT_MESSAGES_PER_SECOND: '1000000',
        LOG_LEVEL: 'debug',
      },
    });
    const service = await WsClient.connect(daemon.wsUrl, { headers: { Authorization: `Bearer ${TOKEN}` } });
    const browser = await WsClient.connect(daemon.wsUrl, { origin: ORIGIN });
    clients.add(service).add(browser);

    // Through the database: allowed, denied (block_after blocks it), neighbours, checks.
    const replies: Reply[] = [];
    for (let i = 0; i < 4; i++) replies.push(await consume(service, NUMBER));
    expect(replies.map((r) => r.type)).toEqual(['rate_limit_status', 'rate_limit_status', 'rate_limit_exceeded', 'rate_limit_exceeded']);
    for (const n of NEIGHBOURS) expect(await consume(service, n)).toMatchObject({ allowed: true, source: 'database' });
    await browser.call({ type: 'rate_limit_check', phoneNumber: NUMBER });
    await postJson(daemon.url, '/v1/consume', { phoneNumber: NUMBER }, { Authorization: `Bearer ${TOKEN}` });
    await cli(['block', NEIGHBOURS[0]!, '--for', '1h', '--reason', 'fraud report']);
    await cli(['allow', NEIGHBOURS[1]!, '--for', '1h', '--reason', 'vip']);
    await cli(['block', '--prefix', '+1415555', '--for', '1h', '--reason', 'pumping']);
    await cli(['unlist', '--prefix', '+1415555']);
    await cli(['reset', NUMBER, '--reason', 'support call']);

    // Through an outage: decisions from memory, spooled before they are answered.
    await server!.stop();
    await waitFor('decisions from memory', async () => ((await consume(service, NUMBER)).source === 'memory' ? true : undefined), 20_000, 100);
    for (const n of [NUMBER, ...NEIGHBOURS]) await consume(service, n);
    const spooled = await readTree(dataDir);
    expect(spooled.some(([, text]) => text.includes('"h":"'))).toBe(true);
    for (const [where, text] of spooled) artefacts.set(`during the outage: ${where}`, text);

    server = await startEmbeddedPostgres({ dataDir: path.join(tempDir, 'pg'), fsync: false });
    await waitFor('recovery', async () => ((await health(daemon!.url)).body.status === 'ok' ? true : undefined), 30_000, 100);
    expect((await consume(service, NEIGHBOURS[2]!)).source).toBe('database');

    // Everything there is to read now.
    artefacts.set('GET /metrics', (await httpRequest(`${daemon.url}/metrics`)).text);
    artefacts.set('GET /health', (await httpRequest(`${daemon.url}/health`)).text);
    await cli(['top', '--once']);
    await cli(['stats', '--json']);
    await cli(['stats']);
    await cli(['status', NUMBER]);
    await cli(['status', NUMBER, '--json']);
    await cli(['status', NEIGHBOURS[0]!]);
    await cli(['list']);
    await cli(['list', '--json']);
    await cli(['policy', 'show']);
    await cli(['key', 'status']);
    await everyTable(server.url);
    for (const [where, text] of await readTree(dataDir)) artefacts.set(`after recovery: ${where}`, text);
    await daemon.stop();
    artefacts.set('daemon stdout (logs)', daemon.stdout());
    artefacts.set('daemon stderr', daemon.stderr());

    // The collection is real: the number's rows, its mask, its range key and its hash are there.
    const all = [...artefacts.values()].join('\n');
    const hmac = createHmac('sha256', TEST_KEY).update(NUMBER).digest('hex');
    expect(artefacts.get('table phone_rate_limits')).toContain(hmac);
    expect(artefacts.get('table rate_limit_counters')).toContain(`"+${DIGITS.slice(0, RANGE_DIGITS)}"`);
    expect(all).toContain(`+${DIGITS.slice(0, RANGE_DIGITS)}•••`);
    expect(artefacts.get('ratelimit top --once (stdout)')).toMatch(/\+14155552•••/);

    const leaks: string[] = [];
    for (const [where, raw] of artefacts) {
      // Separators people and formatters put between digits do not hide them.
      const text = raw.replace(/(?<=\d)[ \-().\u00a0/]+(?=\d)/g, '');
      // 1. No run of the number's digits longer than its range: any such run shows a digit
      //    beyond the range (every 9-digit window of these 11 digits reaches past the 8th).
      for (let len = RANGE_DIGITS + 1; len <= DIGITS.length; len++) {
        for (let at = 0; at + len <= DIGITS.length; at++) {
          const run = DIGITS.slice(at, at + len);
          if (text.includes(run)) leaks.push(`${where}: contains ${run}`);
        }
      }
      // 2. Masks: bullets never followed by digits (the last digits hidden), and a head that is
      //    the start of this number never longer than its range.
      for (const m of text.matchAll(/\+(\d*)(?:•|\\u2022)+(\d*)/g)) {
        if (m[2]) leaks.push(`${where}: mask ${m[0]} shows digits after its bullets`);
        if (DIGITS.startsWith(m[1]!) && m[1]!.length > RANGE_DIGITS) leaks.push(`${where}: mask ${m[0]} shows more than the range`);
      }
      // 3. Keys and prefixes: no "+digits" that starts this number is longer than its range.
      for (const m of text.matchAll(/\+(\d+)/g)) {
        if (m[1]!.length > 1 && DIGITS.startsWith(m[1]!) && m[1]!.length > RANGE_DIGITS) leaks.push(`${where}: ${m[0]} is narrower than the range`);
      }
      // 4. Digests: only keyed ones. A plain digest of the number is reversed by trying 10^n.
      for (const form of [NUMBER, DIGITS]) {
        for (const algorithm of ['sha256', 'sha1', 'md5', 'sha512']) {
          const digest = createHash(algorithm).update(form).digest('hex');
          if (raw.includes(digest.slice(0, 16))) leaks.push(`${where}: a plain ${algorithm} of ${form}`);
        }
      }
    }
    expect(leaks).toEqual([]);
  });
});

describe('ranges narrower than 1,000 numbers are refused where they are typed', () => {
  it('policy check refuses prefix digits below 3, with the reason', async () => {
    const file = path.join(tempDir, 'narrow.yaml');
    await fs.writeFile(file, 'prefix:\n  digits: 2\n  limits: [{limit: 10, window: 1h}]\n');
    const r = await runCli(['policy', 'check', file]);
    expect(r.code).toBe(2);
    expect(r.stderr + r.stdout).toMatch(/narrow.yaml:2:11: prefix\.digits: must be at least 3, not 2: a range must hold at least 1,000 numbers/);
  });

  it('block --prefix refuses a prefix a digit or two short of a whole number', async () => {
    const r = await runCli(['block', '--prefix', '+4420794601'], { DATABASE_URL: server!.url });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/prefix \+4420794601 is too long: numbers starting with it have at most 12 digits.*Use at most 9 digits \(\+442079460\)/);
  });
});
