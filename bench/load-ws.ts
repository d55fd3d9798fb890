// WebSocket load generator, in its own process so its CPU is not the daemon's. `sockets`
// connections each keep `perSocket` consumes in flight (closed loop). Replies on one socket keep
// request order (docs/protocol.md), so a FIFO of send times gives each request's latency without
// parsing the reply: parsing JSON here would spend the CPU the daemon needs on a shared machine.
import WebSocket from 'ws';
import { LatencyHistogram, sleep } from './lib/stats.js';
import { cpuWindow, driveOpenLoop, emit, peakRssMb, workerArgs, workerResult } from './lib/child.js';
import { clientIp, keySampler, phoneNumber, type KeyDistribution } from './lib/keys.js';

export interface WsLoadConfig {
  mode: 'consume' | 'echo' | 'idle';
  url: string;
  token?: string;
  sockets: number;
  perSocket: number;
  dist: KeyDistribution;
  warmupMs: number;
  measureMs: number;
  /** Offsets the per-request end-user address so runs against one daemon never reuse one. */
  ipBase?: number;
  /** consume: send this many in all, then stop (measuring all of them) instead of running for warmupMs + measureMs. */
  stopAfter?: number;
  /** consume: open loop at this many requests a second over `sockets` (round robin) instead of `perSocket` in flight. */
  rate?: number;
  /** idle: how long to hold the connections open at most (the parent normally says when). */
  holdMs?: number;
}

const cfg = workerArgs<WsLoadConfig>();
const headers = cfg.token ? { Authorization: `Bearer ${cfg.token}` } : undefined;
// Source addresses across 127.0.0.1-8: one address has ~28k ephemeral ports, enough today, but
// the idle scenario should not depend on the host's port range.
const SOURCES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`);
const OPEN_CONCURRENCY = 256;
const DRAIN_TIMEOUT_MS = 10_000;

function open(i: number): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(cfg.url, { headers, perMessageDeflate: false, localAddress: SOURCES[i % SOURCES.length] });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
  });
}

async function openAll(n: number): Promise<WebSocket[]> {
  const out: WebSocket[] = new Array(n);
  let next = 0;
  const opener = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await open(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, n) }, opener));
  return out;
}

async function idle(): Promise<void> {
  const t0 = performance.now();
  const sockets = await openAll(cfg.sockets);
  for (const ws of sockets) ws.on('error', () => undefined);
  emit({ event: 'ready', opened: sockets.length, openMs: Math.round(performance.now() - t0) });
  // The parent reads the daemon's memory, then writes a line (or closes stdin) to release us.
  await Promise.race([new Promise((r) => process.stdin.once('data', r).once('end', r)), sleep(cfg.holdMs ?? 60_000)]);
  const alive = sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length;
  for (const ws of sockets) ws.terminate();
  emit({
    event: 'result',
    result: {
      decisions: 0,
      allowed: 0,
      denied: 0,
      errors: cfg.sockets - alive,
      measuredS: 0,
      p50Ms: NaN,
      p99Ms: NaN,
      maxMs: NaN,
      cpuPercent: NaN,
      peakRssMb: peakRssMb(),
      extra: { alive },
    },
  });
}

async function load(): Promise<void> {
  const nextKey = keySampler(cfg.dist);
  const sockets = await openAll(cfg.sockets);
  const hist = new LatencyHistogram();
  let measuring = false;
  let stopped = false;
  let allowed = 0;
  let denied = 0;
  let errors = 0;
  let outstanding = 0;
  let firstError: string | undefined;
  let seq = 0;
  let ipCounter = cfg.ipBase ?? 0;
  let drained: (() => void) | undefined;

  const frame = (): string => `{"type":"rate_limit_consume","id":${seq++},"phoneNumber":"${phoneNumber(nextKey())}","ip":"${clientIp(ipCounter++)}"}`;

  for (const ws of sockets) {
    const sent: number[] = [];
    let head = 0;
    const send = () => {
      sent.push(performance.now());
      outstanding++;
      ws.send(frame());
    };
    ws.on('message', (data: Buffer) => {
      const t0 = sent[head++]!;
      if (head > 4096) {
        sent.splice(0, head);
        head = 0;
      }
      outstanding--;
      if (measuring) {
        // Replies are `{"type":"rate_limit_status",...` or `..._exceeded`; anything else is an error.
        const kind = cfg.mode === 'echo' ? 's' : String.fromCharCode(data[20] ?? 0);
        if (kind === 's') allowed++;
        else if (kind === 'e') denied++;
        else {
          errors++;
          firstError ??= data.toString().slice(0, 200);
        }
        if (kind === 's' || kind === 'e') hist.recordMs(performance.now() - t0);
      }
      if (!stopped && (cfg.stopAfter === undefined || seq < cfg.stopAfter)) send();
      else if (outstanding === 0) drained?.();
    });
    ws.on('error', (err) => (firstError ??= err.message));
    ws.on('close', () => {
      if (!stopped) firstError ??= 'socket closed during the run';
    });
    for (let i = 0; i < cfg.perSocket; i++) send();
  }
  if (cfg.stopAfter === undefined) await sleep(cfg.warmupMs);
  emit({ event: 'measure-start' });
  const cpu = cpuWindow();
  const t0 = performance.now();
  measuring = true;
  if (cfg.stopAfter === undefined) await sleep(cfg.measureMs);
  else await Promise.race([new Promise<void>((r) => (drained = r)), sleep(cfg.measureMs)]);
  measuring = false;
  const measuredS = (performance.now() - t0) / 1000;
  const cpuPercent = cpu();
  emit({ event: 'measure-end' });
  stopped = true;
  if (outstanding > 0) await Promise.race([new Promise<void>((r) => (drained = r)), sleep(DRAIN_TIMEOUT_MS)]);
  for (const ws of sockets) ws.terminate();
  emit({
    event: 'result',
    result: workerResult({ allowed, denied, errors, measuredS, hist, cpuPercent, firstError }),
  });
}

/** Open loop: each reply settles the oldest request of its socket (replies keep request order). */
async function openLoad(rate: number): Promise<void> {
  const nextKey = keySampler(cfg.dist);
  const sockets = await openAll(cfg.sockets);
  const waiting = sockets.map(() => [] as { resolve: (o: 'allowed' | 'denied') => void; reject: (e: Error) => void }[]);
  sockets.forEach((ws, i) => {
    ws.on('message', (data: Buffer) => {
      const w = waiting[i]!.shift();
      const kind = String.fromCharCode(data[20] ?? 0);
      if (kind === 's') w?.resolve('allowed');
      else if (kind === 'e') w?.resolve('denied');
      else w?.reject(new Error(data.toString().slice(0, 200)));
    });
    ws.on('error', () => undefined);
  });
  let seq = 0;
  let ipCounter = cfg.ipBase ?? 0;
  const result = await driveOpenLoop({
    ratePerS: rate,
    warmupMs: cfg.warmupMs,
    measureMs: cfg.measureMs,
    op: () =>
      new Promise((resolve, reject) => {
        const i = seq % sockets.length;
        waiting[i]!.push({ resolve, reject });
        sockets[i]!.send(`{"type":"rate_limit_consume","id":${seq++},"phoneNumber":"${phoneNumber(nextKey())}","ip":"${clientIp(ipCounter++)}"}`);
      }),
  });
  for (const ws of sockets) ws.terminate();
  emit({ event: 'result', result });
}

await (cfg.mode === 'idle' ? idle() : cfg.rate ? openLoad(cfg.rate) : load());
process.exit(0);
