// The dashboard's tables: the instances, the hottest numbers with the regions beside them (a
// rule between the two, so they never read as one row), and the aggregate rules' busiest keys.
// Masks, numbers and usages get columns as wide as their widest value: they are never cut,
// a column or a panel is dropped instead.
import { formatDurationMs, humanizeMs } from '../../core/duration.js';
import type { HotRow, TopFrame, TopInstance, TopRegion } from './model.js';
import type { TopViewProps } from './props.js';
import { policyName } from './summary.js';
import { count, fit, len, lineWidth, ms, rate, type Line, type Seg } from './text.js';
import { GAP, headerLine, layoutColumns, rowLine, tableWidth, type Column, type Placed } from './table.js';

function instanceState(i: TopInstance): Seg {
  if (i.state === 'down') return { text: `DOWN ${humanizeMs(i.lastSeenAgoMs)}`, color: 'red', bold: true };
  if (i.state === 'stopped') return { text: `left ${humanizeMs(i.lastSeenAgoMs)} ago`, color: 'gray' };
  if (i.fallback) return { text: 'up FALLBACK', color: 'yellow', bold: true };
  return { text: 'up', color: 'green' };
}

function policyCell(f: TopFrame, i: TopInstance): Seg {
  if (i.state === 'stopped' || i.policyVersion === f.policyVersion) return { text: policyName(i.policyVersion) };
  return { text: `${policyName(i.policyVersion)} (fleet on ${policyName(f.policyVersion)})`, color: 'red', bold: true };
}

function instanceColumns(f: TopFrame): Column<TopInstance>[] {
  const policyWidth = Math.max(6, ...f.instances.map((i) => len(policyCell(f, i).text)));
  // Only while some daemon is on another version (then kept before almost anything): otherwise
  // it would repeat the header's version on every row.
  if (!f.instances.some((i) => i.state !== 'stopped' && i.policyVersion !== f.policyVersion)) return INSTANCE_COLUMNS;
  return [
    ...INSTANCE_COLUMNS.slice(0, -1),
    { title: 'POLICY', width: policyWidth, min: policyWidth, priority: 1, cell: (i) => policyCell(f, i) },
    INSTANCE_COLUMNS.at(-1)!,
  ];
}

const INSTANCE_COLUMNS: Column<TopInstance>[] = [
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

const usedText = (r: HotRow): string => (r.limit === null ? String(r.used) : `${r.used}/${r.limit}`);

function hotColumns(f: TopFrame): Column<HotRow>[] {
  // As wide as the widest mask: two masks cut to the same width could read as one number.
  const maskWidth = Math.max(14, ...f.hottest.map((r) => len(r.masked ?? '(not stored)')));
  const limitWidth = Math.max(len(f.limit === null ? '' : `${f.limit}/${f.limit}`), ...f.hottest.map((r) => len(usedText(r))));
  return [
    { title: 'HOTTEST NUMBER', width: maskWidth, min: maskWidth, priority: 0, cell: (r) => ({ text: r.masked ?? '(not stored)' }) },
    { title: 'HASH', width: 12, min: 8, priority: 5, cell: (r) => ({ text: r.hashPrefix, dim: true }) },
    { title: 'RGN', width: 3, priority: 4, cell: (r) => ({ text: r.region ?? '—' }) },
    {
      title: 'USED',
      width: Math.max(5, limitWidth),
      min: Math.max(4, limitWidth),
      align: 'right',
      priority: 1,
      cell: (r) => ({ text: usedText(r), ...(r.atLimit ? { color: 'red' as const, bold: true } : {}) }),
    },
    {
      title: 'DENIED',
      width: 6,
      align: 'right',
      priority: 2,
      cell: (r) => ({ text: count(r.deniedInWindow), ...(r.deniedInWindow > 0 ? { color: 'yellow' as const } : {}) }),
    },
    { title: 'RESET IN', width: 8, align: 'right', priority: 3, cell: (r) => ({ text: r.resetInMs > 0 ? humanizeMs(r.resetInMs) : '—' }) },
    // Only when some row is blocked: an empty column would cost the narrow layouts a column.
    ...(f.hottest.some((r) => r.blocked)
      ? [{ title: '', width: 3, priority: 1, cell: (r: HotRow) => (r.blocked ? { text: 'BLK', color: 'magenta' as const, bold: true } : { text: '' }) }]
      : []),
  ];
}

const REGION_COLUMNS: Column<TopRegion>[] = [
  { title: 'REGION', width: 7, priority: 0, cell: (r) => ({ text: r.region }) },
  { title: 'NUMS', width: 5, align: 'right', priority: 3, cell: (r) => ({ text: count(r.active) }) },
  { title: '@LIM', width: 5, align: 'right', priority: 4, cell: (r) => ({ text: count(r.atLimit), ...(r.atLimit > 0 ? { color: 'red' as const } : {}) }) },
  { title: 'CALLS', width: 6, align: 'right', priority: 1, cell: (r) => ({ text: count(r.calls) }) },
  { title: 'DENIED', width: 6, align: 'right', priority: 2, cell: (r) => ({ text: count(r.denials), ...(r.denials > 0 ? { color: 'yellow' as const } : {}) }) },
];

// The regions panel beside the hottest numbers needs at least region, calls and denials.
const REGION_PANEL_MIN = 7 + 6 + 6 + 2 * GAP;
const REGION_PANEL_MAX = 7 + 5 + 5 + 6 + 6 + 4 * GAP;
// Between side-by-side panels: a rule, so a number's row and a region's row never read as one.
const DIVIDER = ' │ ';
const PANEL_GAP = DIVIDER.length;

export function instancesSection(f: TopFrame, columns: number, maxRows: number): Line[] {
  if (f.instances.length === 0) {
    return [[{ text: 'no instance has sent a heartbeat: is `ratelimit serve` running on this database?', color: 'yellow' }]];
  }
  const cols = layoutColumns(instanceColumns(f), columns);
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

export function hotAndRegionsSection(p: TopViewProps, f: TopFrame, maxRows: number): Line[] {
  const marker = p.interactive ? 2 : 0;
  const room = p.columns - marker;
  const atMin = (cols: Column<HotRow>[]) => cols.map((c) => ({ ...c, width: c.min ?? c.width }));
  // The hottest numbers at their preferred widths and the regions panel beside them when it
  // fits, squeezing the numbers' columns (a shorter hash prefix) if that is what it takes.
  let hot = layoutColumns(hotColumns(f), room);
  let regionCols: Placed<TopRegion>[] = [];
  if (f.regions.length > 0) {
    if (room - tableWidth(hot) - PANEL_GAP < REGION_PANEL_MIN) {
      const squeezed = layoutColumns(atMin(hotColumns(f)), room - PANEL_GAP - REGION_PANEL_MIN);
      // Squeezed, but not at the cost of a column: the regions then go on a line of their own.
      if (squeezed.length === hot.length) hot = squeezed;
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
      left.push([
        ...(marker ? [{ text: selected ? '▶ ' : '  ', color: 'cyan' as const }] : []),
        ...rowLine(hot, r, selected ? { inverse: true } : r.blocked ? { dim: true } : {}),
      ]);
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
    lines.push(right.length > 0 ? [...l, { text: ' '.repeat(Math.max(0, hotWidth - lineWidth(l))) + DIVIDER, dim: true }, ...(r ?? [])] : l);
  }
  if (regionsAsLine) {
    // Too narrow for the panel: one line, most active first.
    // Whole entries only, as many as fit: a count cut in half would misread.
    const room = p.columns - len('regions  ') - len(' (calls/denied)');
    let text = '';
    for (const r of f.regions) {
      const next = `${text ? `${text} · ` : ''}${r.region} ${count(r.calls)}/${count(r.denials)}`;
      if (len(next) > room) break;
      text = next;
    }
    lines.push([{ text: 'regions  ', bold: true }, { text }, { text: ' (calls/denied)', dim: true }]);
  }
  return lines;
}
