// The hashing key: PHONE_ENCRYPTION_KEY, or for the embedded default one generated once and kept
// in the data dir, so every process on this machine (daemon and admin commands) hashes alike.
// Never generated for a DATABASE_URL: processes on other machines share that database, and a key
// made up here would give every number a fresh quota there (docs/protocol.md *Configuration*).
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Config } from '../core/config.js';
import { MIN_KEY_LENGTH } from '../core/defaults.js';
import { RateLimitError } from '../core/errors.js';
import { GENERATE_KEY_HINT } from '../core/key.js';

export type Warn = (message: string) => void;

export const KEY_FILE = 'phone-encryption.key';

export interface LoadKeyOptions {
  /**
   * Admin commands: use the daemon's key file but never create one; a new key there would not
   * be the daemon's, and every number would look untracked.
   */
  existingOnly?: boolean;
}

/**
 * PHONE_ENCRYPTION_KEY; or, for the embedded database only, the key file in the data dir,
 * created on first use unless `existingOnly`.
 */
export async function loadPhoneKey(config: Config, warn: Warn, options: LoadKeyOptions = {}): Promise<string> {
  if (config.phoneKey !== undefined) {
    if (config.phoneKey.length < MIN_KEY_LENGTH) {
      // Only the embedded default outside production gets here (src/core/config.ts refuses the rest).
      warn(`PHONE_ENCRYPTION_KEY is shorter than ${MIN_KEY_LENGTH} characters; with DATABASE_URL or NODE_ENV=production it is refused`);
    }
    return config.phoneKey;
  }
  if (config.databaseUrl !== undefined) throw await noKeyForDatabaseUrl(config);
  const dir = resolve(config.dataDir);
  const file = join(dir, KEY_FILE);
  try {
    const key = (await readFile(file, 'utf8')).trim();
    if (key.length >= MIN_KEY_LENGTH) {
      const mode = (await stat(file)).mode & 0o777;
      if (mode & 0o077) warn(`${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`);
      return key;
    }
    throw new RateLimitError(
      'key_missing',
      `${file} holds a key shorter than ${MIN_KEY_LENGTH} characters; fix or delete it (deleting it forgets every stored count)`,
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (options.existingOnly) {
    throw new RateLimitError(
      'key_missing',
      `no hashing key: PHONE_ENCRYPTION_KEY is not set and there is no key file at ${file}. ` +
        `Point this command at the daemon's data dir (--data-dir or RATELIMIT_DATA_DIR), or set PHONE_ENCRYPTION_KEY to the daemon's key`,
    );
  }
  await mkdir(dir, { recursive: true, mode: embeddedDataDirMode(process.getuid?.() === 0) });
  const key = randomBytes(48).toString('base64url');
  try {
    // 'wx': when two processes start at once, exactly one key wins and both use it.
    await writeFile(file, `${key}\n`, { mode: 0o600, flag: 'wx' });
    warn(
      `PHONE_ENCRYPTION_KEY is not set: generated a key in ${file}. Keep it: a new key makes every stored count unreachable. Set PHONE_ENCRYPTION_KEY in production.`,
    );
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readFile(file, 'utf8')).trim();
  }
}

/**
 * The mode of a data dir this process creates for the embedded default: 0700, since it holds the
 * key file and the spool. Root is the exception: PostgreSQL then runs as another OS user
 * (src/db/embedded/os-user.ts) that must pass through the data dir to reach its cluster in
 * <dataDir>/pg, so others get search (x) but still cannot list or read it.
 */
export function embeddedDataDirMode(root: boolean): number {
  return root ? 0o701 : 0o700;
}

/**
 * For commands that hash nothing but check the key they are given (`list`, `stats`, `top`,
 * `policy`): PHONE_ENCRYPTION_KEY, else the embedded data dir's key file, else undefined. Never
 * generates one.
 */
export async function findPhoneKey(config: Config, warn: Warn): Promise<string | undefined> {
  if (config.phoneKey === undefined && config.databaseUrl !== undefined) return undefined;
  try {
    return await loadPhoneKey(config, warn, { existingOnly: true });
  } catch (err) {
    if (
      err instanceof RateLimitError &&
      err.code === 'invalid_config' &&
      config.phoneKey === undefined &&
      !(await exists(join(resolve(config.dataDir), KEY_FILE)))
    ) {
      return undefined;
    }
    throw err;
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

async function noKeyForDatabaseUrl(config: Config): Promise<RateLimitError> {
  const file = join(resolve(config.dataDir), KEY_FILE);
  // A key file left by an earlier version, which generated keys for any database.
  const leftover = await stat(file).then(
    () => ` A key file exists at ${file}: if this database was used with it, set PHONE_ENCRYPTION_KEY to its contents.`,
    () => '',
  );
  return new RateLimitError(
    'key_missing',
    `PHONE_ENCRYPTION_KEY is not set, and with DATABASE_URL set no key is generated (every daemon and admin command sharing the database must hash with the same key): ` +
      `${GENERATE_KEY_HINT}, keep it, and set PHONE_ENCRYPTION_KEY to it everywhere.${leftover}`,
  );
}
