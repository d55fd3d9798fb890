// `ratelimit top`: its flags and how it is started. The ink app is loaded only for the live
// view: ink and react cost about a second of start-up, which neither the other commands nor a
// one-shot frame (`--once`, pipes: frame.ts's plain text) should pay.
import type { Command } from 'commander';
import { parseDurationMs } from '../../core/duration.js';
import { ConfigError } from '../../core/errors.js';
import { ensureSchema } from '../../db/open.js';
import { withDatabaseNoKey, type Io } from '../context.js';
import { operatorName } from '../operator.js';
import { renderFrameText } from './frame.js';
import { GuardReader, loadTopFrame, SORTS, TrafficReader, VIEWS, type TopViewName } from './model.js';

const DEFAULT_INTERVAL_MS = 2_000;
// Below this a dashboard is just load on the database; above, it is no longer live.
const MIN_INTERVAL_MS = 200;
const MAX_INTERVAL_MS = 10 * 60_000;
// `--once` on a pipe: --cols, else COLUMNS when it is a usable width, else this.
const DEFAULT_COLUMNS = 80;
const MIN_COLUMNS = 40;
const MAX_COLUMNS = 1_000;
// --rows/LINES below this would leave room for the header alone (frame.ts drops whole panels).
const MIN_ROWS = 10;
const MAX_ROWS = 1_000;

function sizeFlag(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new ConfigError(`${name} must be a whole number from ${min} to ${max}; got "${text}"`);
  return n;
}

function sizeEnv(text: string | undefined, min: number): number | undefined {
  const n = Number(text);
  return text !== undefined && Number.isInteger(n) && n >= min ? Math.min(n, MAX_ROWS) : undefined;
}

/**
 * The size a one-shot frame is laid out for: the flags, then LINES/COLUMNS, then the terminal's;
 * without any height the frame is as tall as its content, panels in the live view's order.
 */
export function onceSize(
  opts: { rows?: string; cols?: string },
  env: Readonly<Record<string, string | undefined>>,
  tty: { columns?: number; rows?: number } | undefined,
): { columns: number; rows: number | undefined } {
  const columns = sizeFlag('--cols', opts.cols, MIN_COLUMNS, MAX_COLUMNS) ?? sizeEnv(env.COLUMNS, MIN_COLUMNS) ?? (tty?.columns || DEFAULT_COLUMNS);
  const rows = sizeFlag('--rows', opts.rows, MIN_ROWS, MAX_ROWS) ?? sizeEnv(env.LINES, MIN_ROWS) ?? (tty?.rows || undefined);
  return { columns, rows };
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

/** `--view`: a usage error (exit 2) when it names no view. */
export function parseView(text: string | undefined): TopViewName {
  if (text === undefined) return 'traffic';
  const view = VIEWS.find((v) => v === text);
  if (!view) throw new ConfigError(`--view must be one of ${VIEWS.join(', ')}; got "${text}"`);
  return view;
}

export function register(program: Command, io: Io): void {
  program
    .command('top')
    .description(
      'live dashboard of the fleet: instances, totals, movers, hottest numbers, database; g switches to the guard view (conversion by country, worst ranges, automatic blocks); q quits',
    )
    .option('--once', 'print one plain frame and exit (the default when stdout is not a terminal)')
    .option('--interval <duration>', 'refresh interval, e.g. 2s or 500ms (default 2s)')
    .option('--rows <n>', 'with --once: fit the frame in this many lines (default: LINES, the terminal, else the whole frame)')
    .option('--cols <n>', 'with --once: fit the frame in this many columns (default: COLUMNS, the terminal, else 80)')
    .option('--view <name>', 'traffic (default) or guard: conversion by country, worst conversion/sweep ranges, automatic blocks (g toggles live)')
    .action(async (opts: { once?: boolean; interval?: string; rows?: string; cols?: string; view?: string }, cmd: Command) => {
      const intervalMs = parseInterval(opts.interval);
      const view = parseView(opts.view);
      const once = opts.once === true || !io.isTTY;
      const size = once ? onceSize(opts, io.env, io.isTTY ? { columns: process.stdout.columns, rows: process.stdout.rows } : undefined) : undefined;
      const runTop = once ? undefined : (await import('./run.js')).runTop;
      await withDatabaseNoKey(
        cmd,
        io,
        async ({ config, db }) => {
          await ensureSchema(db);
          if (runTop) {
            await runTop({ pool: db.pool, policy: config.defaultPolicy, intervalMs, operator: operatorName(io.env), prices: config.prices, view });
            return;
          }
          // Unlike the live view, a failure here is the command's failure (exit 1): a script asked.
          const frame = await loadTopFrame(db.pool, config.defaultPolicy, SORTS[0], new TrafficReader(config.prices), new GuardReader());
          io.out(renderFrameText(frame, { columns: size!.columns, rows: size!.rows, intervalMs, view }));
        },
        { readTimeout: true },
      );
    });
}
