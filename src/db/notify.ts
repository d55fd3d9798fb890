import pg from 'pg';

export interface Listener {
  close(): Promise<void>;
}

/**
 * Keeps one connection LISTENing on several channels (resets, policy and list changes, made
 * anywhere: CLI, `top`, another daemon): one connection per daemon whatever the number of
 * channels. Every (re)connection calls `onReconnect`, because what was announced while it was
 * down was missed.
 */
export function listen(opts: {
  url: string;
  /** Channel name -> handler of its payloads. Names are fixed identifiers of this code base. */
  channels: Readonly<Record<string, (payload: string) => void>>;
  onReconnect: () => void;
  onError: (err: Error) => void;
  retryDelayMs?: number;
}): Listener {
  let closed = false;
  // Report a lost connection once, not at every retry of an outage.
  let failing = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  const retryMs = opts.retryDelayMs ?? 2_000;
  const names = Object.keys(opts.channels);

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
    c.on('end', () => retry(new Error('listener connection ended')));
    c.on('notification', (msg) => {
      const handler = opts.channels[msg.channel];
      if (handler) handler(msg.payload ?? '');
    });
    try {
      await c.connect();
      for (const name of names) await c.query(`LISTEN ${pg.escapeIdentifier(name)}`);
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
