// What the dashboard view is drawn from: plain data, no database types.
import type { HotSort, TopFrame, TopViewName } from './model.js';

export type Connection = { ok: true } | { ok: false; error: string; failures: number; downForMs: number; retryEveryMs: number };

export interface TopViewProps {
  frame: TopFrame | null;
  columns: number;
  /** Height to fit in; undefined: as tall as the content (a `--once` frame). */
  rows?: number;
  intervalMs: number;
  /** The sort asked for (the frame may still carry the previous one while reloading). */
  sort: HotSort;
  paused: boolean;
  /** Live with a keyboard: selection marker and key help. */
  interactive: boolean;
  connection: Connection;
  selectedHash?: string | null;
  /** A question waiting for y/n; replaces the key help. */
  prompt?: string | null;
  message?: string | null;
  /** Which view: the traffic view by default. */
  view?: TopViewName;
}
