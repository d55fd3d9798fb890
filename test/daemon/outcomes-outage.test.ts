// Outcomes reported while the database is down (docs/protocol.md *Outcomes*): acknowledged,
// kept in the spool like decisions made from memory, carried across a daemon restart during the
// outage, and written once the database is back, each decision's outcome counted once.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';
import { assertBuilt, crashSigns, freshNumber, health, postJson, startDaemon, stopAll, waitFor, type DaemonProcess, type Reply } from '../helpers/fixture.js';

let tempDir: string | undefined;
let server: EmbeddedServer | undefined;
let first: DaemonProcess | undefined;
let second: DaemonProcess | undefined;

const env = () => ({
  RATELIMIT_DB_TIMEOUT: '1s',
  RATELIMIT_DATA_DIR: path.join(tempDir!, 'data'),
  RATE_LIMIT_PHONE_MAX: '100',
  RATE_LIMIT_IP_MAX: '1000000',
  RATELIMIT_MESSAGES_PER_SECOND: '1000000',
});

beforeAll(async () => {
  assertBuilt();
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-outcomes-outage-'));
  await fs.chmod(tempDir, 0o711);
  server = await startEmbeddedPostgres({ dataDir: path.join(tempDir, 'pg'), fsync: false });
  first = await startDaemon({ databaseUrl: server.url, env: env() });
});

afterAll(async () => {
  await stopAll([first, second]);
  await server?.stop();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

async function consume(d: DaemonProcess): Promise<Reply> {
  const r = await postJson(d.url, '/v1/consume', { phoneNumber: freshNumber() });
  expect(r.status).toBe(200);
  return r.json as Reply;
}

const report = (d: DaemonProcess, decisionId: unknown, outcome: string, durationMs?: number) =>
  postJson(d.url, '/v1/outcome', { decisionId, outcome, ...(durationMs !== undefined ? { durationMs } : {}) });

describe('outcomes across an outage and a restart', () => {
  it('are acknowledged from the spool, survive the restart and are written once the database is back', async () => {
    const a = first!;
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await consume(a)).decisionId as string);
    const [d1, d2, d3, d4] = ids;
    expect((await report(a, d1, 'answered', 30_000)).status).toBe(200);

    const url = server!.url;
    await server!.stop();
    // The daemon finds the outage at its next statement and decides from memory.
    const fromMemory = await waitFor('a consume decided from memory', async () => {
      const r = await consume(a);
      return r.source === 'memory' ? r : undefined;
    });
    const d5 = fromMemory.decisionId as string;
    expect(d5).toMatch(/^[A-Za-z0-9_-]{100}$/);

    const r2 = await report(a, d2, 'unanswered');
    expect([r2.status, r2.json]).toEqual([200, { type: 'rate_limit_outcome_recorded', decisionId: d2, duplicate: false }]);
    expect(((await report(a, d2, 'unanswered')).json as Reply).duplicate).toBe(true);
    const conflict = await report(a, d2, 'failed');
    expect([conflict.status, (conflict.json as Reply).code]).toEqual([400, 'invalid_message']);
    expect((await report(a, d5, 'verified')).status).toBe(200);
    // Already in the database before the outage: taken again now, written once.
    expect((await report(a, d1, 'answered', 30_000)).status).toBe(200);
    expect((await health(a.url)).body).toMatchObject({ database: 'down' });
    expect((await health(a.url)).body.pendingWrites as number).toBeGreaterThanOrEqual(3);

    // Stopped during the outage: what it kept stays in the spool for the next daemon.
    const exit = await a.stop('SIGTERM');
    expect(exit.code).toBe(0);
    expect(crashSigns(a)).toEqual([]);

    const b = (second = await startDaemon({ databaseUrl: url, env: env() }));
    expect((await health(b.url)).body).toMatchObject({ database: 'down' });
    // It took the spool over: a repeat is still known as one, a conflict still refused.
    expect(((await report(b, d2, 'unanswered')).json as Reply).duplicate).toBe(true);
    expect((await report(b, d2, 'failed')).status).toBe(400);
    expect((await report(b, d3, 'failed')).status).toBe(200);

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

    const pool = new pg.Pool({ connectionString: url, max: 1 });
    try {
      const { rows } = await pool.query<{ decision_id: string; outcome: string; duration_ms: number | null; source: string }>(
        'SELECT decision_id, outcome, duration_ms, source FROM rate_limit_outcomes',
      );
      const byId = new Map(rows.map((r) => [r.decision_id, r]));
      expect(rows).toHaveLength(4);
      expect(byId.get(d1!)).toMatchObject({ outcome: 'answered', duration_ms: 30_000 });
      expect(byId.get(d2!)).toMatchObject({ outcome: 'unanswered' });
      expect(byId.get(d3!)).toMatchObject({ outcome: 'failed' });
      expect(byId.get(d5)).toMatchObject({ outcome: 'verified', source: 'http' });
      expect(byId.has(d4!)).toBe(false);
    } finally {
      await pool.end();
    }
    // And once written, the database answers repeats and conflicts itself.
    expect(((await report(b, d3, 'failed')).json as Reply).duplicate).toBe(true);
    expect((await report(b, d5, 'failed')).status).toBe(400);
    expect(crashSigns(b)).toEqual([]);
  });
});
