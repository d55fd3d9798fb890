import pg from 'pg';
import { RESET_CHANNEL } from './queries.js';

export interface ResetListener {
  close(): Promise<void>;
}

/**
 * Keeps one connection LISTENing for resets made anywhere (CLI, `top`, another daemon). Every
 * (re)connection calls `onReconnect`, because resets announced while it was down were missed.
 */
export function listenForResets(opts: {
  url: string;
  onReset: (hash: string) => void;
  onReconnect: () => void;
  onError: (err: Error) => void;
  retryDelayMs?: number;
}): ResetListener {
  let closed = false;
  // Report a lost connection once, not at every retry of an outage.
  let failing = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  const retryMs = opts.retryDelayMs ?? 2_000;

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString: opts.url, application_name: 'ratelimit listen', connectionTimeoutMillis: 5_000 });
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
    c.on('end', () => retry(new Error('reset listener connection ended')));
    c.on('notification', (msg) => {
      if (msg.channel === RESET_CHANNEL && msg.payload) opts.onReset(msg.payload);
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${RESET_CHANNEL}`);
      failing = false;
      opts.onReconnect();
    } catch (err) {
      retry(err as Error);
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
