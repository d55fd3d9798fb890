// The dashboard's summary lines: header, database, fleet totals, Fly regions, sparklines and
// the key help.
import { formatDurationMs, humanizeMs } from '../../core/duration.js';
import type { TopFrame } from './model.js';
import type { TopViewProps } from './props.js';
import {
  clock,
  count,
  fit,
  len,
  lineWidth,
  ms,
  bytes,
  oneLine,
  rate,
  sparkline,
  spread,
  wrapParts,
  wrapWords,
  type Color,
  type Line,
  type Seg,
} from './text.js';
import { shortReason } from '../policy-usage.js';

const LABEL_WIDTH = 9;
const label = (name: string): Line => [{ text: fit(name, LABEL_WIDTH), bold: true }];

export function policyName(version: number): string {
  return version === 0 ? 'default' : `v${version}`;
}

function plural(n: number, word: string): string {
  return `${count(n)} ${word}${n === 1 ? '' : 's'}`;
}

export function headerSection(p: TopViewProps, f: TopFrame | null): Line {
  const left: Line = [{ text: 'ratelimit top', bold: true }];
  if (f) {
    const total = f.instances.length - f.totals.stopped;
    left.push({ text: ` · ${f.totals.up}/${total} up`, ...(f.totals.down > 0 ? { color: 'red' as const, bold: true } : {}) });
    left.push({ text: ` · policy ${policyName(f.policyVersion)}`, ...(f.totals.onOtherPolicy > 0 ? { color: 'red' as const, bold: true } : {}) });
  }
  left.push({ text: `${p.view === 'guard' ? ' · guard view' : ` · sort ${p.sort}`} · every ${formatDurationMs(p.intervalMs)}` });
  const right: Line = [];
  if (p.paused) right.push({ text: ' PAUSED ', inverse: true, color: 'yellow' }, { text: ' ' });
  // Under a lost database the frame below is the last good one; its time says how old.
  if (f) right.push(p.connection.ok ? { text: clock(f.nowMs), dim: true } : { text: `last good ${clock(f.nowMs)}`, color: 'yellow' });
  return spread(left, right, p.columns);
}

export function databaseSection(p: TopViewProps, f: TopFrame | null): Line[] {
  const label: Seg = { text: 'database ', bold: true };
  if (!p.connection.ok) {
    const c = p.connection;
    // What and how long first: the error text can be long and is what gets cut.
    return [
      [
        label,
        { text: 'DOWN', color: 'red', bold: true, inverse: true },
        {
          text: `${c.downForMs >= 1000 ? ` for ${humanizeMs(c.downForMs)}` : ''} · ${c.failures} ${c.failures === 1 ? 'try' : 'tries'}, retry every ${formatDurationMs(c.retryEveryMs)} · `,
        },
        { text: oneLine(c.error), color: 'red' },
      ],
    ];
  }
  if (!f) return [[label, { text: 'connecting…', dim: true }]];
  const d = f.database;
  const parts: Line[] = [
    [{ text: 'up', color: 'green', bold: true }],
    [{ text: `${ms(f.dbLatencyMs)} ms` }],
    [{ text: `PostgreSQL ${d.serverVersion.split(' ')[0]}` }],
    [{ text: `${d.connections}/${d.maxConnections} sessions` }],
    [{ text: bytes(d.sizeBytes) }],
    ...(d.readOnly ? [[{ text: 'READ-ONLY standby', color: 'yellow' as const, bold: true }]] : []),
  ];
  return wrapParts([label], parts, p.columns);
}

/** Said under the header when a live daemon enforces another policy than the database's active one. */
export function policyWarning(f: TopFrame, columns: number): Line[] {
  const n = f.totals.onOtherPolicy;
  if (n === 0) return [];
  const text = `${n} daemon${n === 1 ? '' : 's'} not on policy ${policyName(f.policyVersion)} (see POLICY): they still enforce an older one`;
  return wrapWords(text, columns).map((t) => [{ text: t, color: 'red' as const, bold: true }]);
}

export function fleetSection(f: TopFrame, columns: number): Line[] {
  const t = f.totals;
  const parts: Line[] = [
    [{ text: `${count(t.connections)} conns` }],
    [{ text: `${rate(t.allowedPerS)} allowed/s`, color: 'green' }],
    [{ text: `${rate(t.deniedPerS)} denied/s`, ...(t.deniedPerS > 0 ? { color: 'yellow' as const } : {}) }],
    // Every reason, IP included: a denial that is not the number's own is still a denial.
    ...t.deniedPerSByReason.map(([reason, perS]): Line => [{ text: `${shortReason(reason)} ${rate(perS)}/s`, color: 'yellow' }]),
  ];
  if (t.onFallback > 0) parts.push([{ text: `${t.onFallback} on FALLBACK`, color: 'yellow', bold: true }]);
  if (t.down > 0) parts.push([{ text: `${t.down} down`, color: 'red', bold: true }]);
  if (t.stopped > 0) parts.push([{ text: `${t.stopped} left`, dim: true }]);
  const w = f.window;
  const window: Line[] = [
    [{ text: f.limit === null ? `no number rule, last ${formatDurationMs(f.windowMs)}` : `${f.limit} per ${formatDurationMs(f.windowMs)}` }],
    [{ text: `${w.trackedEstimated ? '~' : ''}${plural(w.tracked, 'number')} tracked` }],
    [{ text: `${count(w.active)} active` }],
    [{ text: `${count(w.atLimit)} at limit`, ...(w.atLimit > 0 ? { color: 'red' as const } : {}) }],
    [{ text: plural(w.calls, 'call') }],
    [{ text: `${count(w.denials)} denied`, ...(w.denials > 0 ? { color: 'yellow' as const } : {}) }],
    [{ text: plural(w.resets, 'reset') }],
  ];
  return [...wrapParts(label('fleet'), parts, columns), ...wrapParts(label('window'), window, columns)];
}

/** The fleet's denials in the window by reason, and what shadow rules would have denied. */
export function denialsSection(f: TopFrame, columns: number): Line[] {
  const d = f.windowDenials;
  const lines: Line[] = [];
  if (d.byReason.length > 0) {
    lines.push(
      ...wrapParts(
        label('denials'),
        d.byReason.map(([reason, n]): Line => [{ text: `${shortReason(reason)} ${count(n)}`, color: 'yellow' }]),
        columns,
      ),
    );
  }
  if (d.shadowByRule.length > 0) {
    lines.push(
      ...wrapParts(
        label('shadow'),
        d.shadowByRule.map(([rule, n]): Line => [{ text: `${rule} ${count(n)}`, color: 'magenta' }]),
        columns,
      ),
    );
  }
  return lines;
}

export function flyRegionLine(f: TopFrame): Line | undefined {
  if (f.flyRegions.length === 0) return undefined;
  const line: Line = [{ text: 'fly      ', bold: true }];
  f.flyRegions.forEach((r, i) => {
    if (i > 0) line.push({ text: ' · ' });
    line.push(
      { text: r.region, bold: true },
      { text: ` ${r.up}/${r.total} up ${rate(r.allowedPerS + r.deniedPerS)}/s`, ...(r.up < r.total ? { color: 'red' as const } : {}) },
    );
  });
  return line;
}

export function sparkSection(f: TopFrame, columns: number): Line[] {
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

/** Key help, a message, or a question: wrapped by words, so a prompt's `y/n` is never cut off. */
export function footerSection(p: TopViewProps): Line[] {
  if (p.prompt) return wrapWords(p.prompt, p.columns).map((t) => [{ text: t, color: 'yellow' as const, bold: true }]);
  if (!p.interactive) return p.message ? wrapWords(p.message, p.columns).map((t) => [{ text: t }]) : [];
  const keys: Line = [
    {
      text: p.view === 'guard' ? 'q quit · p pause · g back to traffic' : 'q quit · p pause · s sort · ↑↓ select · r reset · b block range · g guard',
      dim: true,
    },
  ];
  if (!p.message) return lineWidth(keys) <= p.columns ? [keys] : [[{ text: 'q quit · r reset', dim: true }]];
  const message: Line = [{ text: p.message, color: 'cyan' }];
  // What just happened matters more than the key help, which never changes.
  if (lineWidth(keys) + 1 + lineWidth(message) <= p.columns) return [spread(keys, message, p.columns)];
  return wrapWords(p.message, p.columns).map((t) => [{ text: t, color: 'cyan' as const }]);
}
