// Longer than 350 lines because check, apply, show and db init's policy output share one database and one CLI runner.
// The policy engine's admin commands through the real binary: policy check/apply/show, the
// block and allow lists, and status of a number under a multi-rule policy. The tests in each
// describe share one database and run in order (apply, then show, then status...).
// `npm test` builds dist/ first (pretest), which bin/ratelimit.js runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { decideBatch } from '../../src/db/decisions.js';
import { hashPhone, maskPhone } from '../../src/core/phone.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { countersFor } from '../../src/core/policy/subject.js';
import { decisionPolicy } from '../../src/core/policy/decide.js';
import type { Policy } from '../../src/core/policy/types.js';
import { backdate, createTestDatabase } from '../helpers/fixture.js';

const BIN = join(import.meta.dirname, '../..', 'bin', 'ratelimit.js');
const EXAMPLE = join(import.meta.dirname, '../..', 'docs', 'examples', 'policy.yaml');
const KEY = 'cli-policy-test-key-0123456789abcdefghij';
const NUMBER = '+14155552671';
const NEIGHBOUR = '+14155552672'; // same prefix range (+14155552) as NUMBER
const OTHER = '+14155550199';
const UNREACHABLE = 'postgres://nobody@127.0.0.1:1/none';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

let db: { url: string; drop(): Promise<void> };
let pool: Pool;
let dir: string;

function run(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, PHONE_ENCRYPTION_KEY: KEY, DATABASE_URL: db.url, RATELIMIT_OPERATOR: 'alice', ...env },
        timeout: 60_000,
      },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

const policyCount = async () => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM rate_limit_policies')).rows[0]!.n;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 4 });
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'ratelimit-cli-policy-'));
});
afterAll(async () => {
  await pool.end();
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('ratelimit policy check', () => {
  it('prints the policy a valid file describes, with its rule ids, and warnings on stderr', async () => {
    const ok = await run(['policy', 'check', EXAMPLE], { DATABASE_URL: UNREACHABLE });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^# rules: number:1h, number:1d, number:block_after, prefix:1h/);
    expect(ok.stdout).toContain('overrides:');
    expect(ok.stderr).toBe('');

    const warned = await run(['policy', 'check', await file('warn.yaml', 'number:\n  limits: [{limit: 2, window: 1h}]\ndestinations:\n  block_types: []\n')]);
    expect(warned.code).toBe(0);
    expect(warned.stderr).toMatch(/^warning: destinations\.block_types leaves out premium_rate/m);
  });

  it('an invalid file: every problem as file:line:column, exit 2, nothing on stdout', async () => {
    const bad = await file('bad.yaml', 'number:\n  limts: [{limit: 2, window: 1h}]\nglobal:\n  limits: [{limit: 5, window: soon}]\n');
    const r = await run(['policy', 'check', bad], { DATABASE_URL: UNREACHABLE });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${bad}:2:3: number\\.limts: unknown key "limts"`)));
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${bad}:4:\\d+: global\\.limits\\[0\\]\\.window: "soon" is not a duration`)));
    expect(lines[lines.length - 1]).toMatch(/^ratelimit: .*bad\.yaml is not a valid policy \(\d problems\)$/);

    const missing = await run(['policy', 'check', join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim()).toMatch(/^ratelimit: cannot read policy file .*nope\.yaml: no such file$/);
  });
});

describe('ratelimit policy apply / show', () => {
  it('shows the RATE_LIMIT_* default while none is applied', async () => {
    const human = await run(['policy', 'show', '--phone-limit', '4']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/no policy has been applied/);
    expect(human.stdout).toContain('limits: [{limit: 4, window: 1h}]');
    const json = JSON.parse((await run(['policy', 'show', '--json', '--phone-limit', '4'])).stdout);
    expect(json).toMatchObject({ version: 0, source: 'default', appliedBy: null, appliedYaml: null });
    expect(json.rules).toContain('number:1h');
    // The policy itself as structured JSON in the file's keys, for jq (not YAML in a string).
    expect(json.policy.number).toEqual({ limits: [{ limit: 4, window: '1h' }] });
  });

  it('apply stores a new version, says what changed; show names version, who, when, why', async () => {
    const path = await file('p1.yaml', 'number:\n  limits: [{limit: 3, window: 1h}]\n');
    const r = await run(['policy', 'apply', path, '--reason', 'tighter']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^changes from the RATE_LIMIT_\* default:\n/);
    expect(r.stdout).toMatch(/^ {2}number:1h limit 2 -> 3$/m);
    expect(r.stdout).toMatch(/^ {2}removed ip:1h \(20 per 1h\)$/m); // the file has no ip group
    expect(r.stdout).toMatch(/version 1 is active; every daemon switches to it within 2 s/);

    const show = JSON.parse((await run(['policy', 'show', '--json'])).stdout);
    expect(show).toMatchObject({
      version: 1,
      source: 'database',
      appliedBy: 'alice',
      reason: 'tighter',
      appliedYaml: 'number:\n  limits: [{limit: 3, window: 1h}]\n',
    });
    expect(Date.parse(show.appliedAt)).not.toBeNaN();
    const human = await run(['policy', 'show']);
    expect(human.stdout).toMatch(/^# version 1, applied by alice at \S+: tighter\n# rules: number:1h/);
  });

  it('an identical policy (comments and layout aside) stores nothing; an invalid one is refused', async () => {
    const same = await file('same.yaml', '# the same rules, written differently\nnumber:\n  limits:\n    - limit: 3\n      window: 1h\n');
    const r = await run(['policy', 'apply', same, '--json'], { RATELIMIT_OPERATOR: 'bob' });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ changed: false, version: 1, appliedBy: 'alice', changes: [] });
    expect((await run(['policy', 'apply', same])).stdout).toMatch(/^no change: .*version 1/);
    expect(await policyCount()).toBe(1);

    const bad = await run(['policy', 'apply', await file('bad2.yaml', 'nmber: {}\n')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/bad2\.yaml:1:1: /);
    expect(bad.stderr).toMatch(/nothing was applied/);
    expect(await policyCount()).toBe(1);

    const next = await run([
      'policy',
      'apply',
      await file('p2.yaml', 'number:\n  limits: [{limit: 3, window: 1h}]\nglobal:\n  limits: [{limit: 100, window: 1d}]\n'),
      '--json',
    ]);
    expect(JSON.parse(next.stdout)).toMatchObject({ changed: true, version: 2, previousVersion: 1, changes: ['added global:1d (100 per 1d)'] });
    const audit = await pool.query("SELECT actor FROM rate_limit_audit WHERE action = 'policy_apply' ORDER BY id");
    expect(audit.rows).toEqual([{ actor: 'alice' }, { actor: 'alice' }]);
  });
});

describe('block, allow, unlist, list', () => {
  it('refuses bad targets with exit 2 before touching the database', async () => {
    const cases = [
      ['block', NUMBER, '--prefix', '+4470'],
      ['block'],
      ['unlist'],
      ['unlist', NUMBER, '--prefix', '+4470'],
      ['block', '--prefix', 'abc'],
      ['block', NUMBER, '--for', 'soon'],
      ['allow', NUMBER, '--prefix', '+4470'],
      ['block', '4155552671'],
    ];
    for (const args of cases) {
      const r = await run(args, { DATABASE_URL: UNREACHABLE });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
    const help = await run(['block', '--help']);
    expect(help.code).toBe(0);
    for (const flag of ['--prefix', '--for', '--reason', '--database-url', '--data-dir']) expect(help.stdout).toContain(flag);
  });

  it('round trip: block a number and a prefix, allow one briefly, list, unlist', async () => {
    const b = await run(['block', NUMBER, '--for', '2h', '--reason', 'fraud report']);
    expect(b.code).toBe(0);
    expect(b.stdout).toContain('+14155552•••');
    expect(b.stdout).toMatch(/blocked until .*every daemon applies it within 2 s/);
    expect(b.stdout).not.toContain('4155552671');
    expect((await run(['block', '--prefix', '+44 70', '--json'])).code).toBe(0);
    const allow = JSON.parse((await run(['allow', OTHER, '--for', '1s', '--json'])).stdout);
    expect(allow).toMatchObject({ entry: { kind: 'allow', targetType: 'number', target: maskPhone(OTHER), hash: hashPhone(OTHER, KEY) }, replaced: null });

    // 1.1 s of database time pass for the 1 s allow entry (a test clock: no sleep), so it has expired.
    expect(await backdate(pool, 'rate_limit_lists', ['created_at', 'expires_at'], 1_100, 'target = $1', [hashPhone(OTHER, KEY)])).toBe(1);
    const list = JSON.parse((await run(['list', '--json'])).stdout);
    expect(list.entries).toHaveLength(2);
    expect(list.entries).toContainEqual(
      expect.objectContaining({
        targetType: 'number',
        target: '+14155552•••',
        hash: hashPhone(NUMBER, KEY),
        kind: 'block',
        createdBy: 'alice',
        reason: 'fraud report',
      }),
    );
    expect(list.entries).toContainEqual(expect.objectContaining({ targetType: 'prefix', target: '+4470', hash: null, kind: 'block', expiresAt: null }));
    const human = await run(['list']);
    expect(human.stdout).toMatch(/\+14155552•••/);
    expect(human.stdout).toMatch(/\+4470/);
    expect(human.stdout).toMatch(/fraud report/);

    // The same number allowed: its one entry changes kind.
    const flip = JSON.parse((await run(['allow', NUMBER, '--json'])).stdout);
    expect(flip).toMatchObject({ entry: { kind: 'allow', expiresAt: null }, replaced: 'block' });

    expect((await run(['unlist', NUMBER])).stdout).toMatch(/removed its allow entry/);
    expect((await run(['unlist', NUMBER])).stdout).toMatch(/was not listed; nothing to remove/);
    expect(JSON.parse((await run(['unlist', '--prefix', '+4470', '--json'])).stdout)).toMatchObject({ removed: { kind: 'block', target: '+4470' } });
    expect(JSON.parse((await run(['list', '--json'])).stdout).entries).toEqual([]);
    expect((await run(['list'])).stdout.trim()).toBe('No block or allow entries.');
    const audit = await pool.query<{ action: string }>("SELECT action FROM rate_limit_audit WHERE action LIKE 'list_%' ORDER BY id");
    expect(audit.rows.map((r) => r.action)).toEqual(['list_block', 'list_block', 'list_allow', 'list_allow', 'list_remove', 'list_remove']);
  });
});

describe('status under a multi-rule policy', () => {
  const YAML = [
    'number:',
    '  limits: [{limit: 3, window: 1h}, {limit: 5, window: 1d}]',
    '  block_after: {denials: 2, within: 1h, for: 1h}',
    'prefix:',
    '  digits: 3',
    '  limits: [{limit: 4, window: 1h}]',
    'country:',
    '  limits: [{limit: 100, window: 1h}]',
    '  overrides: {US: [{limit: 50, window: 1h}]}',
    'global:',
    '  limits: [{limit: 1000, window: 1d}]',
    '  shadow: true',
    'destinations:',
    '  countries: {deny: [CU]}',
    '',
  ].join('\n');
  let policy: Policy;
  const consume = async (phone: string, times: number) => {
    const req = { hash: hashPhone(phone, KEY), region: 'US', masked: maskPhone(phone), allowlisted: false, counters: countersFor(policy, phone, 'US') };
    return decideBatch(
      pool,
      Array.from({ length: times }, () => req),
      decisionPolicy(policy),
    );
  };
  const status = async (phone: string, env: Record<string, string> = {}) => {
    const r = await run(['status', phone, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };

  beforeAll(async () => {
    await pool.query('TRUNCATE rate_limit_policies, rate_limit_lists, rate_limit_counters, phone_rate_limits');
    const parsed = parsePolicyFile(YAML);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    policy = parsed.policy;
    expect((await run(['policy', 'apply', await file('multi.yaml', YAML)])).code).toBe(0);
  });

  it('shows every rule that applies, the binding one, and the denying rule', async () => {
    expect((await consume(NUMBER, 4)).map((o) => o.allowed)).toEqual([true, true, true, false]);
    expect((await consume(NEIGHBOUR, 1))[0]!.allowed).toBe(true);

    const s = await status(NUMBER, { RATE_LIMIT_PHONE_MAX: '9' }); // ignored: a policy is applied
    expect(s).toMatchObject({
      phoneNumber: '+14155552•••',
      policy: { source: 'database' },
      allowed: false,
      rule: 'number:1h',
      reason: 'phone_rate_limit_exceeded',
      limit: 3,
      used: 3,
      remaining: 0,
      windowMs: 3_600_000,
      blockAfter: { denials: 2, withinMs: 3_600_000, forMs: 3_600_000, recentDenials: 1 },
      blockedUntil: null,
      list: null,
      destination: { region: 'US', deniedBy: null },
      deniedTotal: 1,
      shadow: [],
    });
    expect(s.resetTime - s.now).toBe(s.retryAfterMs);
    const rules = Object.fromEntries(s.rules.map((r: { id: string }) => [r.id, r]));
    expect(Object.keys(rules)).toEqual(['number:1h', 'number:1d', 'prefix:1h', 'country:US:1h', 'global:1d']);
    expect(rules['number:1h']).toMatchObject({ key: null, used: 3, limit: 3, allows: false });
    expect(rules['number:1d']).toMatchObject({ key: null, used: 3, limit: 5, remaining: 2, allows: true });
    expect(rules['prefix:1h']).toMatchObject({ key: '+14155552', used: 4, limit: 4, allows: false, shadow: false });
    expect(rules['country:US:1h']).toMatchObject({ key: 'US', used: 4, limit: 50 });
    expect(rules['global:1d']).toMatchObject({ key: '*', used: 4, shadow: true, allows: true });

    const human = await run(['status', NUMBER]);
    for (const id of ['number:1h', 'number:1d', 'prefix:1h', 'country:US:1h', 'global:1d (shadow)']) expect(human.stdout).toContain(id);
    expect(human.stdout).toMatch(/3 of 3 per 1h/);
    expect(human.stdout).toMatch(/no: number:1h \(phone_rate_limit_exceeded\)/);
    expect(human.stdout).toMatch(/1 of 2 denials within 1h/);
    expect(human.stdout).not.toContain('4155552671');
  });

  it('block_after, reset (lifts it; the prefix still denies), list entries and destinations', async () => {
    await consume(NUMBER, 1); // the second denial within 1h blocks the number for 1h
    const blocked = await status(NUMBER);
    expect(blocked).toMatchObject({ allowed: false, rule: 'number:block_after', reason: 'number_blocked' });
    expect(blocked.blockedUntil).toBe(blocked.resetTime);
    expect(blocked.blockedUntil - blocked.now).toBeGreaterThan(3_500_000);

    const reset = await run(['reset', NUMBER, '--json']);
    expect(JSON.parse(reset.stdout)).toMatchObject({ reset: true, previousCount: 3, liftedBlockUntil: blocked.blockedUntil });
    const after = await status(NUMBER);
    expect(after).toMatchObject({
      allowed: false,
      rule: 'prefix:1h',
      reason: 'prefix_rate_limit_exceeded',
      limit: 4,
      used: 4,
      blockedUntil: null,
      blockAfter: { recentDenials: 0 },
    });

    expect((await run(['block', '--prefix', '+1415555', '--reason', 'pumping'])).code).toBe(0);
    const listed = await status(OTHER);
    expect(listed).toMatchObject({
      allowed: false,
      rule: 'list:block',
      reason: 'number_blocked',
      retryAfterMs: null,
      list: { targetType: 'prefix', target: '+1415555', kind: 'block', reason: 'pumping' },
    });
    expect((await run(['allow', OTHER])).code).toBe(0);
    expect(await status(OTHER)).toMatchObject({ allowed: true, rule: null, list: { targetType: 'number', kind: 'allow' } });
    expect((await run(['status', OTHER])).stdout).toMatch(/yes \(allow list/);

    const cuba = await status('+53 5 1234567');
    expect(cuba).toMatchObject({
      allowed: false,
      rule: 'destination:country',
      reason: 'destination_blocked',
      retryAfterMs: null,
      destination: { region: 'CU', deniedBy: 'destination:country' },
    });
  });

  it('db init summarises under the applied policy', async () => {
    const r = JSON.parse((await run(['db', 'init', '--json', '--phone-limit', '7'])).stdout);
    expect(r.stats).toMatchObject({ limit: 3, windowMs: 3_600_000 });
  });
});
