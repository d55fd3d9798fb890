// The listener of RATELIMIT_METRICS_PORT: `GET /metrics` and nothing else, so the public port
// need not reveal traffic and outages to anyone who asks (Fly scrapes a private port given in
// fly.toml's [metrics] block). Separate from http.ts: no auth, no CORS, no decisions.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ROUTES } from '../../protocol/wire.js';
import { errorReply } from '../../protocol/replies.js';
import type { Metrics } from '../metrics.js';
import { parseTarget } from './target.js';

// A scrape is one short request; nothing here waits on a client for long.
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;

export function createMetricsServer(metrics: Metrics, logger: Logger): Server {
  const server = createServer({ headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
    answer(req, res, metrics).catch((err: unknown) => {
      logger.error({ err }, 'metrics request failed');
      if (!res.headersSent) send(res, 500, JSON.stringify(errorReply('internal_error', 'internal error')));
      else res.destroy();
    });
  });
  // An upgrade here is never meant: refused rather than left hanging.
  server.on('upgrade', (_req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => undefined);
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  return server;
}

async function answer(req: IncomingMessage, res: ServerResponse, metrics: Metrics): Promise<void> {
  const target = parseTarget(req.url);
  if (!target.ok) return send(res, 400, JSON.stringify(errorReply('invalid_message', target.message)));
  if (target.path !== ROUTES.metrics) return send(res, 404, JSON.stringify(errorReply('invalid_message', `this port serves only ${ROUTES.metrics}`)));
  if (req.method !== 'GET') return send(res, 405, JSON.stringify(errorReply('invalid_message', 'use GET')), { Allow: 'GET' });
  const text = await metrics.registry.metrics();
  res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
  res.end(text);
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}
