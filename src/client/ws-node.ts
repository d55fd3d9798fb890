// The Node side of a client connection: the `ws` package, which (unlike a browser) can send an
// Authorization header, see the HTTP status that refused an upgrade, and ping.

import WebSocket from 'ws';
import type { Connect, Connection } from './core.js';

// Bounds an attempt to a blackholed host; requests are answered by their own timeouts meanwhile.
const HANDSHAKE_TIMEOUT_MS = 10_000;
// A half-open TCP connection (NAT drop, host gone) is otherwise only noticed by timeouts.
const HEARTBEAT_INTERVAL_MS = 15_000;
// Replies are a few hundred bytes; anything near this is not the daemon talking.
const MAX_REPLY_BYTES = 64 * 1024;

/** A Connect that sends `token` as `Authorization: Bearer <token>` on the upgrade. */
export function connectWithWs(token: string | undefined): Connect {
  return (url, events): Connection => {
    const headers: Record<string, string> = {};
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const socket = new WebSocket(url, {
      headers,
      perMessageDeflate: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      maxPayload: MAX_REPLY_BYTES,
    });
    let refusedStatus: number | undefined;
    let lastError: Error | undefined;
    let heartbeat: NodeJS.Timeout | undefined;
    let alive = true;

    socket.on('unexpected-response', (_req, res) => {
      refusedStatus = res.statusCode;
      res.resume();
      socket.terminate();
    });
    socket.on('error', (err) => {
      lastError = err;
    });
    socket.on('open', () => {
      heartbeat = setInterval(() => {
        if (!alive) {
          socket.terminate();
          return;
        }
        alive = false;
        socket.ping();
      }, HEARTBEAT_INTERVAL_MS);
      heartbeat.unref();
      events.open();
    });
    socket.on('pong', () => {
      alive = true;
    });
    socket.on('message', (data) => {
      alive = true;
      events.message(String(data));
    });
    socket.on('close', (code, reason) => {
      clearInterval(heartbeat);
      events.close({
        code,
        reason: String(reason),
        ...(refusedStatus !== undefined ? { refusedStatus } : {}),
        ...(lastError !== undefined ? { error: lastError } : {}),
      });
    });
    return {
      send: (frame) => socket.send(frame),
      close: (code, reason) => socket.close(code, reason),
      terminate: () => socket.terminate(),
    };
  };
}
