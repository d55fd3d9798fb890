// The spool's scope: an HMAC under the key of the database's id (never a plain hash of URL and
// key), found through an index for a daemon that starts while the database is down.

import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Spool } from '../../../src/daemon/engine/spool.js';
import type { DecisionEvent } from '../../../src/db/decisions.js';

const KEY = 'spool-scope-test-key-0123456789abcdef';
const logger = pino({ level: 'silent' });
let dataDir = '';

beforeEach(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-spool-scope-'));
});
afterEach(async () => {
  await fs.rm(dataDir, { recursive: true, force: true });
});

const event = (hash: string): DecisionEvent => ({ hash, region: 'US', masked: '+1 415-555-••••', atMs: Date.now(), allowed: true, counters: [] });
const open = (databaseUrl: string, databaseId?: string, instanceId = `i${Math.random()}`) =>
  Spool.open({ dataDir, scope: { databaseUrl, phoneKey: KEY, ...(databaseId ? { databaseId } : {}) }, instanceId, maxBytes: 1 << 20, logger });

/** Leaves one unwritten event in a spool and closes it, as a daemon stopped during an outage does. */
async function leave(spool: Spool, hash: string): Promise<void> {
  await spool.append([event(hash)]).durable;
  expect(await spool.close()).toBe(1);
}

async function adopted(spool: Spool): Promise<string[]> {
  const hashes: string[] = [];
  await spool.takeOver(async (events) => {
    hashes.push(...events.map((e) => e.hash));
  });
  return hashes;
}

describe('spool scope', () => {
  it('a new URL to the same database (a promoted standby) takes over the spool', async () => {
    await leave(await open('postgres://u:p@old-primary/db', 'db-id-1'), 'h1');
    const next = await open('postgres://u:p@new-primary/db', 'db-id-1');
    expect(await adopted(next)).toStrictEqual(['h1']);
    await next.close();
  });

  it('another database, or another key, never does', async () => {
    await leave(await open('postgres://u:p@h/db', 'db-id-1'), 'h1');
    const other = await open('postgres://u:p@h/db', 'db-id-2');
    expect(await adopted(other)).toStrictEqual([]);
    await other.close();
    const otherKey = await Spool.open({
      dataDir,
      scope: { databaseUrl: 'postgres://u:p@h/db', phoneKey: `${KEY}-other`, databaseId: 'db-id-1' },
      instanceId: 'k',
      maxBytes: 1 << 20,
      logger,
    });
    expect(await adopted(otherKey)).toStrictEqual([]);
    await otherKey.close();
  });

  it('the directory name is neither a plain hash of URL and key nor the id, and the index holds no URL or id in the clear', async () => {
    const url = 'postgres://u:secret@h/db';
    const s = await open(url, 'db-id-1');
    const name = path.basename(s.dir);
    expect(name).toMatch(/^[0-9a-f]{32}$/);
    expect(name).not.toBe(createHash('sha256').update(`${url}\0${KEY}`).digest('hex').slice(0, 16));
    expect(name).not.toContain('db-id-1');
    const index = await fs.readFile(path.join(dataDir, 'spool-index.json'), 'utf8');
    expect(index).not.toMatch(/secret|db-id-1|postgres/);
    await s.close();
  });

  it('started while the database is down: a URL seen before finds its spool through the index', async () => {
    await leave(await open('postgres://u:p@h/db', 'db-id-1'), 'h1');
    const down = await open('postgres://u:p@h/db');
    expect(await adopted(down)).toStrictEqual(['h1']);
    expect(await down.identify('db-id-1')).toBe(true);
    await down.close();
  });

  it('an unknown URL spools provisionally; identify() then adds the database scope, and the provisional spool is found by the next daemon with that URL', async () => {
    await leave(await open('postgres://u:p@old/db', 'db-id-1'), 'h-old');
    const fresh = await open('postgres://u:p@new/db');
    expect(await adopted(fresh)).toStrictEqual([]);
    expect(await fresh.identify('db-id-1')).toBe(true);
    expect(await adopted(fresh)).toStrictEqual(['h-old']);
    await leave(fresh, 'h-provisional');
    const again = await open('postgres://u:p@new/db', 'db-id-1');
    expect(await adopted(again)).toStrictEqual(['h-provisional']);
    await again.close();
  });

  it('a spool assumed from the index for a URL that now reaches another database is refused', async () => {
    await leave(await open('postgres://u:p@h/db', 'db-id-1'), 'h1');
    const down = await open('postgres://u:p@h/db');
    expect(await down.identify('db-id-2')).toBe(false);
    await down.close();
  });
});
