// `ratelimit top`: everything it shows comes from the database the daemons share (their
// heartbeat rows and the rate-limit rows), so it never has to reach a daemon over the network.
import { createElement } from 'react';
import { render, renderToString } from 'ink';
import { stripVTControlCharacters } from 'node:util';
import type { Pool } from '../../db/pool.js';
import { readFleet, type DatabaseState, type FleetInstance } from '../../db/fleet.js';
import { hottestNumbers, readStats, resetPhone, type HotSort, type RegionStats, type ResetOutcome } from '../../db/queries.js';
import { hashPrefix } from '../../core/phone.js';
import { evaluate, type Policy } from '../../core/policy.js';
import { parseDurationMs } from '../../core/duration.js';
import { ConfigError } from '../../core/errors.js';
import { TopView } from '../views/TopView.js';
import { TopApp } from '../views/TopApp.js';

export type { HotSort };

export const SORTS: readonly HotSort[] = ['denials', 'calls', 'recent'];
export const DEFAULT_INTERVAL_MS = 2_000;
// Below this a dashboard is just load on the database; above, it is no longer live.
export const MIN_INTERVAL_MS = 200;
export const MAX_INTERVAL_MS = 10 * 60_000;
// Enough to scroll through on a tall terminal; the query stays an index range scan plus a sort.
export const HOT_LIMIT = 50;
export const SPARKLINE_SECONDS = 60;

export interface HotRow {
  /** The full hash: what a reset needs. */
  hash: string;
  hashPrefix: string;
  /** The stored masked number; null for rows written before numbers were stored masked. */
  masked: string | null;
  region: string | null;
  used: number;
  limit: number;
  deniedInWindow: number;
  /** Until the next call is allowed (at its limit) or the oldest counted call leaves the window; 0 when nothing counts. */
  resetInMs: number;
  atLimit: boolean;
}

export interface FleetTotals {
  up: number;
  down: number;
  stopped: number;
  connections: number;
  allowedPerS: number;
  deniedPerS: number;
  onFallback: number;
}

export interface FlyRegionTotals {
  region: string;
  up: number;
  total: number;
  allowedPerS: number;
  deniedPerS: number;
}

export interface TopFrame {
  /** The database's clock, ms since epoch. */
  nowMs: number;
  sort: HotSort;
  limit: number;
  windowMs: number;
  /** Round trip of the lightest of this frame's queries, as seen from here. */
  dbLatencyMs: number;
  database: DatabaseState;
  /** Down first, then up, then stopped; by id within each. */
  instances: FleetInstance[];
  totals: FleetTotals;
  flyRegions: FlyRegionTotals[];
  /** Decisions per second over the last minute summed over live instances, oldest first. */
  series: { allowed: number[]; denied: number[] };
  hottest: HotRow[];
  window: { tracked: number; atLimit: number; calls: number; denials: number; resets: number };
  regions: RegionStats[];
}

// Trouble first: on a short terminal, a down instance must not be the one that scrolls away.
const STATE_ORDER = { down: 0, up: 1, stopped: 2 } as const;

export function fleetTotals(instances: readonly FleetInstance[]): FleetTotals {
  const live = instances.filter((i) => i.state === 'up');
  return {
    up: live.length,
    down: instances.filter((i) => i.state === 'down').length,
    stopped: instances.filter((i) => i.state === 'stopped').length,
    connections: live.reduce((n, i) => n + i.connections, 0),
    allowedPerS: live.reduce((n, i) => n + i.allowedPerS, 0),
    deniedPerS: live.reduce((n, i) => n + i.deniedPerS, 0),
    onFallback: live.filter((i) => i.fallback).length,
  };
}

/**
 * Each live instance's series ends at its own last beat, at most a few seconds apart, so they
 * are summed aligned on their newest sample; instances that are down or stopped no longer count.
 */
export function fleetSeries(instances: readonly FleetInstance[], length = SPARKLINE_SECONDS): { allowed: number[]; denied: number[] } {
  const sum = (pick: (i: FleetInstance) => readonly number[]): number[] => {
    const live = instances.filter((i) => i.state === 'up').map(pick);
    const n = Math.min(length, Math.max(0, ...live.map((s) => s.length)));
    const out = new Array<number>(n).fill(0);
    for (const s of live) {
      for (let k = 1; k <= Math.min(n, s.length); k++) out[n - k]! += s[s.length - k]!;
    }
    return out;
  };
  return { allowed: sum((i) => i.allowedSeries), denied: sum((i) => i.deniedSeries) };
}

export function flyRegionTotals(instances: readonly FleetInstance[]): FlyRegionTotals[] {
  const byRegion = new Map<string, FlyRegionTotals>();
  for (const i of instances) {
    if (i.flyRegion === null || i.state === 'stopped') continue;
    const t = byRegion.get(i.flyRegion) ?? { region: i.flyRegion, up: 0, total: 0, allowedPerS: 0, deniedPerS: 0 };
    t.total++;
    if (i.state === 'up') {
      t.up++;
      t.allowedPerS += i.allowedPerS;
      t.deniedPerS += i.deniedPerS;
    }
    byRegion.set(i.flyRegion, t);
  }
  return [...byRegion.values()].sort((a, b) => b.allowedPerS + b.deniedPerS - (a.allowedPerS + a.deniedPerS) || a.region.localeCompare(b.region));
}

/** One frame of plain data: three queries, sent at once on the pool. */
export async function loadTopFrame(pool: Pool, policy: Policy, sort: HotSort): Promise<TopFrame> {
  const started = performance.now();
  const [timedFleet, stats, hot] = await Promise.all([
    readFleet(pool).then((fleet) => ({ fleet, latencyMs: performance.now() - started })),
    readStats(pool, policy),
    hottestNumbers(pool, policy, HOT_LIMIT, sort),
  ]);
  const { fleet, latencyMs } = timedFleet;
  const instances = [...fleet.instances].sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state] || a.instanceId.localeCompare(b.instanceId));
  const nowMs = hot.nowMs;
  return {
    nowMs: fleet.nowMs,
    sort,
    limit: policy.rules[0]!.max,
    windowMs: stats.windowMs,
    dbLatencyMs: latencyMs,
    database: fleet.database,
    instances,
    totals: fleetTotals(instances),
    flyRegions: flyRegionTotals(instances),
    series: fleetSeries(instances),
    hottest: hot.rows.map((r): HotRow => {
      const d = evaluate(r.calls, nowMs, policy);
      return {
        hash: r.hash,
        hashPrefix: hashPrefix(r.hash),
        masked: r.masked,
        region: r.region,
        used: d.used,
        limit: d.limit,
        deniedInWindow: r.deniedInWindow,
        resetInMs: d.allowed ? (d.used > 0 ? Math.max(0, d.resetTime - nowMs) : 0) : d.retryAfterMs,
        atLimit: !d.allowed,
      };
    }),
    window: { tracked: stats.tracked, atLimit: stats.atLimit, calls: stats.calls, denials: stats.denials, resets: stats.resets },
    regions: stats.regions,
  };
}

/** `--interval`: a usage error (exit 2) when it is not a duration in range. */
export function parseInterval(text: string | undefined): number {
  if (text === undefined) return DEFAULT_INTERVAL_MS;
  const ms = parseDurationMs(text);
  if (ms === null || ms < MIN_INTERVAL_MS || ms > MAX_INTERVAL_MS) {
    throw new ConfigError(`--interval must be a duration from ${MIN_INTERVAL_MS}ms to ${MAX_INTERVAL_MS / 60_000}m, e.g. 2s or 500ms; got "${text}"`);
  }
  return ms;
}

export interface FrameTextOptions {
  columns: number;
  intervalMs: number;
}

/** One frame as plain text (no colour, no trailing spaces): for `--once`, pipes and tickets. */
export function renderFrameText(frame: TopFrame, opts: FrameTextOptions): string {
  const text = renderToString(
    createElement(TopView, {
      frame,
      columns: opts.columns,
      intervalMs: opts.intervalMs,
      sort: frame.sort,
      paused: false,
      interactive: false,
      connection: { ok: true },
    }),
    { columns: opts.columns },
  );
  return stripVTControlCharacters(text)
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n')
    .replace(/\n+$/, '');
}

export interface TopOptions {
  pool: Pool;
  policy: Policy;
  intervalMs: number;
  once: boolean;
  /** Who resets from the dashboard are recorded as. */
  operator: string;
  out: (text: string) => void;
  /** Terminal width for `--once` (the live view follows the terminal). */
  columns: number;
}

// The reason recorded in the audit table for resets made from the dashboard.
export const RESET_REASON = 'top';

export async function runTop(opts: TopOptions): Promise<void> {
  const { pool, policy } = opts;
  if (opts.once) {
    // Unlike the live view, a failure here is the command's failure (exit 1): a script asked.
    const frame = await loadTopFrame(pool, policy, SORTS[0]!);
    opts.out(renderFrameText(frame, { columns: opts.columns, intervalMs: opts.intervalMs }));
    return;
  }
  const stdout = process.stdout;
  const inputActive = Boolean(process.stdin.isTTY);
  // The alternate screen, like top(1): the shell's scrollback is left as it was on exit.
  stdout.write('\x1b[?1049h\x1b[H');
  let unmount: (() => void) | undefined;
  // Without a terminal on stdin there is no `q` (nor raw-mode Ctrl-C): a signal must still
  // unmount cleanly, so the alternate screen is left and the pool closed.
  const onSignal = () => unmount?.();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const app = render(
      createElement(TopApp, {
        load: (sort: HotSort) => loadTopFrame(pool, policy, sort),
        onReset: (row: HotRow): Promise<ResetOutcome> => resetPhone(pool, row.hash, opts.operator, RESET_REASON, policy),
        intervalMs: opts.intervalMs,
        inputActive,
      }),
      { stdout, stdin: process.stdin, exitOnCtrlC: true, patchConsole: true },
    );
    unmount = () => app.unmount();
    await app.waitUntilExit();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    stdout.write('\x1b[?1049l');
  }
}
