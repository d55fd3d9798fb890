// Running the live `ratelimit top`: the ink app on the alternate screen (`--once` and pipes
// print frame.ts's plain text and never load this file).
import { createElement } from 'react';
import { render } from 'ink';
import type { Pool } from '../../db/pool.js';
import type { Policy } from '../../core/policy/types.js';
import { onStopSignals } from '../signals.js';
import { blockFromTop, GuardReader, loadTopFrame, resetFromTop, TrafficReader, type HotRow, type HotSort, type TopViewName } from './model.js';
import type { PriceTable } from '../../core/prices.js';
import { BLOCK_FROM_TOP_MS, TopApp } from './TopApp.js';

const LEAVE_ALTERNATE_SCREEN = '\x1b[?1049l';

export interface TopOptions {
  pool: Pool;
  /** The RATE_LIMIT_* default, used only while no policy has been applied to the database. */
  policy: Policy;
  intervalMs: number;
  /** Who resets from the dashboard are recorded as. */
  operator: string;
  prices: PriceTable;
  /** The view shown first (`g` toggles). */
  view?: TopViewName;
}

export async function runTop(opts: TopOptions): Promise<void> {
  const { pool, policy } = opts;
  const stdout = process.stdout;
  const inputActive = Boolean(process.stdin.isTTY);
  // The alternate screen, like top(1): the shell's scrollback is left as it was on exit.
  stdout.write('\x1b[?1049h\x1b[H');
  let unmount: (() => void) | undefined;
  // Without a terminal on stdin there is no `q` (nor raw-mode Ctrl-C): a signal must still
  // unmount cleanly, so the alternate screen is left and the pool closed.
  const removeSignalHandlers = onStopSignals({
    graceful: () => unmount?.(),
    beforeImmediateExit: () => stdout.write(LEAVE_ALTERNATE_SCREEN),
  });
  // The window of the frame on screen: a reset counts what it clears over the same window.
  let windowMs = 0;
  // One reader for the whole session: it keeps the baseline between frames.
  const traffic = new TrafficReader(opts.prices);
  // Likewise the day's conversion totals.
  const guard = new GuardReader();
  try {
    const app = render(
      createElement(TopApp, {
        load: (sort: HotSort) =>
          loadTopFrame(pool, policy, sort, traffic, guard).then((frame) => {
            windowMs = frame.windowMs;
            return frame;
          }),
        onReset: (row: HotRow) => resetFromTop(pool, windowMs, row, opts.operator),
        onBlock: (prefix: string) => blockFromTop(pool, prefix, opts.operator, BLOCK_FROM_TOP_MS),
        intervalMs: opts.intervalMs,
        inputActive,
        ...(opts.view ? { initialView: opts.view } : {}),
      }),
      { stdout, stdin: process.stdin, exitOnCtrlC: true, patchConsole: true },
    );
    unmount = () => app.unmount();
    await app.waitUntilExit();
  } finally {
    removeSignalHandlers();
    stdout.write(LEAVE_ALTERNATE_SCREEN);
  }
}
