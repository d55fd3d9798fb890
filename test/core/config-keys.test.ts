import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/core/config.js';
import { GENERATE_KEY_HINT } from '../../src/core/key.js';
import { KEY_FILE, loadPhoneKey } from '../../src/db/key-file.js';
import { RateLimitError } from '../../src/core/errors.js';

const KEY = 'k'.repeat(40);
const OLD_KEY = 'o'.repeat(40);

describe('resolveConfig: keys', () => {
  it('reads PHONE_ENCRYPTION_KEY_PREVIOUS as previousPhoneKey', () => {
    expect(resolveConfig({}, { PHONE_ENCRYPTION_KEY: KEY, PHONE_ENCRYPTION_KEY_PREVIOUS: OLD_KEY })).toMatchObject({
      phoneKey: KEY,
      previousPhoneKey: OLD_KEY,
    });
  });

  it('has no previous key unless one is set (an empty variable is unset)', () => {
    expect(resolveConfig({}, { PHONE_ENCRYPTION_KEY: KEY }).previousPhoneKey).toBeUndefined();
    expect(resolveConfig({}, { PHONE_ENCRYPTION_KEY: KEY, PHONE_ENCRYPTION_KEY_PREVIOUS: '' }).previousPhoneKey).toBeUndefined();
  });

  it('suggests the one key-generation command when production lacks a key', () => {
    expect(() => resolveConfig({}, { NODE_ENV: 'production' })).toThrow(GENERATE_KEY_HINT);
    expect(GENERATE_KEY_HINT).toBe('generate one with: openssl rand -base64 48');
  });
});

describe('loadPhoneKey', () => {
  const dirs: string[] = [];
  const dataDir = async () => {
    const d = await mkdtemp(join(tmpdir(), 'ratelimit-key-'));
    dirs.push(d);
    return d;
  };
  afterAll(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });
  const warnings: string[] = [];
  const warn = (m: string) => void warnings.push(m);

  it('uses PHONE_ENCRYPTION_KEY when set, with or without a DATABASE_URL', async () => {
    const dir = await dataDir();
    expect(await loadPhoneKey(resolveConfig({ dataDir: dir }, { PHONE_ENCRYPTION_KEY: KEY }), warn)).toBe(KEY);
    expect(await loadPhoneKey(resolveConfig({ dataDir: dir }, { PHONE_ENCRYPTION_KEY: KEY, DATABASE_URL: 'postgres://h/db' }), warn)).toBe(KEY);
  });

  it('never generates a key for a DATABASE_URL, and says how to make one', async () => {
    const dir = await dataDir();
    const config = resolveConfig({ dataDir: dir }, { DATABASE_URL: 'postgres://h/db' });
    const err = await loadPhoneKey(config, warn).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as Error).message).toContain(GENERATE_KEY_HINT);
    expect((err as Error).message).toMatch(/set PHONE_ENCRYPTION_KEY/);
    await expect(stat(join(dir, KEY_FILE))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('with a DATABASE_URL, points at a key file an earlier version left, without using it', async () => {
    const dir = await dataDir();
    await writeFile(join(dir, KEY_FILE), `${KEY}\n`, { mode: 0o600 });
    const config = resolveConfig({ dataDir: dir }, { DATABASE_URL: 'postgres://h/db' });
    await expect(loadPhoneKey(config, warn)).rejects.toThrow(`A key file exists at ${join(dir, KEY_FILE)}`);
  });

  it('embedded: generates a key once and keeps using it', async () => {
    const dir = await dataDir();
    const config = resolveConfig({ dataDir: dir }, {});
    const first = await loadPhoneKey(config, warn);
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(warnings.at(-1)).toMatch(/generated a key in/);
    expect((await readFile(join(dir, KEY_FILE), 'utf8')).trim()).toBe(first);
    expect(await loadPhoneKey(config, warn, { existingOnly: true })).toBe(first);
    expect(await loadPhoneKey(config, warn)).toBe(first);
  });

  it('existingOnly: refuses to create a key, saying where it looked and how to point at the daemon', async () => {
    const dir = await dataDir();
    const config = resolveConfig({ dataDir: dir }, {});
    const err = await loadPhoneKey(config, warn, { existingOnly: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitError);
    const message = (err as Error).message;
    expect(message).toContain(join(dir, KEY_FILE));
    expect(message).toMatch(/--data-dir or RATELIMIT_DATA_DIR/);
    expect(message).toMatch(/set PHONE_ENCRYPTION_KEY/);
    await expect(stat(join(dir, KEY_FILE))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
