// Longer than 350 lines because every branch of the script runs against its own fake account.
// scripts/setup-database.sh run against fake `fly` and `curl` executables (fixtures/bin) that
// record their argv and answer from a per-test state directory: an empty directory is a
// fresh Fly account, and what one run creates is what the next run finds.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MIN_KEY_LENGTH } from '../../src/core/defaults.js';
import { ROUTES } from '../../src/protocol/wire.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts/setup-database.sh');
const FLY_TOML = join(ROOT, 'fly.toml');
const FAKE_BIN = fileURLToPath(new URL('./fixtures/bin', import.meta.url));
/** What the fake `fly postgres attach` puts in DATABASE_URL: must never be echoed. */
const ATTACH_PASSWORD = 'FAKE-ATTACH-PASSWORD';

const flyToml = parse(readFileSync(FLY_TOML, 'utf8')) as { app: string; primary_region: string };
const APP = flyToml.app;
const REGION = flyToml.primary_region;
const PG = `${APP}-db`;

interface FakeState {
  apps?: string[];
  postgres?: string[];
  secrets?: Record<string, Record<string, string>>;
  curlCalls?: number;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  output: string;
  /** argv of every fake fly/curl call, in order, e.g. ["fly", "apps", "list", "--json"]. */
  calls: string[][];
}

const dirs: string[] = [];

function sandbox(initial?: FakeState): string {
  const dir = mkdtempSync(join(tmpdir(), 'ratelimit-deploy-'));
  dirs.push(dir);
  if (initial) writeFileSync(join(dir, 'state.json'), JSON.stringify(initial));
  return dir;
}

function state(dir: string): Required<FakeState> {
  const file = join(dir, 'state.json');
  const s = (existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {}) as FakeState;
  return { apps: [], postgres: [], secrets: {}, curlCalls: 0, ...s };
}

function runScript(dir: string, args: string[] = [], extraEnv: Record<string, string> = {}): Run {
  const log = join(dir, 'calls.log');
  rmSync(log, { force: true });
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Nothing from the developer's shell may steer the script or reach a real Fly account.
  for (const name of Object.keys(env)) {
    if (/^(FLY_|FAKE_|SETUP_)/.test(name) || name === 'PHONE_ENCRYPTION_KEY' || name === 'RATELIMIT_API_TOKENS') {
      delete env[name];
    }
  }
  Object.assign(env, {
    PATH: `${FAKE_BIN}:${dirname(process.execPath)}:${process.env.PATH ?? ''}`,
    FAKE_NODE: process.execPath,
    FAKE_FLY_LOG: log,
    FAKE_FLY_STATE: dir,
    SETUP_HEALTH_INTERVAL: '0',
    // In the sandbox, never in the repository.
    SETUP_TOKEN_FILE: join(dir, 'api-token'),
    ...extraEnv,
  });
  const result = spawnSync('bash', [SCRIPT, ...args], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (result.error) throw result.error;
  const calls = existsSync(log)
    ? readFileSync(log, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as string[])
    : [];
  return {
    status: result.status,
    stdout: result.stdout,
    stderr: result.stderr,
    output: result.stdout + result.stderr,
    calls,
  };
}

const HEALTH = ['curl', '-fsS', '--max-time', '10', `https://${APP}.fly.dev${ROUTES.health}`];
const whoami = ['fly', 'auth', 'whoami'];
const appsList = ['fly', 'apps', 'list', '--json'];
const appsCreate = ['fly', 'apps', 'create', APP, '--org', 'personal'];
const pgList = ['fly', 'postgres', 'list', '--json'];
const pgCreate = [
  'fly',
  'postgres',
  'create',
  '--name',
  PG,
  '--region',
  REGION,
  '--org',
  'personal',
  '--initial-cluster-size',
  '1',
  '--vm-size',
  'shared-cpu-1x',
  '--volume-size',
  '10',
];
const secretsList = ['fly', 'secrets', 'list', '--app', APP, '--json'];
const attach = ['fly', 'postgres', 'attach', PG, '--app', APP];
const importKey = ['fly', 'secrets', 'import', '--app', APP, '--stage'];
/** The token goes through the same stdin import as the key, as its own call. */
const importToken = importKey;
const deploy = ['fly', 'deploy', '--config', FLY_TOML, '--app', APP, '--remote-only'];

const MUTATIONS = new Set(['apps create', 'postgres create', 'postgres attach', 'secrets set', 'secrets import', 'deploy']);
const mutations = (calls: string[][]) => calls.filter(([tool, a, b]) => tool === 'fly' && (MUTATIONS.has(`${a} ${b}`) || MUTATIONS.has(a ?? '')));

beforeAll(() => {
  // Executable bits can be lost by some checkouts; the fakes must run.
  for (const name of ['fly', 'curl']) chmodSync(join(FAKE_BIN, name), 0o755);
});

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

// Each case runs the script once or twice, spawning the fakes ~10 times per run.
describe('scripts/setup-database.sh', { timeout: 30_000 }, () => {
  it('is an executable bash script with strict mode', () => {
    expect(statSync(SCRIPT).mode & 0o111).not.toBe(0);
    const text = readFileSync(SCRIPT, 'utf8');
    expect(text.startsWith('#!/usr/bin/env bash\n')).toBe(true);
    expect(text).toMatch(/^set -euo pipefail$/m);
  });

  it('first run: creates app, database, attachment and key, deploys, checks /health, in order', () => {
    const dir = sandbox();
    const run = runScript(dir);

    expect(run.status, run.output).toBe(0);
    expect(run.calls).toEqual([whoami, appsList, appsCreate, pgList, pgCreate, secretsList, attach, importKey, importToken, deploy, HEALTH]);

    const after = state(dir);
    expect(after.apps).toEqual([APP, PG]);
    expect(after.postgres).toEqual([PG]);
    const secrets = after.secrets[APP] ?? {};
    expect(Object.keys(secrets).sort()).toEqual(['DATABASE_URL', 'PHONE_ENCRYPTION_KEY', 'RATELIMIT_API_TOKENS']);
    const key = secrets.PHONE_ENCRYPTION_KEY ?? '';
    expect(key.length).toBeGreaterThanOrEqual(MIN_KEY_LENGTH);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    // One service token, 32+ random characters (the daemon wants >= 16), other than the key,
    // written for the app to a 0600 file and nowhere else.
    const token = secrets.RATELIMIT_API_TOKENS ?? '';
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    expect(token).not.toBe(key);
    const tokenFile = join(dir, 'api-token');
    expect(readFileSync(tokenFile, 'utf8')).toBe(`${token}\n`);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(run.stdout).toContain(`written to ${tokenFile}`);
    expect(run.stdout).toContain('Authorization: Bearer');
  });

  it('never prints the generated key or the database password, nor passes the key in argv', () => {
    const dir = sandbox();
    const run = runScript(dir);
    expect(run.status, run.output).toBe(0);

    const { PHONE_ENCRYPTION_KEY: key, RATELIMIT_API_TOKENS: token } = state(dir).secrets[APP] ?? {};
    for (const secret of [key, token]) {
      expect(secret).toBeTruthy();
      expect(run.output).not.toContain(secret);
      expect(JSON.stringify(run.calls)).not.toContain(secret);
    }
    expect(run.output).not.toContain(ATTACH_PASSWORD);
    expect(run.output).not.toMatch(/postgres:\/\/[^<]/);
  });

  it('second run: creates nothing twice and keeps the key, then deploys and checks again', () => {
    const dir = sandbox();
    expect(runScript(dir).status).toBe(0);
    const before = state(dir);

    const run = runScript(dir);
    expect(run.status, run.output).toBe(0);
    expect(run.calls).toEqual([whoami, appsList, pgList, secretsList, deploy, HEALTH]);
    expect(mutations(run.calls)).toEqual([deploy]);

    const after = state(dir);
    expect(after.apps).toEqual(before.apps);
    expect(after.postgres).toEqual(before.postgres);
    expect(after.secrets).toEqual(before.secrets);
    expect(run.stdout).toContain(`app ${APP} exists: skipped`);
    expect(run.stdout).toContain(`postgres ${PG} exists: skipped`);
    expect(run.stdout).toContain('DATABASE_URL is already set: skipped');
    expect(run.stdout).toContain('PHONE_ENCRYPTION_KEY is already set: kept');
    expect(run.stdout).toContain('RATELIMIT_API_TOKENS is already set: kept');
  });

  it('partial setup: only the missing pieces are done', () => {
    const dir = sandbox({ apps: [APP, PG], postgres: [PG], secrets: {} });
    const run = runScript(dir);
    expect(run.status, run.output).toBe(0);
    expect(run.calls).toEqual([whoami, appsList, pgList, secretsList, attach, importKey, importToken, deploy, HEALTH]);
  });

  it('an existing key set by hand is never replaced', () => {
    const handSet = 'k'.repeat(40);
    const dir = sandbox({ apps: [APP], postgres: [], secrets: { [APP]: { PHONE_ENCRYPTION_KEY: handSet } } });
    const run = runScript(dir);
    expect(run.status, run.output).toBe(0);
    expect(mutations(run.calls)).toEqual([pgCreate, attach, importToken, deploy]);
    expect(state(dir).secrets[APP]?.PHONE_ENCRYPTION_KEY).toBe(handSet);
  });

  it('an existing token set by hand is never replaced, and no token file is written', () => {
    const handSet = 't'.repeat(40);
    const dir = sandbox({ apps: [APP], postgres: [], secrets: { [APP]: { RATELIMIT_API_TOKENS: handSet } } });
    const run = runScript(dir);
    expect(run.status, run.output).toBe(0);
    expect(mutations(run.calls)).toEqual([pgCreate, attach, importKey, deploy]);
    expect(state(dir).secrets[APP]?.RATELIMIT_API_TOKENS).toBe(handSet);
    expect(existsSync(join(dir, 'api-token'))).toBe(false);
  });

  it('never overwrites an existing token file: stops at the token step before setting anything', () => {
    const dir = sandbox({ apps: [APP, PG], postgres: [PG], secrets: { [APP]: { DATABASE_URL: 'postgres://x', PHONE_ENCRYPTION_KEY: 'k'.repeat(40) } } });
    writeFileSync(join(dir, 'api-token'), 'the-token-my-app-uses\n');
    const run = runScript(dir);
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('FAILED at step "token"');
    expect(readFileSync(join(dir, 'api-token'), 'utf8')).toBe('the-token-my-app-uses\n');
    expect(state(dir).secrets[APP]?.RATELIMIT_API_TOKENS).toBeUndefined();
    expect(mutations(run.calls)).toEqual([]);
  });

  it('--token-file chooses where the token goes', () => {
    const dir = sandbox();
    const chosen = join(dir, 'chosen-token');
    const run = runScript(dir, ['--token-file', chosen]);
    expect(run.status, run.output).toBe(0);
    expect(readFileSync(chosen, 'utf8').trim()).toBe(state(dir).secrets[APP]?.RATELIMIT_API_TOKENS);
    expect(existsSync(join(dir, 'api-token'))).toBe(false);
  });

  it('--dry-run only queries, prints every step it would take, and changes nothing', () => {
    const dir = sandbox();
    const run = runScript(dir, ['--dry-run']);
    expect(run.status, run.output).toBe(0);

    // The app does not exist yet, so there are no secrets to list.
    expect(run.calls).toEqual([whoami, appsList, pgList]);
    expect(mutations(run.calls)).toEqual([]);
    expect(existsSync(join(dir, 'state.json'))).toBe(false);
    for (const would of [appsCreate, pgCreate, attach, importKey, deploy, HEALTH]) {
      expect(run.stdout).toContain(`[dry-run] would run: ${would.join(' ')}`);
    }
    expect(run.stdout).toContain('PHONE_ENCRYPTION_KEY=<64 random hex characters, never shown>');
    expect(run.stdout).toContain('RATELIMIT_API_TOKENS=<64 random hex characters, written to');
    expect(existsSync(join(dir, 'api-token'))).toBe(false);
  });

  it('--dry-run on an existing deployment lists what it would skip', () => {
    const dir = sandbox();
    expect(runScript(dir).status).toBe(0);
    const run = runScript(dir, ['--dry-run']);
    expect(run.status, run.output).toBe(0);
    expect(run.calls).toEqual([whoami, appsList, pgList, secretsList]);
    expect(run.stdout).toContain('skipped');
    expect(run.stdout).toContain(`[dry-run] would run: ${deploy.join(' ')}`);
  });

  it.each([
    ['app', 'apps create', [whoami, appsList, appsCreate]],
    ['postgres', 'postgres create', [whoami, appsList, appsCreate, pgList, pgCreate]],
    ['attach', 'postgres attach', [whoami, appsList, appsCreate, pgList, pgCreate, secretsList, attach]],
    ['secret', 'secrets import', [whoami, appsList, appsCreate, pgList, pgCreate, secretsList, attach, importKey]],
    ['deploy', 'deploy', [whoami, appsList, appsCreate, pgList, pgCreate, secretsList, attach, importKey, importToken, deploy]],
  ])('a failing %s step stops the script and is named', (stepName, failing, expected) => {
    const dir = sandbox();
    const run = runScript(dir, [], { FAKE_FLY_FAIL: failing });
    expect(run.status).not.toBe(0);
    expect(run.calls).toEqual(expected);
    expect(run.stderr).toContain(`FAILED at step "${stepName}"`);
    expect(run.stderr).toContain('hint:');
  });

  it('a failing attach shows flyctl’s error output, which a successful attach hides', () => {
    const dir = sandbox();
    const run = runScript(dir, [], { FAKE_FLY_FAIL: 'postgres attach' });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain("simulated failure of 'fly postgres attach'");
    expect(run.output).not.toContain(ATTACH_PASSWORD);
  });

  it('a failing attach that printed the DATABASE_URL it made shows its error with the URL and password redacted', () => {
    const dir = sandbox();
    const run = runScript(dir, [], { FAKE_FLY_ATTACH_LEAK: '1' });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('failed to set secrets on the consumer app');
    expect(run.stderr).toContain('DATABASE_URL=<redacted>');
    expect(run.stderr).toContain('postgres://<redacted>');
    expect(run.output).not.toContain(ATTACH_PASSWORD);
    expect(run.output).not.toContain(`${PG}.flycast`);
  });

  it('not logged in: stops at preflight before touching anything', () => {
    const dir = sandbox();
    const run = runScript(dir, [], { FAKE_FLY_LOGGED_OUT: '1' });
    expect(run.status).not.toBe(0);
    expect(run.calls).toEqual([whoami]);
    expect(run.stderr).toContain('FAILED at step "preflight"');
    expect(run.stderr).toContain('fly auth login');
  });

  it('retries /health until it answers ok', () => {
    const dir = sandbox();
    const run = runScript(dir, [], { FAKE_CURL_FAILS: '2', SETUP_HEALTH_ATTEMPTS: '5' });
    expect(run.status, run.output).toBe(0);
    expect(run.calls.filter(([tool]) => tool === 'curl')).toEqual([HEALTH, HEALTH, HEALTH]);
  });

  it('fails the health step when /health never answers', () => {
    const dir = sandbox();
    const run = runScript(dir, [], { FAKE_CURL_FAILS: '99', SETUP_HEALTH_ATTEMPTS: '3' });
    expect(run.status).not.toBe(0);
    expect(run.calls.filter(([tool]) => tool === 'curl')).toHaveLength(3);
    expect(run.stderr).toContain('FAILED at step "health"');
  });

  it('fails the health step while the database is down ("degraded")', () => {
    const dir = sandbox();
    const run = runScript(dir, [], { FAKE_CURL_STATUS: 'degraded', SETUP_HEALTH_ATTEMPTS: '2' });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('FAILED at step "health"');
    expect(run.stderr).toContain('"status":"degraded"');
  });

  it('reads app and primary_region from the given fly.toml (single-quoted, as fly launch writes)', () => {
    const dir = sandbox();
    const config = join(dir, 'fly.toml');
    writeFileSync(config, "# generated\napp = 'acme-limits'\nprimary_region = 'fra'\n\n[env]\n  app = 'not-this'\n");
    const run = runScript(dir, ['--config', config, '--org', 'acme']);
    expect(run.status, run.output).toBe(0);
    expect(run.calls).toContainEqual(['fly', 'apps', 'create', 'acme-limits', '--org', 'acme']);
    expect(run.calls).toContainEqual([
      'fly',
      'postgres',
      'create',
      '--name',
      'acme-limits-db',
      '--region',
      'fra',
      '--org',
      'acme',
      '--initial-cluster-size',
      '1',
      '--vm-size',
      'shared-cpu-1x',
      '--volume-size',
      '10',
    ]);
    expect(run.calls).toContainEqual(['fly', 'deploy', '--config', config, '--app', 'acme-limits', '--remote-only']);
  });

  it('fails the config step on a fly.toml without a primary region', () => {
    const dir = sandbox();
    const config = join(dir, 'fly.toml');
    writeFileSync(config, 'app = "acme-limits"\n');
    const run = runScript(dir, ['--config', config]);
    expect(run.status).not.toBe(0);
    expect(run.calls).toEqual([whoami]);
    expect(run.stderr).toContain('FAILED at step "config"');
    expect(run.stderr).toContain('primary_region');
  });

  it('rejects unknown options with a usage error', () => {
    const run = runScript(sandbox(), ['--bogus']);
    expect(run.status).not.toBe(0);
    expect(run.calls).toEqual([]);
    expect(run.stderr).toContain('unknown option: --bogus');
  });

  const shellcheck = spawnSync('shellcheck', ['--version']);
  const hasShellcheck = !shellcheck.error && shellcheck.status === 0;

  it.skipIf(!hasShellcheck)('is shellcheck clean (skipped when shellcheck is not installed)', () => {
    const result = spawnSync('shellcheck', ['--shell=bash', SCRIPT, join(FAKE_BIN, 'fly'), join(FAKE_BIN, 'curl')], { encoding: 'utf8' });
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });
});
