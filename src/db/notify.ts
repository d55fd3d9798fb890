import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { parseDatabaseUrl } from '../core/database-url.js';

/** Private to the start-up check below: a NOTIFY the listener sends itself. */
export const PROBE_CHANNEL = 'ratelimit_listen_probe';
const PROBE_WAIT_MS = 3_000;

export interface Listener {
  close(): Promise<void>;
}

/**
 * Keeps one connection LISTENing on several channels (resets, policy and list changes, made
 * anywhere: CLI, `top`, another daemon): one connection per daemon whatever the number of
 * channels. Every (re)connection calls `onReconnect`, because what was announced while it was
 * down was missed.
 *
 * After each (re)connection it checks that notifications actually arrive: `notify` sends one
 * through the ordinary pool and the listener waits for it. Behind a pooler in transaction mode
 * (or a proxy that drops them) they never do, and `onDeaf` says so; RATELIMIT_LISTEN_URL then
 * gives the listener a session connection of its own. With several hosts (a multi-host URL) each
 * retry tries the next one: LISTEN fails on a standby, so it settles on the primary.
 */
export function listen(opts: {
  url: string;
  /** Channel name -> handler of its payloads. Names are fixed identifiers of this code base. */
  channels: Readonly<Record<string, (payload: string) => void>>;
  onReconnect: () => void;
  onError: (err: Error) => void;
  /** Sends a notification on `channel` the way changes are announced (through the pool). */
  notify?: (channel: string, payload: string) => Promise<void>;
  /** The check's notification did not arrive within PROBE_WAIT_MS (or could not be sent). */
  onDeaf?: (err: Error) => void;
  /** The check's notification arrived. */
  onHeard?: () => void;
  retryDelayMs?: number;
}): Listener {
  const address = parseDatabaseUrl(opts.url);
  let attempt = 0;
  let probe: { payload: string; heard: () => void } | undefined;
  let closed = false;
  // Report a lost connection once, not at every retry of an outage.
  let failing = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  const retryMs = opts.retryDelayMs ?? 2_000;
  const names = Object.keys(opts.channels);

  const connect = async () => {
    if (closed) return;
    const url = address.urlFor(attempt++ % address.hosts.length);
    const c = new pg.Client({ connectionString: url, application_name: 'ratelimit listen', connectionTimeoutMillis: 5_000 });
    client = c;
    const retry = (err: Error) => {
      if (client !== c) return;
      client = undefined;
      c.end().catch(() => undefined);
      if (closed) return;
      if (!failing) opts.onError(err);
      failing = true;
      timer = setTimeout(() => void connect(), retryMs);
      timer.unref();
    };
    c.on('error', retry);
    c.on('end', () => retry(new Error('listener connection ended')));
    c.on('notification', (msg) => {
      if (msg.channel === PROBE_CHANNEL) {
        if (probe && msg.payload === probe.payload) probe.heard();
        return;
      }
      const handler = opts.channels[msg.channel];
      if (handler) handler(msg.payload ?? '');
    });
    try {
      await c.connect();
      for (const name of [...names, ...(opts.notify ? [PROBE_CHANNEL] : [])]) await c.query(`LISTEN ${pg.escapeIdentifier(name)}`);
      attempt--; // stay on this host next time
      failing = false;
      opts.onReconnect();
    } catch (err) {
      retry(err as Error);
      return;
    }
    void check(c);
  };

  const check = async (c: pg.Client) => {
    if (!opts.notify) return;
    const payload = randomBytes(8).toString('hex');
    let timer: NodeJS.Timeout | undefined;
    const heard = new Promise<boolean>((resolve) => {
      probe = { payload, heard: () => resolve(true) };
      timer = setTimeout(() => resolve(false), PROBE_WAIT_MS);
    });
    try {
      await opts.notify(PROBE_CHANNEL, payload);
      const ok = await heard;
      if (closed || client !== c) return;
      if (ok) opts.onHeard?.();
      else opts.onDeaf?.(new Error(`a notification sent through the pool did not reach the listener within ${PROBE_WAIT_MS} ms`));
    } catch (err) {
      if (!closed && client === c) opts.onDeaf?.(err as Error);
    } finally {
      clearTimeout(timer);
      probe = undefined;
    }
  };
  void connect();

  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
    },
  };
}
