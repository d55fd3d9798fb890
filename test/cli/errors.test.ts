// One error vocabulary for the daemon and the CLI, and help that says how to reach production
// (issue #13 parts 4 and 7), through the real binary as an operator runs it.
// `npm test` builds dist/ first (pretest), which bin/ratelimit.js runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPool, type Pool } from '../../src/db/pool.js';
import { seedConsumes } from '../helpers/seed.js';
import { hashPhone, maskPhone } from '../../src/core/phone.js';
import { makeLogPolicy } from '../../src/core/policy/log.js';
import { GENERATE_KEY_HINT, GENERATE_TOKEN_HINT } from '../../src/core/key.js';
import { startEmbeddedPostgres } from '../../src/db/embedded/index.js';
import { createTestDatabase } from '../helpers/fixture.js';

const ROOT = join(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin', 'ratelimit.js');
const KEY = 'cli-errors-test-key-0123456789abcdefghij';
const NUMBER = '+14155552671';
/** The one time format people read: ISO 8601 UTC to the second. */
const ISO = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function env(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, PHONE_ENCRYPTION_KEY: KEY, LOG_LEVEL: 'info', ...extra };
}

function run(args: string[], extra: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: env(extra), timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** `serve` until it exits by itself, or until it logs that it listens (then SIGTERM). */
async function serve(args: string[], extra: Record<string, string | undefined>): Promise<Run & { log: Array<Record<string, unknown>> }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], { env: env(extra), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let stopping = false;
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    // Once: a second signal means "exit now" to serve.
    if (!stopping && stdout.includes('ratelimit listening on')) stopping = child.kill('SIGTERM');
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 50_000);
  const [exitCode] = (await once(child, 'exit')) as [number | null];
  clearTimeout(killer);
  const log = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code: exitCode ?? 1, stdout, stderr, log };
}

function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

let db: { url: string; drop(): Promise<void> };
let pool: Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 2 });
  expect((await run(['db', 'init'], { DATABASE_URL: db.url })).code).toBe(0);
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

describe('one error vocabulary for serve and the admin commands', () => {
  it('a refused password: serve logs the same actionable line the CLI prints, and exits 1', async () => {
    const bad = withPassword(db.url, 'wrong-password');
    const cli = await run(['stats'], { DATABASE_URL: bad });
    expect(cli.code).toBe(1);
    const line = cli.stderr.trim();
    expect(line).toMatch(/^ratelimit: PostgreSQL at postgres:\/\/.*:\*\*\*@.* refused the user name or password; check both in DATABASE_URL/);

    const daemon = await serve([], { DATABASE_URL: bad });
    expect(daemon.code).toBe(1);
    const fatal = daemon.log.filter((l) => l.level === 60);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toMatchObject({ code: 'database_auth', msg: line.replace(/^ratelimit: /, '') });
    // And the same one line on stderr, for whoever started it by hand.
    expect(daemon.stderr.trim()).toBe(line);
    for (const out of [cli.stderr, daemon.stdout, daemon.stderr]) {
      expect(out).not.toMatch(/password authentication failed/);
      expect(out).not.toContain('wrong-password');
    }
  });

  it('a port in use: serve exits 1 and suggests --port or PORT', async () => {
    const blocker = createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    try {
      const { port } = blocker.address() as AddressInfo;
      const daemon = await serve(['--port', String(port)], { DATABASE_URL: db.url });
      expect(daemon.code).toBe(1);
      const fatal = daemon.log.find((l) => l.level === 60);
      expect(fatal).toMatchObject({ code: 'port_in_use' });
      expect(fatal!.msg).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}.*already in use.*--port or PORT`));
      expect(daemon.stderr.trim()).toBe(`ratelimit: ${fatal!.msg}`);
      expect(daemon.stdout + daemon.stderr).not.toMatch(/EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });

  it('a bad setting names the flag as typed, or the variable', async () => {
    const flag = await run(['stats', '--phone-limit', 'abc'], { DATABASE_URL: db.url });
    expect(flag.code).toBe(2);
    expect(flag.stderr.trim()).toBe('ratelimit: --phone-limit must be an integer from 1 to 1000, got "abc"');
    const variable = await run(['stats'], { DATABASE_URL: db.url, RATE_LIMIT_PHONE_WINDOW: 'soon' });
    expect(variable.code).toBe(2);
    expect(variable.stderr).toMatch(/^ratelimit: RATE_LIMIT_PHONE_WINDOW must be a duration/);
    const daemon = await serve(['--ip-window', 'later'], { DATABASE_URL: db.url });
    expect(daemon.code).toBe(1);
    expect(daemon.stderr).toMatch(/--ip-window must be a duration/);
    for (const out of [flag.stderr, variable.stderr, daemon.stderr]) expect(out).not.toMatch(/\((flag|env)\)/);
  });

  it('the key hint (and the token hint) is one and the same everywhere', async () => {
    const hints = new Set<string>();
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) await walk(path);
        else if (entry.name.endsWith('.js')) for (const m of (await readFile(path, 'utf8')).matchAll(/openssl rand[^'"`)\n]*/g)) hints.add(m[0]);
      }
    };
    await walk(join(ROOT, 'dist', 'src'));
    expect([...hints].sort()).toEqual([GENERATE_KEY_HINT, GENERATE_TOKEN_HINT].map((h) => h.replace(/^generate one with: /, '')).sort());
    // Both places that ask for a key give it.
    const noKey = await run(['hash', NUMBER], { DATABASE_URL: db.url, PHONE_ENCRYPTION_KEY: undefined });
    const production = await run(['hash', NUMBER], { NODE_ENV: 'production', PHONE_ENCRYPTION_KEY: undefined });
    for (const r of [noKey, production]) {
      expect(r.code).toBeGreaterThan(0);
      expect(r.stderr).toContain(GENERATE_KEY_HINT);
    }
  });

  it("migrations are named as their files, 001_seed_schema, by db init and in serve's log", async () => {
    const [forServe, forInit] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    try {
      const daemon = await serve([], { DATABASE_URL: forServe.url });
      expect(daemon.code).toBe(0);
      const applied = daemon.log.find((l) => l.msg === 'applied migrations')?.applied as string[];
      expect(applied[0]).toBe('001_seed_schema');
      for (const name of applied) expect(name).toMatch(/^\d{3}_[a-z0-9_]+$/);
      const init = await run(['db', 'init', '--json'], { DATABASE_URL: forInit.url });
      expect(init.code).toBe(0);
      expect((JSON.parse(init.stdout) as { applied: string[] }).applied).toEqual(applied);
    } finally {
      await Promise.all([forServe.drop(), forInit.drop()]);
    }
  });

  it('status and reset print times alike: ISO 8601 UTC with Z, plus "in 43m" where useful', async () => {
    const policy = makeLogPolicy([{ id: 'phone', limit: 2, windowMs: 3_600_000 }]);
    const req = { hash: hashPhone(NUMBER, KEY), region: 'US', masked: maskPhone(NUMBER) };
    await seedConsumes(pool, [req, req], policy);
    const status = await run(['status', NUMBER], { DATABASE_URL: db.url });
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`${ISO.source} \\(in \\d`));
    expect(status.stdout).toMatch(new RegExp(`last call\\s*│ ${ISO.source} \\(`));
    const reset = await run(['reset', NUMBER], { DATABASE_URL: db.url });
    expect(reset.code).toBe(0);
    expect(reset.stdout).toMatch(new RegExp(`at\\s*│ ${ISO.source} `));
    const after = await run(['status', NUMBER], { DATABASE_URL: db.url });
    expect(after.stdout).toMatch(new RegExp(`last reset\\s*│ ${ISO.source} by`));
    for (const out of [status.stdout, reset.stdout, after.stdout]) {
      // No second format: no milliseconds, no space between date and time.
      expect(out).not.toMatch(/\d\d:\d\d\.\d{3}Z|\d{4}-\d\d-\d\d \d\d:/);
    }
  });

  it('serve attaching to a running embedded PostgreSQL says so once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ratelimit-attach-'));
    // As root the server runs as `postgres`, which must be able to pass through.
    await chmod(dir, 0o711);
    const owner = await startEmbeddedPostgres({ dataDir: join(dir, 'pg'), fsync: false });
    try {
      const daemon = await serve(['--data-dir', dir], {});
      expect(daemon.code).toBe(0);
      expect(daemon.log.filter((l) => String(l.msg).startsWith('attached to the running embedded PostgreSQL'))).toHaveLength(1);
    } finally {
      await owner.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('help that tells support staff how to reach production', () => {
  /** Every runnable command and its --help, found from the help itself, so a command added later is covered too. */
  async function commandHelps(prefix: string[] = []): Promise<Array<[path: string, help: Run]>> {
    const help = await run([...prefix, '--help']);
    const section = help.stdout.split(/^Commands:$/m)[1];
    if (section === undefined) return [[prefix.join(' '), help]];
    const names = [...section.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
    const found: Array<[string, Run]> = [];
    for (const name of names) found.push(...(await commandHelps([...prefix, name])));
    return found;
  }

  it("every command's --help lists --database-url and --data-dir", async () => {
    const helps = await commandHelps();
    expect(helps.map(([path]) => path)).toEqual(expect.arrayContaining(['serve', 'db init', 'status', 'policy apply', 'list']));
    for (const [path, help] of helps) {
      expect(help.code, path).toBe(0);
      expect(help.stdout, path).toContain('--database-url');
      expect(help.stdout, path).toContain('--data-dir');
    }
  });

  it('serve --help lists the auth variables and every other one the daemon reads', async () => {
    const help = (await run(['serve', '--help'])).stdout;
    for (const name of ['RATELIMIT_API_TOKENS', 'ALLOWED_ORIGINS', 'RATELIMIT_TRUST_PROXY']) expect(help).toContain(name);
    // README's configuration table, less what only the admin commands read.
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const documented = [...readme.matchAll(/^\| `([A-Z][A-Z0-9_]+)`/gm)]
      .map((m) => m[1]!)
      .filter((n) => n !== 'RATELIMIT_OPERATOR' && n !== 'RATELIMIT_CLI_TIMEOUT');
    expect(documented.length).toBeGreaterThan(15);
    for (const name of documented) expect(help, name).toContain(name);
  });

  it('a usage error points at the help of the command that was mistyped', async () => {
    const cases: Array<[string[], string]> = [
      [['status'], 'ratelimit status --help'],
      [['policy', 'apply'], 'ratelimit policy apply --help'],
      [['db', 'init', '--no-such-flag'], 'ratelimit db init --help'],
      [['--database-url', 'postgres://x/y', 'reset'], 'ratelimit reset --help'],
    ];
    for (const [args, hint] of cases) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toContain(hint);
    }
    expect((await run(['frobnicate'])).stderr).toContain('ratelimit --help');
  });

  it('with --json, any failure prints one JSON error document on stdout as well as the stderr line', async () => {
    const invalid = await run(['status', 'abc', '--json']);
    expect(invalid.code).toBe(2);
    expect(JSON.parse(invalid.stdout)).toEqual({ error: { code: 'invalid_phone_number', message: expect.stringMatching(/letters/) } });
    expect(invalid.stderr).toMatch(/^ratelimit: phone number contains letters/);

    const missing = await run(['reset', '--json']);
    expect(missing.code).toBe(2);
    expect(JSON.parse(missing.stdout).error.code).toBe('invalid_usage');

    const unreachable = 'postgres://nobody:secret@127.0.0.1:1/none';
    for (const args of [['stats'], ['list'], ['policy', 'show'], ['status', NUMBER], ['db', 'init']]) {
      const r = await run([...args, '--json'], { DATABASE_URL: unreachable });
      expect(r.code, args.join(' ')).toBe(1);
      const doc = JSON.parse(r.stdout) as { error: { code: string; message: string } };
      expect(doc.error.code, args.join(' ')).toBe('database_unreachable');
      expect(`ratelimit: ${doc.error.message}`).toBe(r.stderr.trim());
    }
    // Without --json, stdout stays empty on failure.
    expect((await run(['status', 'abc'])).stdout).toBe('');
  });
});
