// The aggregate rules' panel: the prefixes, countries and global budget closest to their limit
// (prefixes masked, `+1415555•••`), shadow rules marked. Keys and usages are never cut.
import type { AggregateUsage } from '../policy-usage.js';
import type { TopFrame } from './model.js';
import { len, type Line } from './text.js';
import { headerLine, layoutColumns, rowLine, type Column } from './table.js';

function columns(rows: readonly AggregateUsage[]): Column<AggregateUsage>[] {
  const ruleWidth = Math.max(len('AGGREGATE'), ...rows.map((r) => len(r.ruleId)));
  const keyWidth = Math.max(3, ...rows.map((r) => len(r.label)));
  const usedWidth = Math.max(4, ...rows.map((r) => len(`${r.used}/${r.limit}`)));
  return [
    { title: 'AGGREGATE', width: ruleWidth, min: ruleWidth, priority: 0, cell: (r) => ({ text: r.ruleId }) },
    { title: 'KEY', width: keyWidth, min: keyWidth, priority: 0, cell: (r) => ({ text: r.label }) },
    {
      title: 'USED',
      width: usedWidth,
      min: usedWidth,
      align: 'right',
      priority: 0,
      cell: (r) => ({
        text: `${r.used}/${r.limit}`,
        ...(r.used >= r.limit ? { color: 'red' as const, bold: true } : r.used * 10 >= r.limit * 8 ? { color: 'yellow' as const } : {}),
      }),
    },
    { title: '%', width: 4, align: 'right', priority: 2, cell: (r) => ({ text: `${Math.min(999, Math.floor((r.used * 100) / r.limit))}%` }) },
    { title: '', width: 6, priority: 1, cell: (r) => ({ text: r.shadow ? 'shadow' : '', color: 'magenta' }) },
  ];
}

/** Header plus up to `maxRows - 1` keys; nothing when no aggregate counts anything in its window. */
export function aggregatesSection(f: TopFrame, width: number, maxRows: number): Line[] {
  if (f.aggregates.length === 0 || maxRows < 2) return [];
  const cols = layoutColumns(columns(f.aggregates), width);
  // RULE, KEY and USED or nothing: a usage without its key says nothing.
  if (cols.filter((c) => c.priority === 0).length < 3) return [];
  const room = maxRows - 1;
  const overflow = f.aggregates.length > room;
  const shown = f.aggregates.slice(0, overflow ? room - 1 : room);
  const lines: Line[] = [headerLine(cols)];
  for (const r of shown) lines.push(rowLine(cols, r));
  if (overflow) lines.push([{ text: `… ${f.aggregates.length - shown.length} more`, dim: true }]);
  return lines;
}

export function aggregatesWanted(f: TopFrame): number {
  return f.aggregates.length === 0 ? 0 : 1 + f.aggregates.length;
}
