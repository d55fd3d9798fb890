// A real PgBouncer (the Debian package) on loopback in front of a test PostgreSQL, configured
// with its defaults but for what a test must set: where it listens, where the databases are and
// how it logs in to them (auth_type = any: clients are not checked, the server login is in the
// [databases] line). Run as `postgres` when we are root: PgBouncer refuses to run as root.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import getPort from 'get-port';
import pg from 'pg';
import { SERVER_OS_USER, serverUser } from '../../src/db/embedded/os-user.js';

export const PGBOUNCER = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => spawnSync(p, ['--version']).status === 0);

export interface PgBouncer {
  port: number;
  /** `url` (a database on the server behind) as reached through PgBouncer. */
  through(url: string): string;
  /** Points every database at another server (rewrites the ini, then reloads: SIGHUP). */
  repoint(host: string, port: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startPgBouncer(opts: { server: string; poolMode?: 'session' | 'transaction'; extra?: Record<string, string> }): Promise<PgBouncer> {
  if (!PGBOUNCER) throw new Error('pgbouncer is not installed (apt-get install pgbouncer; .ci/run does it)');
  const server = new URL(opts.server);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ratelimit-pgbouncer-'));
  await fs.chmod(dir, 0o755);
  const port = await getPort({ host: '127.0.0.1' });
  const ini = path.join(dir, 'pgbouncer.ini');
  const write = async (host: string, serverPort: number) => {
    const login = `user=${decodeURIComponent(server.username)}${server.password ? ` password=${decodeURIComponent(server.password)}` : ''}`;
    const settings: Record<string, string> = {
      listen_addr: '127.0.0.1',
      listen_port: String(port),
      unix_socket_dir: '',
      auth_type: 'any',
      ...(opts.poolMode ? { pool_mode: opts.poolMode } : {}),
      ...opts.extra,
    };
    const text = [
      '[databases]',
      `* = host=${host} port=${serverPort} ${login}`,
      '',
      '[pgbouncer]',
      ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
      '',
    ].join('\n');
    await fs.writeFile(ini, text, { mode: 0o644 });
  };
  await write(server.hostname, Number(server.port));
  // Creates the `postgres` user where it is missing (a CI container with TEST_DATABASE_URL).
  const user = await serverUser(() => undefined);
  const asPostgres = user ? ['-u', SERVER_OS_USER] : [];
  const child: ChildProcess = spawn(PGBOUNCER, [...asPostgres, ini], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Ready once it accepts a login and reaches the server behind it.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const probe = new pg.Client({ connectionString: through(opts.server, port), connectionTimeoutMillis: 2_000 });
    try {
      await probe.connect();
      await probe.query('SELECT 1');
      await probe.end();
      break;
    } catch (err) {
      await probe.end().catch(() => undefined);
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`pgbouncer did not start: ${(err as Error).message}\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    port,
    through: (url) => through(url, port),
    async repoint(host, serverPort) {
      await write(host, serverPort);
      child.kill('SIGHUP');
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGINT');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

function through(url: string, port: number): string {
  const u = new URL(url);
  u.hostname = '127.0.0.1';
  u.port = String(port);
  return u.toString();
}
