// The engine's ears: resets and policy/list changes announced anywhere (LISTEN/NOTIFY), with the
// check that they actually arrive (src/db/notify.ts) reported in the daemon's words.

import type { Logger } from 'pino';
import { listen, type Listener } from '../../db/notify.js';
import { CHANGES_CHANNEL } from '../../db/changes.js';
import type { Pool } from '../../db/pool.js';
import { RESET_CHANNEL } from '../../db/phones.js';

const DEAF_MESSAGE =
  'notifications do not arrive: resets, blocks and policy changes made elsewhere reach this daemon only by polling. ' +
  'Behind a pooler in transaction mode, set RATELIMIT_LISTEN_URL to a session connection (PostgreSQL itself, or a session-mode pool)';

export function listenForChanges(opts: {
  url: string;
  pool: Pool;
  logger: Logger;
  /** A number was reset: forget what is known of it. */
  forget: (hash: string) => void;
  /** Something may have changed unheard (an announcement, or a reconnection that may have missed one). */
  changed: () => void;
  /** Whether notifications are known not to arrive (the check failed), so nothing cached can be trusted. */
  deaf: (isDeaf: boolean) => void;
  /** Whether the listener is connected now (the policy poll slows down while it is). */
  listening: (up: boolean) => void;
}): Listener {
  return listen({
    url: opts.url,
    channels: { [RESET_CHANNEL]: opts.forget, [CHANGES_CHANNEL]: opts.changed },
    // What was announced while the listener was down was missed: trust nothing cached.
    onReconnect: () => {
      opts.listening(true);
      opts.changed();
    },
    onError: (err) => {
      opts.listening(false);
      opts.logger.warn({ err: err.message }, 'notification listener lost its connection; retrying');
    },
    notify: (channel, payload) => opts.pool.query('SELECT pg_notify($1, $2)', [channel, payload]).then(() => undefined),
    onHeard: () => opts.deaf(false),
    onDeaf: (err) => {
      opts.deaf(true);
      opts.logger.error({ err: err.message }, DEAF_MESSAGE);
    },
  });
}
