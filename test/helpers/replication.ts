// A primary and a synchronous streaming standby on loopback, from the PostgreSQL server binaries
// the embedded database uses (src/db/embedded/), for failover tests. Trust authentication on
// loopback only: throwaway clusters in a private temp dir. As root, everything runs as `postgres`.

import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import getPort from 'get-port';
import pg from 'pg';
import { vi } from 'vitest';
import { findPostgresBinaries } from '../../src/db/embedded/index.js';
import { serverUser } from '../../src/db/embedded/os-user.js';

export interface PgNode {
  port: number;
  url(database: string): string;
  /** pg_ctl stop: 'immediate' is a crash (no shutdown checkpoint, connections cut). */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** pg_ctl promote -w: a standby becomes a primary. */
  promote(): Promise<void>;
}

export interface Replication {
  /** A primary (with `database` created) and its synchronous standby, both running. */
  pair(database: string): Promise<{ primary: PgNode; standby: PgNode }>;
  cleanup(): Promise<void>;
}

export async function replication(): Promise<Replication> {
  const binaries = await findPostgresBinaries(process.env);
  const user = await serverUser(() => undefined);
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-replication-'));
  await fs.chmod(root, 0o755);
  if (user) await fs.chown(root, user.uid, user.gid);
  const bin = (name: string) => path.join(binaries.bindir, name);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  const run = (command: string, args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(command, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], ...(user ? { uid: user.uid, gid: user.gid } : {}) });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`${path.basename(command)} ${args.join(' ')} failed (${code}):\n${out.slice(-2000)}`)),
      );
    });
  const template = path.join(root, 'template');
  await run(bin('initdb'), ['-D', template, '-U', 'postgres', '--auth=trust', '--no-sync', '--locale=C', '--encoding=UTF8']);
  let n = 0;
  const running = new Set<string>();

  const node = (dir: string, port: number): PgNode => ({
    port,
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    stop: async (mode = 'fast') => {
      if (!running.has(dir)) return;
      running.delete(dir);
      await run(bin('pg_ctl'), ['-D', dir, '-m', mode, '-w', 'stop']);
    },
    promote: () => run(bin('pg_ctl'), ['-D', dir, '-w', 'promote']),
  });
  const start = async (dir: string) => {
    await run(bin('pg_ctl'), ['-D', dir, '-l', path.join(dir, 'server.log'), '-w', '-t', '30', 'start']);
    running.add(dir);
  };
  const settings = (port: number) =>
    [
      `port = ${port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${root}'`,
      'fsync = off',
      'max_connections = 100',
      // Every commit waits for the standby: a promotion loses nothing that was acknowledged.
      "synchronous_standby_names = '*'",
      'wal_level = replica',
      'max_wal_senders = 4',
      '',
    ].join('\n');

  return {
    async pair(database) {
      const i = ++n;
      const primaryDir = path.join(root, `primary-${i}`);
      const standbyDir = path.join(root, `standby-${i}`);
      await run('cp', ['-a', template, primaryDir]);
      const [pPort, sPort] = [await getPort({ host: '127.0.0.1' }), await getPort({ host: '127.0.0.1' })];
      await fs.appendFile(path.join(primaryDir, 'postgresql.conf'), settings(pPort));
      await start(primaryDir);
      const primary = node(primaryDir, pPort);
      await run(bin('pg_basebackup'), ['-h', '127.0.0.1', '-p', String(pPort), '-U', 'postgres', '-D', standbyDir, '-R', '-X', 'stream', '--no-sync']);
      // Once promoted it has no standby of its own: commits must not wait for one.
      await fs.appendFile(path.join(standbyDir, 'postgresql.conf'), `port = ${sPort}\nsynchronous_standby_names = ''\n`);
      await start(standbyDir);
      const standby = node(standbyDir, sPort);
      const c = new pg.Client({ connectionString: primary.url('postgres') });
      await c.connect();
      try {
        await vi.waitFor(
          async () => {
            if ((await c.query("SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'")).rowCount === 0) {
              throw new Error('the standby did not become synchronous within 20 s');
            }
          },
          { timeout: 20_000, interval: 50 },
        );
        await c.query(`CREATE DATABASE ${database}`);
      } finally {
        await c.end();
      }
      return { primary, standby };
    },
    async cleanup() {
      for (const dir of [...running]) {
        running.delete(dir);
        await run(bin('pg_ctl'), ['-D', dir, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      }
      await fs.rm(root, { recursive: true, force: true });
    },
  };
}
