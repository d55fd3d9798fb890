// The movers panel: countries and 1,000-number ranges by how far above their normal share of
// active numbers they are now (src/core/traffic.ts), with their spend; needs no rule. Placed
// first under the totals: in an attack it is what names what to block.
import { formatDurationMs } from '../../core/duration.js';
import { formatMoney } from '../../core/prices.js';
import type { Mover } from '../../core/traffic.js';
import type { MoversView, TopFrame } from './model.js';
import { count, len, type Line } from './text.js';
import { headerLine, layoutColumns, rowLine, type Column } from './table.js';

export function ratioText(m: Pick<Mover, 'ratio'>): string {
  if (m.ratio === null) return '—';
  if (m.ratio === Infinity) return 'new';
  return m.ratio >= 10 ? `×${Math.round(m.ratio)}` : `×${m.ratio.toFixed(1)}`;
}

export function pct(share: number | null): string {
  if (share === null) return '—';
  const p = share * 100;
  return p >= 10 || p === 0 ? `${Math.round(p)}%` : `${p.toFixed(1)}%`;
}

function keyText(m: Mover): string {
  return m.kind === 'country' ? m.key : `${m.key} ${m.country}`;
}

function columns(v: MoversView): Column<Mover>[] {
  const keyWidth = Math.max(len('ABOVE NORMAL'), ...v.rows.map((m) => len(keyText(m))));
  const money = (m: Mover) => formatMoney(v.prices, m.spendPerMin);
  const moneyWidth = Math.max(6, ...v.rows.map((m) => len(money(m))));
  return [
    {
      title: 'ABOVE NORMAL',
      width: keyWidth,
      min: keyWidth,
      priority: 0,
      cell: (m) => ({ text: keyText(m), ...(m.kind === 'country' ? { bold: true } : {}) }),
    },
    { title: 'NUMS', width: 5, align: 'right', priority: 1, cell: (m) => ({ text: count(m.numbers) }) },
    { title: 'CALLS', width: 6, align: 'right', priority: 3, cell: (m) => ({ text: count(m.calls) }) },
    { title: 'NOW', width: 5, align: 'right', priority: 2, cell: (m) => ({ text: pct(m.share) }) },
    { title: 'NORMAL', width: 6, align: 'right', priority: 2, cell: (m) => ({ text: pct(m.normalShare), dim: true }) },
    {
      title: 'VS',
      width: 5,
      align: 'right',
      priority: 1,
      cell: (m) => ({ text: ratioText(m), ...(m.ratio !== null && m.ratio >= 3 && m.numbers >= 10 ? { color: 'red' as const, bold: true } : {}) }),
    },
    { title: '/MIN', width: moneyWidth, align: 'right', priority: 1, cell: (m) => ({ text: money(m) }) },
    { title: '', width: 7, priority: 1, cell: (m) => (m.blocked ? { text: 'BLOCKED', color: 'magenta' as const, bold: true } : { text: '' }) },
  ];
}

/** The title line: what is compared with what, and whether the prices are only the default. */
function titleLine(v: MoversView): Line {
  const base = v.baselineEpochs === 0 ? 'no history yet' : `vs the ${formatDurationMs(v.baselineSpanMs)} before`;
  return [
    { text: 'movers   ', bold: true },
    { text: `last ${formatDurationMs(v.windowMs)} ${base} · spend ${formatMoney(v.prices, v.spendPerMin)}/min` },
    ...(v.prices.isDefault ? [{ text: ' (default prices: set RATELIMIT_PRICES)', dim: true }] : []),
  ];
}

export function moversWanted(f: TopFrame): number {
  const v = f.movers;
  if (!v) return 0;
  return v.rows.length === 0 ? 2 : 2 + v.rows.length;
}

/** Title, header and up to `maxRows - 2` keys, most above normal first. */
export function moversSection(f: TopFrame, width: number, maxRows: number): Line[] {
  const v = f.movers;
  if (!v || maxRows < 2) return [];
  if (v.rows.length === 0) return [titleLine(v), [{ text: `no calls in the last ${formatDurationMs(v.windowMs)}`, dim: true }]];
  const cols = layoutColumns(columns(v), width);
  const room = maxRows - 2;
  const overflow = v.rows.length > room;
  const shown = v.rows.slice(0, overflow ? Math.max(0, room - 1) : room);
  const lines: Line[] = [titleLine(v), headerLine(cols)];
  for (const m of shown) lines.push(rowLine(cols, m, m.blocked ? { dim: true } : {}));
  if (overflow)
    lines.push([
      {
        text: `… ${v.rows.length - shown.length} more${v.unranged > 0 ? ` · ${count(v.unranged)} numbers with older masks counted by country only` : ''}`,
        dim: true,
      },
    ]);
  return lines;
}
