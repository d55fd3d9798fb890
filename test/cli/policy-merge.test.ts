// Adding a rule without restating the policy (issue 20): `policy apply --merge FILE` replaces only
// the groups the file names; `policy set group.key=value` changes single keys. Both store one
// complete, validated policy as a new version.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '../helpers/fixture.js';
import { cli } from './run.js';

let db: { url: string; drop(): Promise<void> };
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'policy-merge-'));
  expect((await cli(['db', 'init'], db.url)).code).toBe(0);
});

afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

async function show(): Promise<Record<string, unknown>> {
  const r = await cli(['policy', 'show', '--json'], db.url);
  expect(r.code, r.stderr).toBe(0);
  const yaml = (JSON.parse(r.stdout) as { yaml: string }).yaml;
  const { parse } = await import('yaml');
  return parse(yaml) as Record<string, unknown>;
}

describe('policy apply --merge and policy set', () => {
  it('keeps the groups a merged file leaves out, and sets single keys', async () => {
    const base = join(dir, 'base.yaml');
    await writeFile(base, 'number:\n  limits: [{limit: 3, window: 1h}]\nprefix:\n  digits: 3\n  limits: [{limit: 10, window: 1h}]\n');
    expect((await cli(['policy', 'apply', base], db.url)).code).toBe(0);

    const fragment = join(dir, 'country.yaml');
    await writeFile(fragment, 'country:\n  limits: [{limit: 200, window: 1h}]\n');
    // Alone the fragment is a policy with a country rule only; merged, number and prefix stay.
    const merged = await cli(['policy', 'apply', '--merge', fragment, '--reason', 'add country'], db.url);
    expect(merged.code, merged.stderr).toBe(0);
    expect(merged.stdout).toMatch(/country:1h/);
    let p = await show();
    expect(Object.keys(p).sort()).toEqual(expect.arrayContaining(['country', 'number', 'prefix']));
    expect((p.number as { limits: Array<{ limit: number }> }).limits[0]!.limit).toBe(3);

    const set = await cli(['policy', 'set', 'destinations.countries.deny=[CU, KP]', 'prefix.limits=[{limit: 20, window: 1h}]'], db.url);
    expect(set.code, set.stderr).toBe(0);
    p = await show();
    expect((p.destinations as { countries: { deny: string[] } }).countries.deny).toEqual(['CU', 'KP']);
    expect((p.prefix as { limits: Array<{ limit: number }> }).limits[0]!.limit).toBe(20);
    expect(p.country).toBeDefined();

    // null removes a group; a merged file with null too.
    expect((await cli(['policy', 'set', 'prefix=null'], db.url)).code).toBe(0);
    expect((await show()).prefix).toBeUndefined();
  });

  it('refuses what would be invalid once merged, naming the problem, and stores nothing', async () => {
    const before = await cli(['policy', 'show', '--json'], db.url);
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'country:\n  limitz: [{limit: 200, window: 1h}]\n');
    const r = await cli(['policy', 'apply', '--merge', bad], db.url);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/limitz/);
    expect((await cli(['policy', 'set', 'number.limits'], db.url)).code).toBe(2);
    expect((await cli(['policy', 'set', 'number..x=1'], db.url)).code).toBe(2);
    expect((await cli(['policy', 'set', 'number.limits=[{limit: -1, window: 1h}]'], db.url)).code).toBe(2);
    expect((JSON.parse((await cli(['policy', 'show', '--json'], db.url)).stdout) as { version: number }).version).toBe(
      (JSON.parse(before.stdout) as { version: number }).version,
    );
  });
});
