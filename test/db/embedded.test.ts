import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgresBinaries, startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded/index.js';

let root: string;
const started: EmbeddedServer[] = [];

async function start(dataDir: string, extra: { port?: number } = {}): Promise<EmbeddedServer> {
  const server = await startEmbeddedPostgres({ dataDir, fsync: false, ...extra });
  started.push(server);
  return server;
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function canConnect(url: string): Promise<boolean> {
  try {
    await query(url, 'SELECT 1');
    return true;
  } catch {
    return false;
  }
}

/** A pid that certainly belonged to a process that is now gone. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  const pid = child.pid!;
  await new Promise((resolve) => child.once('exit', resolve));
  return pid;
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-embedded-test-'));
  // mkdtemp makes it 0700; as root the server runs as `postgres`, which must be able to pass through.
  await fs.chmod(root, 0o711);
});

afterAll(async () => {
  // Owned servers in reverse, so attached handles (no-ops) never outlive their owner's stop.
  for (const server of started.reverse()) await server.stop();
  await fs.rm(root, { recursive: true, force: true });
});

describe('startEmbeddedPostgres', () => {
  let dataDir: string;
  let first: EmbeddedServer;

  it('initialises and starts a cluster that accepts password connections on 127.0.0.1 only', async () => {
    dataDir = path.join(root, 'state', 'pg');
    const messages: string[] = [];
    first = await startEmbeddedPostgres({ dataDir, fsync: false, log: (m) => messages.push(m) });
    started.push(first);

    expect(first.owned).toBe(true);
    expect(first.dataDir).toBe(dataDir);
    expect(messages.some((m) => m.includes('initialising embedded PostgreSQL'))).toBe(true);
    const [row] = await query<{ db: string; port: string; listen: string; dir: string; fsync: string }>(
      first.url,
      `SELECT current_database() AS db, current_setting('port') AS port,
              current_setting('listen_addresses') AS listen, current_setting('data_directory') AS dir,
              current_setting('fsync') AS fsync`,
    );
    expect(row).toEqual({ db: 'ratelimit', port: String(first.port), listen: '127.0.0.1', dir: dataDir, fsync: 'off' });

    // The password is what keeps other local users out: a wrong one must be refused.
    const wrong = new URL(first.url);
    wrong.password = 'not-the-password';
    expect(await canConnect(wrong.toString())).toBe(false);
    const passwordFile = path.join(root, 'state', 'pg.password');
    expect((await fs.stat(passwordFile)).mode & 0o777).toBe(0o600);
    expect(decodeURIComponent(new URL(first.url).password)).toBe((await fs.readFile(passwordFile, 'utf8')).trim());

    if (process.getuid?.() === 0) {
      // postgres refuses root, so the cluster must belong to the unprivileged server user.
      expect((await fs.stat(dataDir)).uid).not.toBe(0);
    }
  });

  it('attaches a second caller to the running server instead of starting another', async () => {
    await query(first.url, 'CREATE TABLE marker (v text)');
    await query(first.url, "INSERT INTO marker VALUES ('from-first')");

    const second = await start(dataDir);
    expect(second.owned).toBe(false);
    expect(second.port).toBe(first.port);
    expect(await query(second.url, 'SELECT v FROM marker')).toEqual([{ v: 'from-first' }]);

    // Stopping an attached handle must leave the owner's server alone.
    await second.stop();
    expect(await canConnect(first.url)).toBe(true);
  });

  it('stops on stop() (idempotently) and keeps the data across a restart on the same port', async () => {
    const port = first.port;
    await Promise.all([first.stop(), first.stop()]);
    await first.stop();
    expect(await canConnect(first.url)).toBe(false);
    await expect(fs.access(path.join(dataDir, 'postmaster.pid'))).rejects.toThrow();

    const again = await start(dataDir);
    expect(again.owned).toBe(true);
    expect(again.port).toBe(port);
    expect(await query(again.url, 'SELECT v FROM marker')).toEqual([{ v: 'from-first' }]);
    await again.stop();
  });

  it('lets two concurrent starts on a fresh directory share one server', async () => {
    const dir = path.join(root, 'race', 'pg');
    const [a, b] = await Promise.all([start(dir), start(dir)]);

    expect([a.owned, b.owned].sort()).toEqual([false, true]);
    expect(a.port).toBe(b.port);
    await query(a.url, 'CREATE TABLE seen (v int)');
    await query(a.url, 'INSERT INTO seen VALUES (42)');
    expect(await query(b.url, 'SELECT v FROM seen')).toEqual([{ v: 42 }]);

    const owner = a.owned ? a : b;
    await owner.stop();
    expect(await canConnect(a.url)).toBe(false);
  });

  it('is not wedged by a lock file left by a killed process', async () => {
    const dir = path.join(root, 'stale-lock', 'pg');
    await fs.mkdir(path.dirname(dir), { recursive: true });
    const lock = path.join(path.dirname(dir), 'pg.lock');
    await fs.writeFile(lock, JSON.stringify({ pid: await deadPid(), host: os.hostname(), token: 'dead' }));

    const server = await start(dir);
    expect(server.owned).toBe(true);
    expect(await canConnect(server.url)).toBe(true);
    await expect(fs.access(lock)).rejects.toThrow(); // released after start
    await server.stop();
  });

  it('is not wedged by a lock directory (the proper-lockfile form) whose holder was killed', async () => {
    const dir = path.join(root, 'stale-lock-dir', 'pg');
    await fs.mkdir(path.dirname(dir), { recursive: true });
    // A killed holder stops refreshing the lock's mtime; the next starter takes it over once it is stale.
    const lock = path.join(path.dirname(dir), 'pg.lock');
    await fs.mkdir(lock);

    const server = await start(dir);
    expect(server.owned).toBe(true);
    expect(await canConnect(server.url)).toBe(true);
    await expect(fs.access(lock)).rejects.toThrow();
    await server.stop();
  });

  it('reports the server log when postgres cannot start', async () => {
    const dir = path.join(root, 'bad-config', 'pg');
    await expect(startEmbeddedPostgres({ dataDir: dir, fsync: false, extraConfig: { shared_buffers: 'not-a-size' } })).rejects.toThrow(
      /failed to start[\s\S]*shared_buffers/,
    );
    await expect(fs.access(path.join(dir, 'postmaster.pid'))).rejects.toThrow();
  });

  it.runIf(process.getuid?.() === 0)('as root, names an ancestor directory the server user cannot enter', async () => {
    const locked = path.join(root, 'locked');
    await fs.mkdir(locked, { mode: 0o700 });
    await fs.chmod(locked, 0o700);
    await expect(startEmbeddedPostgres({ dataDir: path.join(locked, 'state', 'pg'), fsync: false })).rejects.toThrow(`chmod o+x ${locked}`);
    // Diagnosed, not "fixed": directories the operator made keep their mode.
    expect((await fs.stat(locked)).mode & 0o777).toBe(0o700);
  });
});

describe('findPostgresBinaries', () => {
  it('uses RATELIMIT_PG_BINDIR when set', async () => {
    const real = await findPostgresBinaries();
    // A directory that exists only for this test: the result can only come from the variable.
    const custom = path.join(root, 'custom-bin');
    await fs.mkdir(custom, { recursive: true });
    for (const name of ['postgres', 'initdb']) {
      await fs.symlink(path.join(real.bindir, name), path.join(custom, name));
    }
    const found = await findPostgresBinaries({ RATELIMIT_PG_BINDIR: custom, PATH: '' });
    expect(found).toEqual({ bindir: custom, version: real.version });
    expect(found.version).toMatch(/^\d+(\.\d+)*/);
  });

  it('throws an actionable error for a RATELIMIT_PG_BINDIR without PostgreSQL', async () => {
    const empty = path.join(root, 'empty-bin');
    await fs.mkdir(empty, { recursive: true });
    await expect(findPostgresBinaries({ RATELIMIT_PG_BINDIR: empty, PATH: process.env.PATH })).rejects.toThrow(
      new RegExp(`RATELIMIT_PG_BINDIR=${empty}.*postgres`),
    );
  });
});
