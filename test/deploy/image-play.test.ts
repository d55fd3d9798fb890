// The Dockerfile's runtime stage played on this machine, without a container engine: its ENV,
// WORKDIR, COPY and data-dir lines are read from the Dockerfile itself and reproduced under a
// scratch root (container path /x is <root>/x), its production dependencies installed the way
// the stage installs them, its files owned by root and read-only for the process, which runs as
// an unprivileged OS user standing in for the stage's USER. Then `ratelimit serve` must answer
// /health with the database up. Only PORT (0: any free port) and HOST (loopback: tests never
// listen on the network) differ from the image, plus the secrets a deployment sets.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cp, chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migratedTestDatabase } from '../helpers/fixture.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const KEY = 'image-play-key-0123456789abcdefghijklmnopqrstuvwxyz';
const TOKEN = 'image-play-token-0123456789abcdef';
/** A throwaway user for the stage's USER when the machine has no user of that name. */
const STAND_IN_USER = 'ratelimit-image';
const START_TIMEOUT_MS = 60_000;

// ------------------------------------------------------------------ the Dockerfile, read

/** Instructions with continuation lines joined and comments dropped. */
function instructions(text: string): string[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** Shell-like words: whitespace-separated, double or single quotes grouping. */
function words(text: string): string[] {
  return [...text.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

interface RuntimeStage {
  env: Record<string, string>;
  workdir: string;
  user: string;
  /** [source in the repository (the build stage's /app is the repository built), destination in the image]. */
  copies: Array<[string, string]>;
  npmCi: string[] | undefined;
  /** `install -d -o U -g G -m MODE DIR` lines: directories made for the runtime user. */
  dirs: Array<{ owner: string; mode: number; path: string }>;
  cmd: string[];
  entrypoint: string[];
  links: Array<[target: string, link: string]>;
}

function runtimeStage(dockerfile: string): RuntimeStage {
  const lines = instructions(dockerfile);
  const lastFrom = lines
    .map((l, i) => (/^FROM\s/i.test(l) ? i : -1))
    .filter((i) => i >= 0)
    .at(-1)!;
  const stage: RuntimeStage = { env: {}, workdir: '/', user: 'root', copies: [], npmCi: undefined, dirs: [], cmd: [], entrypoint: [], links: [] };
  for (const line of lines.slice(lastFrom + 1)) {
    const [op, ...rest] = words(line);
    const arg = line.slice(op!.length).trim();
    switch (op!.toUpperCase()) {
      case 'ENV':
        if (rest.every((w) => w.includes('='))) {
          for (const w of words(arg)) stage.env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
        } else {
          stage.env[rest[0]!] = rest.slice(1).join(' ');
        }
        break;
      case 'WORKDIR':
        stage.workdir = posix.resolve(stage.workdir, rest[0]!);
        break;
      case 'USER':
        stage.user = rest[0]!.split(':')[0]!;
        break;
      case 'COPY': {
        const from = rest.find((w) => w.startsWith('--from='));
        const paths = rest.filter((w) => !w.startsWith('--'));
        const destWord = paths.pop()!;
        const dest = posix.resolve(stage.workdir, destWord);
        // Docker: several sources, or a destination ending in '/', copy into a directory.
        const intoDir = paths.length > 1 || destWord.endsWith('/');
        for (const src of paths) {
          // The build stage copies the repository into /app and builds there.
          const repoPath = from ? posix.relative('/app', src) : src;
          stage.copies.push([repoPath, intoDir ? posix.join(dest, posix.basename(src)) : dest]);
        }
        break;
      }
      case 'RUN':
        for (const command of arg.split(/\s*&&\s*/)) {
          const w = words(command);
          if (w[0] === 'npm' && w[1] === 'ci') stage.npmCi = w.slice(1);
          if (w[0] === 'ln' && w[1] === '-s') stage.links.push([w[2]!, w[3]!]);
          if (w[0] === 'install' && w.includes('-d')) {
            const opt = (flag: string) => w[w.indexOf(flag) + 1];
            stage.dirs.push({ owner: opt('-o') ?? 'root', mode: Number.parseInt(opt('-m') ?? '755', 8), path: w.at(-1)! });
          }
        }
        break;
      case 'CMD':
        stage.cmd = JSON.parse(arg) as string[];
        break;
      case 'ENTRYPOINT':
        stage.entrypoint = JSON.parse(arg) as string[];
        break;
    }
  }
  return stage;
}

// ------------------------------------------------------------------ this machine

async function uidOf(name: string): Promise<{ uid: number; gid: number } | undefined> {
  try {
    return { uid: Number((await run('id', ['-u', name])).stdout.trim()), gid: Number((await run('id', ['-g', name])).stdout.trim()) };
  } catch {
    return undefined;
  }
}

/** Root (CI): the stage's user if it exists here, else a throwaway system user. Otherwise: ourselves. */
async function runtimeUser(name: string): Promise<{ uid: number; gid: number; root: boolean }> {
  if (process.getuid?.() !== 0) return { uid: process.getuid!(), gid: process.getgid!(), root: false };
  const existing = (await uidOf(name)) ?? (await uidOf(STAND_IN_USER));
  if (existing && existing.uid !== 0) return { ...existing, root: true };
  await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', STAND_IN_USER]).catch((err: { code?: number }) => {
    if (err.code !== 9) throw err; // 9: created meanwhile by a parallel run
  });
  return { ...(await uidOf(STAND_IN_USER))!, root: true };
}

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules') continue;
    const p = join(dir, entry.name);
    out.push(p);
    if (entry.isDirectory()) out.push(...(await listTree(p)));
  }
  return out.sort();
}

interface Played {
  child: ChildProcess;
  port: Promise<number>;
  exit: Promise<number | null>;
  output: () => string;
}

function play(argv: string[], cwd: string, env: NodeJS.ProcessEnv, user: { uid: number; gid: number; root: boolean }): Played {
  const child = spawn(argv[0]!, argv.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], ...(user.root ? { uid: user.uid, gid: user.gid } : {}) });
  let text = '';
  child.stderr!.on('data', (c: Buffer) => (text += c.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const port = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start:\n${text}`)), START_TIMEOUT_MS);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      text += `${line}\n`;
      try {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg?.startsWith('ratelimit listening') && entry.port) {
          clearTimeout(timer);
          resolve(entry.port);
        }
      } catch {
        // not a log line
      }
    });
    void exit.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited ${code}:\n${text}`));
    });
  });
  port.catch(() => undefined);
  return { child, port, exit, output: () => text };
}

// ------------------------------------------------------------------ the test

const db = migratedTestDatabase({ max: 1 });
const stage = runtimeStage(await readFile(join(ROOT, 'Dockerfile'), 'utf8'));
let scratch: string;
let user: { uid: number; gid: number; root: boolean };
const inImage = (p: string) => join(scratch, p);
const live = new Set<ChildProcess>();

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'ratelimit-image-'));
  // mkdtemp makes 0700; the runtime user must pass through our scratch root.
  await chmod(scratch, 0o755);
  user = await runtimeUser(stage.user);
  const app = inImage(stage.workdir);
  await mkdir(app, { recursive: true });
  for (const [src, dest] of stage.copies) await cp(join(ROOT, src), inImage(dest), { recursive: true });
  // The stage's own dependency install, from the npm cache when it can (no scripts, as in the image).
  await run('npm', [...(stage.npmCi ?? []), '--prefer-offline', '--no-audit', '--no-fund'], {
    cwd: app,
    timeout: 240_000,
    env: { ...process.env, npm_config_loglevel: 'error' },
  });
  for (const d of stage.dirs) {
    await mkdir(inImage(d.path), { recursive: true });
    if (d.owner !== 'root' && user.root) await chown(inImage(d.path), user.uid, user.gid);
    await chmod(inImage(d.path), d.mode);
  }
  // Root-owned when we are root (as in the image); read-only for the process either way.
  if (!user.root) await run('chmod', ['-R', 'a-w', app]);
}, 300_000);

afterAll(async () => {
  for (const c of live) c.kill('SIGKILL');
  if (scratch) {
    if (!user?.root) await run('chmod', ['-R', 'u+w', scratch]).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  }
});

function imageEnv(overrides: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
  for (const [k, v] of Object.entries(stage.env)) env[k] = v.startsWith('/') ? inImage(v) : v;
  Object.assign(env, { PORT: '0', HOST: '127.0.0.1' }, overrides);
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  return env;
}

/** The image's command: ENTRYPOINT (tini, which only forwards signals) then CMD, `ratelimit` resolved through the stage's symlink. */
function command(): string[] {
  const [bin, ...args] = stage.cmd;
  const link = stage.links.find(([, l]) => posix.basename(l) === bin);
  expect(link, `CMD ${bin} is put on PATH by a symlink in the stage`).toBeDefined();
  return [process.execPath, inImage(link![0]), ...args];
}

describe('the Dockerfile runtime stage, played without a container engine', { timeout: 120_000 }, () => {
  it('is what this test reproduces: production, a non-root user, a data dir for it', () => {
    expect(stage.env.NODE_ENV).toBe('production');
    expect(stage.user).not.toMatch(/^(root|0)$/);
    expect(stage.env.RATELIMIT_DATA_DIR).toBeDefined();
    const dataDir = stage.dirs.find((d) => d.path === stage.env.RATELIMIT_DATA_DIR);
    expect(dataDir, 'the stage creates RATELIMIT_DATA_DIR').toBeDefined();
    expect(dataDir!.owner).toBe(stage.user);
    expect(dataDir!.mode).toBe(0o700);
    expect(stage.entrypoint[0]).toMatch(/tini$/);
    expect(stage.copies.map(([, d]) => d)).toEqual(expect.arrayContaining(['/app/dist', '/app/bin', '/app/src/db/migrations']));
  });

  it('serve starts as that user in the read-only app dir and answers /health with the database up', async () => {
    const app = inImage(stage.workdir);
    const before = await listTree(app);
    const served = play(command(), app, imageEnv({ DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY, RATELIMIT_API_TOKENS: TOKEN }), user);
    live.add(served.child);
    try {
      const port = await served.port;
      await expect
        .poll(
          async () => {
            const res = await fetch(`http://127.0.0.1:${port}/health`);
            return { status: res.status, body: (await res.json()) as { status: string; database: string } };
          },
          { timeout: 30_000 },
        )
        .toMatchObject({ status: 200, body: { status: 'ok', database: 'up' } });

      // Production: the token is required, and works as a bearer header.
      const consume = (headers: Record<string, string>) =>
        fetch(`http://127.0.0.1:${port}/v1/consume`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ phoneNumber: '+14155552671' }),
        });
      expect((await consume({})).status).toBe(401);
      expect((await consume({ authorization: `Bearer ${TOKEN}` })).status).toBe(200);

      // Its spool lives in the data dir, owned by the runtime user, private to it.
      const dataDir = inImage(stage.env.RATELIMIT_DATA_DIR!);
      const spool = join(dataDir, 'spool');
      const st = await stat(spool);
      expect(st.uid).toBe(user.uid);
      expect(st.mode & 0o777).toBe(0o700);
      expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
      // ...and nothing was written in the app dir.
      expect(await listTree(app)).toEqual(before);
      if (user.root) expect((await lstat(app)).uid).toBe(0);
    } finally {
      served.child.kill('SIGTERM');
      expect(await served.exit).toBe(0);
      live.delete(served.child);
    }
  });

  it('without the data dir (the image before RATELIMIT_DATA_DIR) serve cannot write its spool and exits 1', async () => {
    const app = inImage(stage.workdir);
    const served = play(
      command(),
      app,
      imageEnv({ RATELIMIT_DATA_DIR: undefined, DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: KEY, RATELIMIT_API_TOKENS: TOKEN }),
      user,
    );
    live.add(served.child);
    expect(await served.exit).toBe(1);
    live.delete(served.child);
    expect(served.output()).toMatch(/cannot write the spool in \.\/\.ratelimit/);
  });
});
