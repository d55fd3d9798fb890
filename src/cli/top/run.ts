// Running `ratelimit top`: one plain frame (`--once`, pipes) or the live ink app on the
// alternate screen.
import { createElement } from 'react';
import { render, renderToString } from 'ink';
import { stripVTControlCharacters } from 'node:util';
import type { Pool } from '../../db/pool.js';
import type { Policy } from '../../core/policy/types.js';
import { onStopSignals } from '../signals.js';
import { loadTopFrame, resetFromTop, SORTS, type HotRow, type HotSort, type TopFrame } from './model.js';
import { TopView } from './TopView.js';
import { TopApp } from './TopApp.js';

const LEAVE_ALTERNATE_SCREEN = '\x1b[?1049l';

interface FrameTextOptions {
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
  /** The RATE_LIMIT_* default, used only while no policy has been applied to the database. */
  policy: Policy;
  intervalMs: number;
  once: boolean;
  /** Who resets from the dashboard are recorded as. */
  operator: string;
  out: (text: string) => void;
  /** Terminal width for `--once` (the live view follows the terminal). */
  columns: number;
}

export async function runTop(opts: TopOptions): Promise<void> {
  const { pool, policy } = opts;
  if (opts.once) {
    // Unlike the live view, a failure here is the command's failure (exit 1): a script asked.
    const frame = await loadTopFrame(pool, policy, SORTS[0]);
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
  const removeSignalHandlers = onStopSignals({
    graceful: () => unmount?.(),
    beforeImmediateExit: () => stdout.write(LEAVE_ALTERNATE_SCREEN),
  });
  // The window of the frame on screen: a reset counts what it clears over the same window.
  let windowMs = 0;
  try {
    const app = render(
      createElement(TopApp, {
        load: (sort: HotSort) =>
          loadTopFrame(pool, policy, sort).then((frame) => {
            windowMs = frame.windowMs;
            return frame;
          }),
        onReset: (row: HotRow) => resetFromTop(pool, windowMs, row, opts.operator),
        intervalMs: opts.intervalMs,
        inputActive,
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
