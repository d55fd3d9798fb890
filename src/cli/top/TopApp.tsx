// The live dashboard: refreshes on an interval, survives the database going away (the last
// good frame stays on screen with the error above it, and loading is retried), and handles keys.
import { useEffect, useRef, useState } from 'react';
import { useApp, useInput, useStdout } from 'ink';
import { humanizeMs } from '../../core/duration.js';
import { SORTS, type HotRow, type HotSort, type ResetResult, type TopFrame, type TopViewName } from './model.js';
import type { Connection } from './props.js';
import { TopView } from './TopView.js';

export interface TopAppProps {
  load: (sort: HotSort) => Promise<TopFrame>;
  onReset: (row: HotRow) => Promise<ResetResult>;
  /** `b`: blocks the selected number's range (a prefix entry for BLOCK_FROM_TOP_MS). */
  onBlock?: (prefix: string) => Promise<void>;
  intervalMs: number;
  /** False without a terminal on stdin: Ink's raw mode would throw. */
  inputActive: boolean;
  initialSort?: HotSort;
  /** `g` toggles between the traffic view and the guard's. */
  initialView?: TopViewName;
  /** Fixed size (tests); by default the terminal's, following resizes. */
  columns?: number;
  rows?: number;
  onExit?: () => void;
  /** A query that hangs (a network partition) counts as a failure after this long. */
  loadTimeoutMs?: number;
}

/** How long `b` blocks a range: an incident's first response, to review (docs/incident-playbook.md). */
export const BLOCK_FROM_TOP_MS = 3_600_000;

// Retrying faster than this only adds connection attempts to a database that is struggling.
const MIN_RETRY_MS = 1_000;
const MIN_LOAD_TIMEOUT_MS = 10_000;

function describeError(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return describeError(err.errors[0]);
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return err.message || (typeof code === 'string' ? code : err.name);
  }
  return String(err);
}

function withTimeout<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${humanizeMs(timeoutMs)}`)), timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** Runs `task` now and then after the delay it returns; never two at once; `now()` jumps the queue. */
class Refresher {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private stopped = false;

  constructor(private readonly task: () => Promise<number>) {}

  now(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async run(): Promise<void> {
    this.running = true;
    let delayMs: number;
    try {
      delayMs = await this.task();
    } finally {
      this.running = false;
    }
    if (this.stopped) return;
    if (this.again) {
      this.again = false;
      void this.run();
      return;
    }
    this.timer = setTimeout(() => void this.run(), delayMs);
  }
}

function numberLabel(row: HotRow): string {
  return row.masked ?? `hash ${row.hashPrefix}`;
}

/** What `b` blocks for a row: its range, when its mask is in the range form (`+14155552•••`). */
export function rangeOfRow(row: HotRow): string | null {
  return row.masked !== null && /^\+[0-9]+•{3,}$/.test(row.masked) ? row.masked.replace(/•+$/, '') : null;
}

type Asked = { action: 'reset'; row: HotRow } | { action: 'block'; row: HotRow; prefix: string };

export function TopApp(props: TopAppProps) {
  const { exit } = useApp();
  const { stdout } = useStdout();
  const [frame, setFrame] = useState<TopFrame | null>(null);
  const [connection, setConnection] = useState<Connection>({ ok: true });
  const [paused, setPaused] = useState(false);
  const [sort, setSort] = useState<HotSort>(props.initialSort ?? 'denials');
  const [view, setView] = useState<TopViewName>(props.initialView ?? 'traffic');
  const [selectedHash, setSelectedHash] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<Asked | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const [size, setSize] = useState({ columns: stdout.columns || 80, rows: stdout.rows || 24 });

  // What the refresh loop and the key handler read. Both can run before React has re-rendered
  // (Ink re-subscribes the key handler only after a commit, and keys can arrive in between),
  // so they must not close over state.
  const live = useRef({
    sort,
    paused,
    view: props.initialView ?? ('traffic' as TopViewName),
    force: false,
    failures: 0,
    failingSinceMs: 0,
    frame: null as TopFrame | null,
    selectedHash: null as string | null,
    confirm: null as Asked | null,
  });
  const refresher = useRef<Refresher | null>(null);
  const propsRef = useRef(props);
  propsRef.current = props;

  useEffect(() => {
    const intervalMs = props.intervalMs;
    const retryMs = Math.max(intervalMs, MIN_RETRY_MS);
    const timeoutMs = props.loadTimeoutMs ?? Math.max(MIN_LOAD_TIMEOUT_MS, 3 * intervalMs);
    let unmounted = false;
    const task = async (): Promise<number> => {
      const s = live.current;
      const force = s.force;
      s.force = false;
      if (s.paused && !force) return intervalMs;
      try {
        const next = await withTimeout(propsRef.current.load(s.sort), timeoutMs);
        if (unmounted) return intervalMs;
        s.frame = next;
        setFrame(next);
        if (s.failures > 0) setMessage(`database back after ${humanizeMs(Date.now() - s.failingSinceMs)}`);
        s.failures = 0;
        setConnection({ ok: true });
        return intervalMs;
      } catch (err) {
        if (unmounted) return retryMs;
        if (s.failures === 0) s.failingSinceMs = Date.now();
        s.failures++;
        setConnection({ ok: false, error: describeError(err), failures: s.failures, downForMs: Date.now() - s.failingSinceMs, retryEveryMs: retryMs });
        return retryMs;
      }
    };
    const r = new Refresher(task);
    refresher.current = r;
    r.now();
    return () => {
      unmounted = true;
      r.stop();
    };
  }, [props.intervalMs, props.loadTimeoutMs]);

  useEffect(() => {
    if (props.columns !== undefined) return;
    const onResize = () => setSize({ columns: stdout.columns || 80, rows: stdout.rows || 24 });
    stdout.on('resize', onResize);
    return () => {
      stdout.off('resize', onResize);
    };
  }, [stdout, props.columns]);

  const refreshNow = () => {
    live.current.force = true;
    refresher.current?.now();
  };

  const selectedIndex = (): number => {
    const rows = live.current.frame?.hottest ?? [];
    const i = rows.findIndex((r) => r.hash === live.current.selectedHash);
    return i < 0 ? 0 : i;
  };

  const select = (delta: number) => {
    const rows = live.current.frame?.hottest ?? [];
    if (rows.length === 0) return;
    const next = Math.max(0, Math.min(rows.length - 1, selectedIndex() + delta));
    live.current.selectedHash = rows[next]!.hash;
    setSelectedHash(rows[next]!.hash);
  };

  useInput(
    (input, key) => {
      const asked = live.current.confirm;
      if (asked) {
        live.current.confirm = null;
        setConfirm(null);
        if (input !== 'y' && input !== 'Y') {
          setMessage(`${asked.action} cancelled`);
          return;
        }
        if (asked.action === 'block') {
          const prefix = asked.prefix;
          setMessage(`blocking ${prefix}…`);
          (propsRef.current.onBlock ?? (() => Promise.reject(new Error('not available here'))))(prefix)
            .then(() => setMessage(`blocked ${prefix}••• for ${humanizeMs(BLOCK_FROM_TOP_MS)}: every daemon within 2 s`))
            .catch((err: unknown) => setMessage(`block failed: ${describeError(err)}`))
            .finally(refreshNow);
          return;
        }
        const row = asked.row;
        setMessage(`resetting ${numberLabel(row)}…`);
        propsRef.current
          .onReset(row)
          .then((out) => setMessage(`reset ${numberLabel(row)}: ${out.previousCount} call${out.previousCount === 1 ? '' : 's'} cleared`))
          .catch((err: unknown) => setMessage(`reset failed: ${describeError(err)}`))
          .finally(refreshNow);
        return;
      }
      if (input === 'q') {
        propsRef.current.onExit?.();
        exit();
      } else if (input === 'p') {
        const next = !live.current.paused;
        live.current.paused = next;
        setPaused(next);
        if (!next) refreshNow();
      } else if (input === 'g') {
        // The frame holds both views' data: switching needs no reload.
        const next: TopViewName = live.current.view === 'guard' ? 'traffic' : 'guard';
        live.current.view = next;
        setView(next);
      } else if (live.current.view === 'guard') {
        // The traffic view's keys act on its selection, which the guard view does not show.
        return;
      } else if (input === 's') {
        const next = SORTS[(SORTS.indexOf(live.current.sort) + 1) % SORTS.length]!;
        live.current.sort = next;
        setSort(next);
        refreshNow();
      } else if (key.upArrow || input === 'k') {
        select(-1);
      } else if (key.downArrow || input === 'j') {
        select(1);
      } else if (input === 'r') {
        const row = live.current.frame?.hottest[selectedIndex()];
        if (!row) {
          setMessage('no number to reset');
          return;
        }
        // The selection follows the number through the reload, so the result is in view.
        live.current.selectedHash = row.hash;
        setSelectedHash(row.hash);
        const ask: Asked = { action: 'reset', row };
        live.current.confirm = ask;
        setConfirm(ask);
      } else if (input === 'b') {
        const row = live.current.frame?.hottest[selectedIndex()];
        if (!row) {
          setMessage('no number to block the range of');
          return;
        }
        const prefix = rangeOfRow(row);
        if (prefix === null) {
          setMessage('this mask names no range (an older row): use ratelimit block --top range N');
          return;
        }
        live.current.selectedHash = row.hash;
        setSelectedHash(row.hash);
        const ask: Asked = { action: 'block', row, prefix };
        live.current.confirm = ask;
        setConfirm(ask);
      }
    },
    { isActive: props.inputActive },
  );

  const prompt = !confirm
    ? null
    : confirm.action === 'reset'
      ? `Reset ${numberLabel(confirm.row)} (${confirm.row.hashPrefix})? Usage is cleared, audited as "top". y/n`
      : `Block every number in ${confirm.prefix}••• for ${humanizeMs(BLOCK_FROM_TOP_MS)}? Audited as "top". y/n`;
  return (
    <TopView
      frame={frame}
      columns={props.columns ?? size.columns}
      // One line short of the terminal: a frame as tall as the screen makes Ink clear it on every render.
      rows={props.rows ?? Math.max(10, size.rows - 1)}
      intervalMs={props.intervalMs}
      sort={sort}
      paused={paused}
      interactive={props.inputActive}
      connection={connection}
      selectedHash={selectedHash}
      prompt={prompt}
      message={message}
      view={view}
    />
  );
}
