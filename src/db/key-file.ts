// The hashing key: PHONE_ENCRYPTION_KEY, or outside production one generated once and kept in
// the data dir, so every process on this machine (daemon and admin commands) hashes alike.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Config } from '../core/config.js';
import { MIN_KEY_LENGTH } from '../core/defaults.js';
import { RateLimitError } from '../core/errors.js';

export type Warn = (message: string) => void;

export const KEY_FILE = 'phone-encryption.key';

/**
 * PHONE_ENCRYPTION_KEY, or outside production a key generated once and kept in the data dir:
 * every process on this machine (daemon and admin commands) must hash with the same key.
 */
export async function loadPhoneKey(config: Config, warn: Warn): Promise<string> {
  if (config.phoneKey !== undefined) {
    if (config.phoneKey.length < MIN_KEY_LENGTH) {
      warn(`PHONE_ENCRYPTION_KEY is shorter than ${MIN_KEY_LENGTH} characters; production (NODE_ENV=production) refuses such a key`);
    }
    return config.phoneKey;
  }
  const dir = resolve(config.dataDir);
  const file = join(dir, KEY_FILE);
  try {
    const key = (await readFile(file, 'utf8')).trim();
    if (key.length >= MIN_KEY_LENGTH) {
      const mode = (await stat(file)).mode & 0o777;
      if (mode & 0o077) warn(`${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`);
      return key;
    }
    throw new RateLimitError('invalid_config', `${file} holds a key shorter than ${MIN_KEY_LENGTH} characters; fix or delete it (deleting it forgets every stored count)`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const key = randomBytes(48).toString('base64url');
  try {
    // 'wx': when two processes start at once, exactly one key wins and both use it.
    await writeFile(file, `${key}\n`, { mode: 0o600, flag: 'wx' });
    warn(`PHONE_ENCRYPTION_KEY is not set: generated a key in ${file}. Keep it: a new key makes every stored count unreachable. Set PHONE_ENCRYPTION_KEY in production.`);
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readFile(file, 'utf8')).trim();
  }
}

