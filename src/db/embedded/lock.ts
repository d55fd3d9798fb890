// Serialises initdb + start between processes that share a data dir. proper-lockfile's lock is a
// directory made with mkdir (atomic, also on network volumes) whose mtime the holder refreshes; a holder
// that died stops refreshing, so its lock goes stale after LOCK_STALE_MS and is taken over. That bounds
// the delay a crash can cause without trusting pids (which mean nothing across hosts or after a
// container restart hands the same pid to the next process).

import fs from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import lockfile from 'proper-lockfile';

// A waiter may sit behind an initdb plus a full start, so this must exceed both together.
export const LOCK_TIMEOUT_MS = 180_000;
const LOCK_STALE_MS = 10_000;
const LOCK_UPDATE_MS = 2_000;
const POLL_INTERVAL_MS = 100;

/** Takes the lock at lockPath, waiting for a live holder; resolves to its release function. */
export async function acquireLock(lockPath: string, log: (message: string) => void): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  let announced = false;
  for (;;) {
    await removeLegacyLockFile(lockPath, log);
    try {
      const release = await lockfile.lock(lockPath, {
        lockfilePath: lockPath,
        realpath: false,
        stale: LOCK_STALE_MS,
        update: LOCK_UPDATE_MS,
        retries: 0,
        // The default throws from a timer, killing the process. Losing the lock mid-start only means
        // another starter may race us, and postgres's own postmaster.pid interlock still holds.
        onCompromised: (error) => log(`lock ${lockPath} was taken over: ${error.message}`),
      });
      return () => release().catch(() => undefined);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${LOCK_TIMEOUT_MS} ms waiting for ${lockPath}. ` + 'If no other ratelimit process is starting the embedded database, delete it.',
      );
    }
    if (!announced) {
      log('waiting for another process to finish starting the embedded PostgreSQL');
      announced = true;
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

/**
 * Versions before proper-lockfile kept the lock as a plain file with the same heartbeat. proper-lockfile
 * can only remove directories, so a stale one of those is removed here.
 */
async function removeLegacyLockFile(lockPath: string, log: (message: string) => void): Promise<void> {
  const st = await fs.lstat(lockPath).catch(() => undefined);
  if (!st?.isFile() || Date.now() - st.mtimeMs <= LOCK_STALE_MS) return;
  log(`removing stale lock file ${lockPath}`);
  await fs.rm(lockPath, { force: true });
}
