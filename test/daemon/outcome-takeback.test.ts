// Outcomes feed the conversion rules, through the binary (docs/protocol.md *Outcomes*, "What an
// outcome does to the conversion rules"): idle until the first outcome, then counting; a converted
// outcome takes its call back once however often it is reported; during an outage from memory at
// once, and, across a restart, from the database exactly once when the spool is written.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';
import { migrate } from '../../src/db/migrate.js';
import { applyPolicy } from '../../src/db/policies.js';
import { createPool } from '../../src/db/pool.js';
import { assertBuilt, crashSigns, health, postJson, startDaemon, stopAll, waitFor, type DaemonProcess, type Reply } from '../helpers/fixture.js';

const RULE = 'conversion:prefix:1h';
const POLICY = `number:
  limits: [{limit: 100, window: 1h}]
conversion:
  answered_at_least: 10s
  pending_after: 15m
  prefix: {digits: 3, unconverted: [{limit: 3, window: 1h}]}
`;

let tempDir: string | undefined;
let server: EmbeddedServer | undefined;
let first: DaemonProcess | undefined;
let second: DaemonProcess | undefined;

const env = () => ({
  RATELIMIT_DB_TIMEOUT: '1s',
  RATELIMIT_DATA_DIR: path.join(tempDir!, 'data'),
  RATE_LIMIT_IP_MAX: '1000000',
  RATELIMIT_MESSAGES_PER_SECOND: '1000000',
});

beforeAll(async () => {
  assertBuilt();
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-outcome-takeback-'));
  await fs.chmod(tempDir, 0o711);
  server = await startEmbeddedPostgres({ dataDir: path.join(tempDir, 'pg'), fsync: false });
  const pool = createPool({ url: server.url, max: 1 });
  try {
    await migrate(pool);
    await applyPolicy(pool, { yaml: POLICY, by: 'takeback test', reason: null });
  } finally {
    await pool.end();
  }
  first = await startDaemon({ databaseUrl: server.url, env: env() });
});

afterAll(async () => {
  await stopAll([first, second]);
  await server?.stop();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

async function sql<T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[]> {
  const pool = new pg.Pool({ connectionString: server!.url, max: 1 });
  // A connection still closing when the test stops the server says so here, not as a crash.
  pool.on('error', () => undefined);
  try {
    return (await pool.query<T>(text, params)).rows;
  } finally {
    await pool.end();
  }
}

/** Calls the range's conversion counter holds now (undefined: no counter). */
async function unconverted(range: string): Promise<number | undefined> {
  const rows = await sql<{ n: number | null }>(
    'SELECT (SELECT sum(x)::INTEGER FROM unnest(bucket_n) AS x) AS n FROM rate_limit_counters WHERE rule_id = $1 AND key = $2',
    [RULE, range],
  );
  return rows[0] && (rows[0].n ?? 0);
}

const consume = async (d: DaemonProcess, phoneNumber: string) => (await postJson(d.url, '/v1/consume', { phoneNumber })).json as Reply;
const check = async (d: DaemonProcess, phoneNumber: string) => (await postJson(d.url, '/v1/check', { phoneNumber })).json as Reply;
const report = async (d: DaemonProcess, decisionId: unknown, outcome: string, durationMs?: number) => {
  const r = await postJson(d.url, '/v1/outcome', { decisionId, outcome, ...(durationMs !== undefined ? { durationMs } : {}) });
  expect(r.status).toBe(200);
  return r.json as Reply;
};

describe('outcomes and the conversion rules, through the binary', () => {
  it('idle until the first outcome: nothing counted; then the conversion counters count', async () => {
    const d = first!;
    const a = await consume(d, '+14157771001');
    expect(a.allowed).toBe(true);
    expect(await unconverted('+14157771')).toBeUndefined();
    expect(await report(d, a.decisionId, 'failed')).toMatchObject({ duplicate: false });
    await waitFor('the engaged log line', () => (d.logs.some((l) => /conversion rules engaged/.test(String(l.msg))) ? true : undefined));
    expect((await consume(d, '+14157771002')).allowed).toBe(true);
    expect(await unconverted('+14157771')).toBe(1);
  });

  it('a converted outcome takes its call back once; repeats, unconverted and short answers take nothing', async () => {
    const d = first!;
    // Decisions made well after the rules engaged (the first two minutes after are not taken back).
    await sql(`UPDATE rate_limit_outcomes SET recorded_at = recorded_at - interval '1 hour', decided_at = decided_at - interval '1 hour'`);
    const ids: string[] = [];
    for (const n of ['+14157772001', '+14157772002', '+14157772003']) ids.push((await consume(d, n)).decisionId as string);
    expect(await unconverted('+14157772')).toBe(3);
    expect(await check(d, '+14157772004')).toMatchObject({ allowed: false, rule: RULE, reason: 'conversion_rate_limit_exceeded' });

    expect(await report(d, ids[0], 'verified')).toMatchObject({ duplicate: false });
    expect(await unconverted('+14157772')).toBe(2);
    expect(await check(d, '+14157772004')).toMatchObject({ allowed: true });
    for (let i = 0; i < 3; i++) expect(await report(d, ids[0], 'verified')).toMatchObject({ duplicate: true });
    expect(await report(d, ids[1], 'answered', 9_000)).toMatchObject({ duplicate: false });
    expect(await report(d, ids[2], 'unanswered')).toMatchObject({ duplicate: false });
    expect(await unconverted('+14157772')).toBe(2);
  });

  it('during an outage: taken back from memory at once; across a restart, from the database exactly once', async () => {
    const a = first!;
    const range = '+14157773';
    const before = [(await consume(a, `${range}001`)).decisionId as string, (await consume(a, `${range}002`)).decisionId as string];
    expect(before.every((id) => typeof id === 'string')).toBe(true);
    expect(await unconverted(range)).toBe(2);

    const url = server!.url;
    await server!.stop();
    await waitFor('memory mode', async () => ((await health(a.url)).body.database === 'down' ? true : (await check(a, `${range}999`), undefined)));
    // Memory counts its own calls per instance: three fill the range's budget of 3.
    const inMemory: Reply[] = [];
    for (const n of ['101', '102', '103']) inMemory.push(await consume(a, `${range}${n}`));
    expect(inMemory.map((r) => [r.allowed, r.source])).toEqual([
      [true, 'memory'],
      [true, 'memory'],
      [true, 'memory'],
    ]);
    expect(await check(a, `${range}104`)).toMatchObject({ allowed: false, rule: RULE, source: 'memory' });
    expect(await report(a, inMemory[0]!.decisionId, 'verified')).toMatchObject({ duplicate: false });
    expect(await check(a, `${range}104`)).toMatchObject({ allowed: true, source: 'memory' });
    // A repeat during the outage is known as one and takes nothing more back.
    expect(await report(a, inMemory[0]!.decisionId, 'verified')).toMatchObject({ duplicate: true });
    expect((await consume(a, `${range}104`)).allowed).toBe(true);
    expect(await check(a, `${range}105`)).toMatchObject({ allowed: false, rule: RULE });

    // Stopped during the outage: the next daemon takes the spool over, decisions and outcome.
    expect((await a.stop('SIGTERM')).code).toBe(0);
    expect(crashSigns(a)).toEqual([]);
    const b = (second = await startDaemon({ databaseUrl: url, env: env() }));
    expect((await health(b.url)).body).toMatchObject({ database: 'down' });
    expect(await report(b, inMemory[0]!.decisionId, 'verified')).toMatchObject({ duplicate: true });

    server = await startEmbeddedPostgres({ dataDir: path.join(tempDir!, 'pg'), fsync: false });
    expect(server.url).toBe(url);
    await waitFor(
      'the daemon to write what it kept',
      async () => {
        const h = await health(b.url);
        return h.body.status === 'ok' && h.body.pendingWrites === 0 ? h : undefined;
      },
      30_000,
    );
    // 2 before the outage + 4 from memory - 1 converted, taken back once.
    expect(await unconverted(range)).toBe(5);
    expect(await report(b, inMemory[0]!.decisionId, 'verified')).toMatchObject({ duplicate: true });
    expect(await unconverted(range)).toBe(5);
    const stored = await sql<{ n: number }>('SELECT count(*)::INTEGER AS n FROM rate_limit_outcomes WHERE decision_id = $1', [inMemory[0]!.decisionId]);
    expect(stored[0]!.n).toBe(1);
    expect(crashSigns(b)).toEqual([]);
  });
});
