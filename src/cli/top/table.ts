// Tables for the dashboard: columns are dropped (least important first) until the rest fit
// the terminal, then widened.
import { fit, type Line, type Seg } from './text.js';

export interface Column<T> {
  title: string;
  /** Preferred width; `min` when space is short. */
  width: number;
  min?: number;
  align?: 'left' | 'right';
  /** Takes a share of spare width (ids, hosts), up to this many characters. */
  grow?: number;
  /** Lower is kept longer. */
  priority: number;
  cut?: 'end' | 'middle';
  cell: (row: T) => Seg;
}

export interface Placed<T> extends Column<T> {
  w: number;
}

export const GAP = 1;

export function layoutColumns<T>(columns: readonly Column<T>[], width: number): Placed<T>[] {
  const byPriority = [...columns].sort((a, b) => a.priority - b.priority);
  const chosen = new Set<Column<T>>();
  let used = 0;
  for (const c of byPriority) {
    const need = (c.min ?? c.width) + (chosen.size > 0 ? GAP : 0);
    if (used + need > width) continue;
    chosen.add(c);
    used += need;
  }
  const placed = columns.filter((c) => chosen.has(c)).map((c) => ({ ...c, w: c.min ?? c.width }));
  let spare = width - used;
  for (const c of [...placed].sort((a, b) => a.priority - b.priority)) {
    const more = Math.min(spare, c.width - c.w);
    c.w += more;
    spare -= more;
  }
  const growers = placed.filter((c) => c.grow !== undefined);
  for (let i = 0; i < growers.length && spare > 0; i++) {
    const c = growers[i]!;
    const share = Math.min(Math.ceil(spare / (growers.length - i)), Math.max(0, c.grow! - c.w));
    c.w += share;
    spare -= share;
  }
  return placed;
}

export function tableWidth<T>(cols: readonly Placed<T>[]): number {
  return cols.reduce((n, c) => n + c.w, 0) + Math.max(0, cols.length - 1) * GAP;
}

export function headerLine<T>(cols: readonly Placed<T>[]): Line {
  return [{ text: cols.map((c) => fit(c.title, c.w, c.align)).join(' '), bold: true, dim: true }];
}

export function rowLine<T>(cols: readonly Placed<T>[], row: T, extra: Partial<Seg> = {}): Line {
  const out: Line = [];
  cols.forEach((c, i) => {
    if (i > 0) out.push({ text: ' ', ...extra });
    const cell = c.cell(row);
    out.push({ ...cell, ...extra, text: fit(cell.text, c.w, c.align, c.cut) });
  });
  return out;
}
