// The dashboard as a pure function of its props: the live app, `--once` and the tests all
// render this with plain data. Every line is built to the terminal's width here, rather than
// left to flexbox, so a frame never wraps and 80x24 stays readable.
import { Box, Text } from 'ink';
import type { HotSort, RegionStats } from '../../db/queries.js';
import type { FleetInstance } from '../../db/fleet.js';
import type { HotRow, TopFrame } from '../commands/top.js';
import { formatDurationMs, humanizeMs } from '../../core/duration.js';

export type Connection =
  | { ok: true }
  | { ok: false; error: string; failures: number; downForMs: number; retryEveryMs: number };

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
}

// ---------------------------------------------------------------------------------------------
// Text building blocks

type Color = 'red' | 'green' | 'yellow' | 'cyan' | 'gray' | 'magenta';

export interface Seg {
  text: string;
  color?: Color;
  bold?: boolean;
  dim?: boolean;
  inverse?: boolean;
}
type Line = Seg[];

function len(s: string): number {
  return [...s].length;
}

/**
 * Pads or cuts to exactly `w` characters; a cut shows as an ellipsis, in the middle for ids
 * and host names, whose ends (pid, random suffix, domain) are what tells them apart.
 */
export function fit(s: string, w: number, align: 'left' | 'right' = 'left', cut: 'end' | 'middle' = 'end'): string {
  if (w <= 0) return '';
  const chars = [...s];
  if (chars.length > w && cut === 'middle' && w >= 5) {
    const tail = Math.floor((w - 1) / 2);
    return `${chars.slice(0, w - 1 - tail).join('')}…${chars.slice(chars.length - tail).join('')}`;
  }
  if (chars.length > w) return w === 1 ? '…' : `${chars.slice(0, w - 1).join('')}…`;
  const pad = ' '.repeat(w - chars.length);
  return align === 'left' ? s + pad : pad + s;
}

function clip(line: Line, width: number): Line {
  const out: Line = [];
  let left = width;
  for (const seg of line) {
    if (left <= 0) break;
    const n = len(seg.text);
    out.push(n <= left ? seg : { ...seg, text: fit(seg.text, left) });
    left -= Math.min(n, left);
  }
  return out;
}

function lineWidth(line: Line): number {
  return line.reduce((n, s) => n + len(s.text), 0);
}

/** `left` then `right` flush with the right edge when both fit, else `left` alone. */
function spread(left: Line, right: Line, width: number): Line {
  const gap = width - lineWidth(left) - lineWidth(right);
  return gap >= 1 ? [...left, { text: ' '.repeat(gap) }, ...right] : left;
}

const BLOCKS = '▁▂▃▄▅▆▇█';

/** The newest `width` values, one character each; any non-zero value shows above the floor. */
export function sparkline(values: readonly number[], width: number): string {
  const shown = values.slice(Math.max(0, values.length - width));
  const max = Math.max(0, ...shown);
  const chars = shown.map((v) => (v <= 0 || max === 0 ? BLOCKS[0]! : BLOCKS[Math.max(1, Math.ceil((v / max) * (BLOCKS.length - 1)))]!));
  return ' '.repeat(Math.max(0, width - shown.length)) + chars.join('');
}

export function rate(perS: number): string {
  if (perS >= 10_000) return `${(perS / 1000).toFixed(0)}k`;
  if (perS >= 1_000) return `${(perS / 1000).toFixed(1)}k`;
  if (perS >= 10 || Number.isInteger(perS)) return perS.toFixed(0);
  return perS.toFixed(1);
}

function count(n: number): string {
  return n >= 1_000_000 ? `${(n / 1_000_000).toFixed(1)}M` : n >= 100_000 ? `${Math.round(n / 1000)}k` : String(n);
}

function bytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

function ms(v: number | null): string {
  if (v === null) return '—';
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function clock(nowMs: number): string {
  return `${new Date(nowMs).toISOString().slice(11, 19)} UTC`;
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

// ---------------------------------------------------------------------------------------------
// Tables: columns are dropped (least important first) until the rest fit, then widened.

interface Column<T> {
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

interface Placed<T> extends Column<T> {
  w: number;
}

const GAP = 1;

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

function tableWidth<T>(cols: readonly Placed<T>[]): number {
  return cols.reduce((n, c) => n + c.w, 0) + Math.max(0, cols.length - 1) * GAP;
}

function headerLine<T>(cols: readonly Placed<T>[]): Line {
  return [{ text: cols.map((c) => fit(c.title, c.w, c.align)).join(' '), bold: true, dim: true }];
}

function rowLine<T>(cols: readonly Placed<T>[], row: T, extra: Partial<Seg> = {}): Line {
  const out: Line = [];
  cols.forEach((c, i) => {
    if (i > 0) out.push({ text: ' ', ...extra });
    const cell = c.cell(row);
    out.push({ ...cell, ...extra, text: fit(cell.text, c.w, c.align, c.cut) });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sections

function instanceState(i: FleetInstance): Seg {
  if (i.state === 'down') return { text: `DOWN ${humanizeMs(i.lastSeenAgoMs)}`, color: 'red', bold: true };
  if (i.state === 'stopped') return { text: `left ${humanizeMs(i.lastSeenAgoMs)} ago`, color: 'gray' };
  if (i.fallback) return { text: 'up FALLBACK', color: 'yellow', bold: true };
  return { text: 'up', color: 'green' };
}

const INSTANCE_COLUMNS: Column<FleetInstance>[] = [
  { title: 'INSTANCE', width: 14, min: 10, grow: 36, priority: 0, cut: 'middle', cell: (i) => ({ text: i.instanceId }) },
  { title: 'HOST', width: 16, min: 10, grow: 40, priority: 9, cut: 'middle', cell: (i) => ({ text: i.host }) },
  { title: 'RGN', width: 4, min: 3, priority: 3, cell: (i) => ({ text: i.flyRegion ?? '—' }) },
  { title: 'VERSION', width: 8, priority: 10, cell: (i) => ({ text: i.version }) },
  { title: 'PID', width: 7, align: 'right', priority: 11, cell: (i) => ({ text: String(i.pid) }) },
  { title: 'UPTIME', width: 7, align: 'right', priority: 6, cell: (i) => ({ text: humanizeMs(i.uptimeMs) }) },
  { title: 'CONNS', width: 6, min: 5, align: 'right', priority: 4, cell: (i) => ({ text: i.state === 'up' ? count(i.connections) : '—' }) },
  { title: 'ALLOW/S', width: 8, min: 7, align: 'right', priority: 2, cell: (i) => ({ text: i.state === 'up' ? rate(i.allowedPerS) : '—' }) },
  {
    title: 'DENY/S',
    width: 7,
    min: 6,
    align: 'right',
    priority: 2,
    cell: (i) => ({ text: i.state === 'up' ? rate(i.deniedPerS) : '—', ...(i.state === 'up' && i.deniedPerS > 0 ? { color: 'yellow' as const } : {}) }),
  },
  { title: 'DB MS', width: 6, align: 'right', priority: 5, cell: (i) => ({ text: i.state === 'up' ? ms(i.dbLatencyMs) : '—' }) },
  { title: 'STATE', width: 13, min: 11, priority: 1, cell: instanceState },
];

function hotColumns(limitWidth: number): Column<HotRow>[] {
  return [
    { title: 'HOTTEST NUMBER', width: 14, min: 13, priority: 0, cell: (r) => ({ text: r.masked ?? '(not stored)' }) },
    { title: 'HASH', width: 12, min: 8, priority: 5, cell: (r) => ({ text: r.hashPrefix, dim: true }) },
    { title: 'RGN', width: 3, priority: 4, cell: (r) => ({ text: r.region ?? '—' }) },
    {
      title: 'USED',
      width: Math.max(5, limitWidth),
      align: 'right',
      priority: 1,
      cell: (r) => ({ text: `${r.used}/${r.limit}`, ...(r.atLimit ? { color: 'red' as const, bold: true } : {}) }),
    },
    {
      title: 'DENIED',
      width: 6,
      align: 'right',
      priority: 2,
      cell: (r) => ({ text: count(r.deniedInWindow), ...(r.deniedInWindow > 0 ? { color: 'yellow' as const } : {}) }),
    },
    { title: 'RESET IN', width: 8, align: 'right', priority: 3, cell: (r) => ({ text: r.resetInMs > 0 ? humanizeMs(r.resetInMs) : '—' }) },
  ];
}

const REGION_COLUMNS: Column<RegionStats>[] = [
  { title: 'REGION', width: 7, priority: 0, cell: (r) => ({ text: r.region }) },
  { title: 'NUMS', width: 5, align: 'right', priority: 3, cell: (r) => ({ text: count(r.tracked) }) },
  { title: '@LIM', width: 5, align: 'right', priority: 4, cell: (r) => ({ text: count(r.atLimit), ...(r.atLimit > 0 ? { color: 'red' as const } : {}) }) },
  { title: 'CALLS', width: 6, align: 'right', priority: 1, cell: (r) => ({ text: count(r.calls) }) },
  { title: 'DENIED', width: 6, align: 'right', priority: 2, cell: (r) => ({ text: count(r.denials), ...(r.denials > 0 ? { color: 'yellow' as const } : {}) }) },
];

// The regions panel beside the hottest numbers needs at least region, calls and denials.
const REGION_PANEL_MIN = 7 + 6 + 6 + 2 * GAP;
const REGION_PANEL_MAX = 7 + 5 + 5 + 6 + 6 + 4 * GAP;
const PANEL_GAP = 2;

function plural(n: number, word: string): string {
  return `${count(n)} ${word}${n === 1 ? '' : 's'}`;
}

function headerSection(p: TopViewProps, f: TopFrame | null): Line {
  const left: Line = [{ text: 'ratelimit top', bold: true }];
  if (f) {
    const total = f.instances.length - f.totals.stopped;
    left.push({ text: ` · ${f.totals.up}/${total} up`, ...(f.totals.down > 0 ? { color: 'red' as const, bold: true } : {}) });
  }
  left.push({ text: ` · sort ${p.sort} · every ${formatDurationMs(p.intervalMs)}` });
  const right: Line = [];
  if (p.paused) right.push({ text: ' PAUSED ', inverse: true, color: 'yellow' }, { text: ' ' });
  // Under a lost database the frame below is the last good one; its time says how old.
  if (f) right.push(p.connection.ok ? { text: clock(f.nowMs), dim: true } : { text: `last good ${clock(f.nowMs)}`, color: 'yellow' });
  return spread(left, right, p.columns);
}

function databaseSection(p: TopViewProps, f: TopFrame | null): Line {
  const label: Seg = { text: 'database ', bold: true };
  if (!p.connection.ok) {
    const c = p.connection;
    // What and how long first: the error text can be long and is what gets cut.
    return [
      label,
      { text: 'DOWN', color: 'red', bold: true, inverse: true },
      { text: `${c.downForMs >= 1000 ? ` for ${humanizeMs(c.downForMs)}` : ''} · ${c.failures} ${c.failures === 1 ? 'try' : 'tries'}, retry every ${formatDurationMs(c.retryEveryMs)} · ` },
      { text: oneLine(c.error), color: 'red' },
    ];
  }
  if (!f) return [label, { text: 'connecting…', dim: true }];
  const d = f.database;
  return [
    label,
    { text: 'up', color: 'green', bold: true },
    { text: ` · ${ms(f.dbLatencyMs)} ms · PostgreSQL ${d.serverVersion.split(' ')[0]} · ${d.connections}/${d.maxConnections} sessions · ${bytes(d.sizeBytes)}` },
    ...(d.readOnly ? [{ text: ' · READ-ONLY standby', color: 'yellow' as const, bold: true }] : []),
  ];
}

function fleetSection(f: TopFrame): Line[] {
  const t = f.totals;
  const fleet: Line = [
    { text: 'fleet    ', bold: true },
    { text: `${count(t.connections)} conns · ` },
    { text: `${rate(t.allowedPerS)} allowed/s`, color: 'green' },
    { text: ' · ' },
    { text: `${rate(t.deniedPerS)} denied/s`, ...(t.deniedPerS > 0 ? { color: 'yellow' as const } : {}) },
  ];
  if (t.onFallback > 0) fleet.push({ text: ' · ' }, { text: `${t.onFallback} on FALLBACK`, color: 'yellow', bold: true });
  if (t.down > 0) fleet.push({ text: ' · ' }, { text: `${t.down} down`, color: 'red', bold: true });
  if (t.stopped > 0) fleet.push({ text: ` · ${t.stopped} left`, dim: true });
  const w = f.window;
  const window: Line = [
    { text: 'window   ', bold: true },
    { text: `${f.limit} per ${formatDurationMs(f.windowMs)} · ${plural(w.tracked, 'number')} · ` },
    { text: `${count(w.atLimit)} at limit`, ...(w.atLimit > 0 ? { color: 'red' as const } : {}) },
    { text: ` · ${plural(w.calls, 'call')} · ` },
    { text: `${count(w.denials)} denied`, ...(w.denials > 0 ? { color: 'yellow' as const } : {}) },
    { text: ` · ${plural(w.resets, 'reset')}` },
  ];
  return [fleet, window];
}

function flyRegionLine(f: TopFrame): Line | undefined {
  if (f.flyRegions.length === 0) return undefined;
  const line: Line = [{ text: 'fly      ', bold: true }];
  f.flyRegions.forEach((r, i) => {
    if (i > 0) line.push({ text: ' · ' });
    line.push({ text: r.region, bold: true }, { text: ` ${r.up}/${r.total} up ${rate(r.allowedPerS + r.deniedPerS)}/s`, ...(r.up < r.total ? { color: 'red' as const } : {}) });
  });
  return line;
}

function sparkSection(f: TopFrame, columns: number): Line[] {
  const peakOf = (s: readonly number[]) => Math.max(0, ...s);
  const suffix = (s: readonly number[]) => ` peak ${rate(peakOf(s))}/s`;
  const label = 9;
  const room = columns - label - Math.max(len(suffix(f.series.allowed)), len(suffix(f.series.denied)));
  const width = Math.max(0, Math.min(60, room));
  const line = (name: string, s: readonly number[], color: Color): Line => [
    { text: fit(name, label), bold: true },
    { text: sparkline(s, width), color },
    { text: suffix(s), dim: true },
  ];
  return [line('allowed', f.series.allowed, 'green'), line('denied', f.series.denied, 'yellow')];
}

function instancesSection(f: TopFrame, columns: number, maxRows: number): Line[] {
  if (f.instances.length === 0) {
    return [[{ text: 'no instance has sent a heartbeat: is `ratelimit serve` running on this database?', color: 'yellow' }]];
  }
  const cols = layoutColumns(INSTANCE_COLUMNS, columns);
  const lines: Line[] = [headerLine(cols)];
  const room = Math.max(1, maxRows - 1);
  const overflow = f.instances.length > room;
  const shown = overflow ? f.instances.slice(0, room - 1) : f.instances;
  for (const i of shown) lines.push(rowLine(cols, i, i.state === 'stopped' ? { dim: true } : {}));
  if (overflow) {
    const rest = f.instances.slice(shown.length);
    const down = rest.filter((i) => i.state === 'down').length;
    lines.push([{ text: `… ${rest.length} more`, dim: true }, ...(down > 0 ? [{ text: ` (${down} down)`, color: 'red' as const, bold: true }] : [])]);
  }
  return lines;
}

function hotAndRegionsSection(p: TopViewProps, f: TopFrame, maxRows: number): Line[] {
  const limitWidth = len(`${f.limit}/${f.limit}`);
  const marker = p.interactive ? 2 : 0;
  const room = p.columns - marker;
  const atMin = (cols: Column<HotRow>[]) => cols.map((c) => ({ ...c, width: c.min ?? c.width }));
  // The hottest numbers at their preferred widths and the regions panel beside them when it
  // fits, squeezing the numbers' columns (a shorter hash prefix) if that is what it takes.
  let hot = layoutColumns(hotColumns(limitWidth), room);
  let regionCols: Placed<RegionStats>[] = [];
  if (f.regions.length > 0) {
    if (room - tableWidth(hot) - PANEL_GAP < REGION_PANEL_MIN) {
      const squeezed = layoutColumns(atMin(hotColumns(limitWidth)), room - PANEL_GAP - REGION_PANEL_MIN);
      if (squeezed.length >= 4) hot = squeezed;
    }
    const regionRoom = Math.min(REGION_PANEL_MAX, room - tableWidth(hot) - PANEL_GAP);
    if (regionRoom >= REGION_PANEL_MIN) regionCols = layoutColumns(REGION_COLUMNS, regionRoom);
  }
  const hotWidth = marker + tableWidth(hot);
  const regionsAsLine = regionCols.length === 0 && f.regions.length > 0;
  const left: Line[] = [];
  const right: Line[] = [];
  const height = Math.max(1, maxRows - 1 - (regionsAsLine ? 1 : 0));
  left.push([...(marker ? [{ text: '  ' }] : []), ...headerLine(hot)]);
  if (f.hottest.length === 0) {
    left.push([{ text: fit(`no calls in the last ${formatDurationMs(f.windowMs)}`, hotWidth), dim: true }]);
  } else {
    let sel = p.selectedHash ? f.hottest.findIndex((r) => r.hash === p.selectedHash) : 0;
    if (sel < 0) sel = 0;
    // Scroll so the selection stays visible.
    const start = p.interactive ? Math.max(0, Math.min(sel - height + 1, f.hottest.length - height)) : 0;
    f.hottest.slice(start, start + height).forEach((r, k) => {
      const selected = p.interactive && start + k === sel;
      left.push([...(marker ? [{ text: selected ? '▶ ' : '  ', color: 'cyan' as const }] : []), ...rowLine(hot, r, selected ? { inverse: true } : {})]);
    });
  }
  if (regionCols.length > 0) {
    right.push(headerLine(regionCols));
    const shownRegions = f.regions.length > height ? f.regions.slice(0, height - 1) : f.regions;
    for (const r of shownRegions) right.push(rowLine(regionCols, r));
    if (shownRegions.length < f.regions.length) right.push([{ text: `… ${f.regions.length - shownRegions.length} more`, dim: true }]);
  }
  const lines: Line[] = [];
  for (let k = 0; k < Math.max(left.length, right.length); k++) {
    const l = left[k] ?? [];
    const r = right[k];
    lines.push(r ? [...l, { text: ' '.repeat(Math.max(0, hotWidth - lineWidth(l)) + PANEL_GAP) }, ...r] : l);
  }
  if (regionsAsLine) {
    // Too narrow for the panel: one line, most active first.
    lines.push([{ text: 'regions  ', bold: true }, { text: f.regions.map((r) => `${r.region} ${count(r.calls)}/${count(r.denials)}`).join(' · ') }, { text: ' (calls/denied)', dim: true }]);
  }
  return lines;
}

function footerSection(p: TopViewProps): Line | undefined {
  if (p.prompt) return [{ text: p.prompt, color: 'yellow', bold: true }];
  if (!p.interactive) return p.message ? [{ text: p.message }] : undefined;
  const keys: Line = [{ text: 'q quit · p pause · s sort · ↑↓ select · r reset', dim: true }];
  if (!p.message) return keys;
  const message: Line = [{ text: p.message, color: 'cyan' }];
  // What just happened matters more than the key help, which never changes.
  return lineWidth(keys) + 1 + lineWidth(message) <= p.columns ? spread(keys, message, p.columns) : message;
}

/** All the lines of one frame, each at most `columns` wide and, given `rows`, at most that many. */
export function frameLines(p: TopViewProps): Line[] {
  const f = p.frame;
  const top: Line[] = [headerSection(p, f), databaseSection(p, f)];
  const footer = footerSection(p);
  if (!f) return [...top, ...(footer ? [footer] : [])].map((l) => clip(l, p.columns));
  const fly = flyRegionLine(f);
  top.push(...fleetSection(f));
  if (fly) top.push(fly);
  top.push(...sparkSection(f, p.columns));
  const fixed = top.length + (footer ? 1 : 0);
  const hotWanted = 1 + Math.max(1, f.hottest.length, f.regions.length + 1);
  const instWanted = 1 + Math.max(1, f.instances.length);
  let instRows = instWanted;
  let hotRows = hotWanted;
  if (p.rows !== undefined) {
    // The instances get the rows they need (down ones come first, see loadTopFrame), but the
    // hottest numbers keep at least their header and three rows when the fleet is large.
    const avail = Math.max(4, p.rows - fixed);
    instRows = Math.min(instWanted, Math.max(2, avail - Math.min(hotWanted, 4)));
    hotRows = Math.max(2, avail - instRows);
  }
  const lines = [...top, ...instancesSection(f, p.columns, instRows), ...hotAndRegionsSection(p, f, hotRows), ...(footer ? [footer] : [])];
  return lines.map((l) => clip(l, p.columns));
}

export function TopView(props: TopViewProps) {
  return (
    <Box flexDirection="column" width={props.columns}>
      {frameLines(props).map((line, i) => (
        <Text key={i} wrap="truncate-end">
          {line.length === 0
            ? ' '
            : line.map((s, k) => (
                <Text key={k} {...(s.color ? { color: s.color } : {})} bold={s.bold ?? false} dimColor={s.dim ?? false} inverse={s.inverse ?? false}>
                  {s.text}
                </Text>
              ))}
        </Text>
      ))}
    </Box>
  );
}
