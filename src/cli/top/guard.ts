// The guard that learns from outcomes, on the dashboard (issue #19): a short summary in the
// traffic view (automatic blocks, the worst ranges, idle conversion rules), placed above the
// movers while something is blocked or at its limit, below the denials otherwise; and a view of
// its own (`g`, or `--view guard`) with conversion by country, the worst ranges and every
// automatic block. Ranges show as `+4477009•••`, numbers masked: never a number.
import { CONVERSION_IDLE_TEXT, pctText, type CountryConversion, type GuardBlock, type GuardRange, type GuardView } from '../guard-text.js';
import type { TopFrame } from './model.js';
import { count, fit, len, wrapParts, type Line } from './text.js';
import { headerLine, layoutColumns, rowLine, type Column } from './table.js';

const LABEL_WIDTH = 9;
const label = (name: string): Line => [{ text: fit(name, LABEL_WIDTH), bold: true }];

function shortRule(ruleId: string): string {
  return ruleId
    .replace(/^conversion:prefix:/, 'conv:')
    .replace(/^sweep:prefix:/, 'sweep:')
    .replace(/^number:block_after$/, 'block_after');
}

/** Time left, short and never early: `45s`, `5m` (4m 57s left), `11h 5m`. */
function endsIn(until: number, nowMs: number): string {
  const ms = until - nowMs;
  if (ms <= 0) return 'now';
  if (ms < 60_000) return `${Math.ceil(ms / 1000)}s`;
  const minutes = Math.ceil(ms / 60_000);
  if (minutes < 60) return `${minutes}m`;
  return `${Math.floor(minutes / 60)}h${minutes % 60 ? ` ${minutes % 60}m` : ''}`;
}

/** What tripped it, in a word: a number's mask and its range's label read the same. */
function blockKind(b: GuardBlock): string {
  return b.targetType === 'number' ? 'number' : b.rule.startsWith('sweep:') ? 'sweep' : 'conv';
}

function levelText(level: number): string {
  return level > 0 ? `L${level}` : 'L—';
}

/** Something the operator should look at now: a block in force, or a range at its limit. */
export function guardUrgent(g: GuardView | null | undefined): boolean {
  return !!g && (g.blocks.length > 0 || g.ranges.some((r) => !r.shadow && r.used >= r.limit));
}

/** The traffic view's summary: the idle line, the blocks, the worst ranges; nothing when there is nothing to say. */
export function guardSummarySection(f: TopFrame, columns: number): Line[] {
  const g = f.guard;
  if (!g) return [];
  const lines: Line[] = [];
  if (g.conversionIdle) lines.push([{ text: CONVERSION_IDLE_TEXT, color: 'yellow' }]);
  const total = g.blocksTotal.ranges + g.blocksTotal.numbers;
  if (total > 0) {
    const parts: Line[] = [
      [{ text: `${count(total)} in force`, color: 'magenta', bold: true }],
      ...g.blocks.slice(0, 6).map((b): Line => [{ text: `${blockKind(b)} ${b.target} ${levelText(b.level)} ${endsIn(b.until, f.nowMs)}`, color: 'magenta' }]),
    ];
    // Two lines at most: the guard view (g) and `ratelimit list` have them all.
    lines.push(...wrapParts(label('blocked'), parts, columns).slice(0, 2));
  }
  const worst = g.ranges.filter((r) => r.used > 0).slice(0, 4);
  if (worst.length > 0) {
    const parts = worst.map((r): Line => [
      {
        text: `${shortRule(r.ruleId)} ${r.range} ${r.used}/${r.limit}`,
        ...(r.used >= r.limit ? { color: 'red' as const, bold: true } : r.used * 10 >= r.limit * 8 ? { color: 'yellow' as const } : {}),
      },
    ]);
    lines.push(wrapParts(label('worst'), parts, columns)[0]!);
  }
  return lines;
}

function countryColumns(rows: readonly CountryConversion[]): Column<CountryConversion>[] {
  const unconv = (c: CountryConversion) => (c.unconverted ? `${c.unconverted.used}/${c.unconverted.limit}` : '—');
  const unconvWidth = Math.max(len('UNCONV'), ...rows.map((c) => len(unconv(c))));
  return [
    { title: 'CONVERSION', width: 10, priority: 0, cell: (c) => ({ text: c.region, bold: true }) },
    { title: 'OUT 1H', width: 6, align: 'right', priority: 2, cell: (c) => ({ text: count(c.outcomes1h) }) },
    {
      title: 'CONV 1H',
      width: 7,
      align: 'right',
      priority: 0,
      cell: (c) => ({ text: pctText(c.rate1h), ...(c.rate1h !== null && c.rate1h < 0.3 && c.outcomes1h >= 10 ? { color: 'red' as const, bold: true } : {}) }),
    },
    { title: 'OUT 24H', width: 7, align: 'right', priority: 3, cell: (c) => ({ text: count(c.outcomes24h) }) },
    { title: 'CONV 24H', width: 8, align: 'right', priority: 1, cell: (c) => ({ text: pctText(c.rate24h), dim: true }) },
    {
      title: 'UNCONV',
      width: unconvWidth,
      min: unconvWidth,
      align: 'right',
      priority: 1,
      cell: (c) => ({ text: unconv(c), ...(c.unconverted && c.unconverted.used >= c.unconverted.limit ? { color: 'red' as const, bold: true } : {}) }),
    },
  ];
}

function rangeColumns(rows: readonly GuardRange[], nowMs: number): Column<GuardRange>[] {
  const rangeWidth = Math.max(len('WORST RANGE'), ...rows.map((r) => len(r.range)));
  const ruleWidth = Math.max(4, ...rows.map((r) => len(shortRule(r.ruleId))));
  const usedWidth = Math.max(4, ...rows.map((r) => len(`${r.used}/${r.limit}`)));
  return [
    { title: 'WORST RANGE', width: rangeWidth, min: rangeWidth, priority: 0, cell: (r) => ({ text: r.range }) },
    { title: 'RULE', width: ruleWidth, min: ruleWidth, priority: 0, cell: (r) => ({ text: shortRule(r.ruleId) }) },
    { title: 'COUNTS', width: 11, priority: 3, cell: (r) => ({ text: r.kind === 'distinct' ? 'numbers' : 'unconverted', dim: true }) },
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
    {
      title: 'BLOCKED',
      width: 12,
      priority: 1,
      cell: (r) =>
        r.blocked
          ? { text: `${levelText(r.blocked.level)} ${endsIn(r.blocked.until, nowMs)}`, color: 'magenta', bold: true }
          : r.shadow
            ? { text: 'shadow', color: 'magenta' }
            : { text: '' },
    },
  ];
}

function blockColumns(rows: readonly GuardBlock[], nowMs: number): Column<GuardBlock>[] {
  const targetWidth = Math.max(len('AUTO BLOCK'), ...rows.map((b) => len(b.target)));
  const ruleWidth = Math.max(4, ...rows.map((b) => len(shortRule(b.rule))));
  return [
    { title: 'AUTO BLOCK', width: targetWidth, min: targetWidth, priority: 0, cell: (b) => ({ text: b.target, color: 'magenta' }) },
    { title: 'RULE', width: ruleWidth, min: ruleWidth, priority: 1, cell: (b) => ({ text: shortRule(b.rule) }) },
    { title: 'LEVEL', width: 5, priority: 0, cell: (b) => ({ text: levelText(b.level), bold: b.level > 1 }) },
    { title: 'ENDS IN', width: 8, align: 'right', priority: 0, cell: (b) => ({ text: endsIn(b.until, nowMs) }) },
    { title: 'REASON', width: 12, priority: 2, cell: (b) => ({ text: b.reason.replace(/_rate_limit_exceeded$/, ''), dim: true }) },
  ];
}

function tableSection<T>(cols: Column<T>[], rows: readonly T[], width: number, maxRows: number, more: (n: number) => string): Line[] {
  const placed = layoutColumns(cols, width);
  const room = Math.max(1, maxRows - 1);
  const overflow = rows.length > room;
  const shown = rows.slice(0, overflow ? room - 1 : room);
  const lines: Line[] = [headerLine(placed), ...shown.map((r) => rowLine(placed, r))];
  if (overflow) lines.push([{ text: more(rows.length - shown.length), dim: true }]);
  return lines;
}

/** How many lines each part of the guard view would fill, whole. */
export function guardViewWanted(f: TopFrame): number {
  const g = f.guard;
  if (!g) return 1;
  return (g.conversionIdle ? 1 : 0) + 1 + Math.max(1, g.blocks.length) + 1 + Math.max(1, g.ranges.length) + 1 + Math.max(1, g.countries.length);
}

/**
 * The guard view in `maxRows` lines (undefined: whole): the idle line, the automatic blocks (what
 * to lift or watch), the worst ranges, then conversion by country; each table gets its header and
 * a row before any grows.
 */
export function guardViewSection(f: TopFrame, width: number, maxRows: number | undefined): Line[] {
  const g = f.guard;
  if (!g) return [[{ text: 'guard: not read yet', dim: true }]];
  const idle: Line[] = g.conversionIdle ? [[{ text: CONVERSION_IDLE_TEXT, color: 'yellow', bold: true }]] : [];
  const parts = [
    { rows: g.blocks.length, empty: 'no automatic block in force' },
    { rows: g.ranges.length, empty: 'no range counted by a conversion or sweep rule in its window' },
    { rows: g.countries.length, empty: 'no outcome reported in the last 24h' },
  ];
  // Header + one row (or the empty line) each, then the rest in the same order.
  const size: number[] = parts.map((p) => (p.rows === 0 ? 1 : 2));
  if (maxRows !== undefined) {
    let left = maxRows - idle.length - size.reduce((a, b) => a + b, 0);
    parts.forEach((p, i) => {
      if (p.rows === 0) return;
      const more = Math.max(0, Math.min(left, p.rows - 1));
      size[i]! += more;
      left -= more;
    });
  } else parts.forEach((p, i) => (size[i] = p.rows === 0 ? 1 : 1 + p.rows));
  const empty = (text: string): Line[] => [[{ text, dim: true }]];
  const lines: Line[] = [
    ...idle,
    ...(g.blocks.length === 0
      ? empty(parts[0]!.empty)
      : tableSection(
          blockColumns(g.blocks, f.nowMs),
          g.blocks,
          width,
          size[0]!,
          (n) => `… ${n + g.blocksTotal.numbers + g.blocksTotal.ranges - g.blocks.length} more (ratelimit list)`,
        )),
    ...(g.ranges.length === 0 ? empty(parts[1]!.empty) : tableSection(rangeColumns(g.ranges, f.nowMs), g.ranges, width, size[1]!, (n) => `… ${n} more`)),
    ...(g.countries.length === 0
      ? empty(parts[2]!.empty)
      : tableSection(countryColumns(g.countries), g.countries, width, size[2]!, (n) => `… ${n} more countries`)),
  ];
  return maxRows === undefined ? lines : lines.slice(0, Math.max(0, maxRows));
}
