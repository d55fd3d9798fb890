// Text building blocks for the dashboard: coloured segments, lines cut to an exact width,
// and the short number formats its narrow columns need.

export type Color = 'red' | 'green' | 'yellow' | 'cyan' | 'gray' | 'magenta';

export interface Seg {
  text: string;
  color?: Color;
  bold?: boolean;
  dim?: boolean;
  inverse?: boolean;
}
export type Line = Seg[];

export function len(s: string): number {
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

export function clip(line: Line, width: number): Line {
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

export function lineWidth(line: Line): number {
  return line.reduce((n, s) => n + len(s.text), 0);
}

/** `left` then `right` flush with the right edge when both fit, else `left` alone. */
export function spread(left: Line, right: Line, width: number): Line {
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

export function count(n: number): string {
  return n >= 1_000_000 ? `${(n / 1_000_000).toFixed(1)}M` : n >= 100_000 ? `${Math.round(n / 1000)}k` : String(n);
}

export function bytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export function ms(v: number | null): string {
  if (v === null) return '—';
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

export function clock(nowMs: number): string {
  return `${new Date(nowMs).toISOString().slice(11, 19)} UTC`;
}

export function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

/**
 * `label` then `parts` joined by ` · `, onto as many lines as the width needs: a part is never
 * cut (a number or a mask split across lines would misread), continuation lines are indented
 * under the first part.
 */
export function wrapParts(label: Line, parts: readonly Line[], width: number): Line[] {
  const indent = lineWidth(label);
  const lines: Line[] = [];
  let current: Line = [...label];
  let used = indent;
  let empty = true;
  for (const part of parts) {
    const w = lineWidth(part);
    if (!empty && used + 3 + w > width) {
      lines.push(current);
      current = [{ text: ' '.repeat(indent) }];
      used = indent;
      empty = true;
    }
    if (!empty) {
      current.push({ text: ' · ' });
      used += 3;
    }
    current.push(...part);
    used += w;
    empty = false;
  }
  lines.push(current);
  return lines;
}

/** Words onto lines of at most `width` (a word longer than that gets a line of its own). */
export function wrapWords(text: string, width: number): string[] {
  const lines: string[] = [];
  let current = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (current && len(current) + 1 + len(word) > width) {
      lines.push(current);
      current = word;
    } else current = current ? `${current} ${word}` : word;
  }
  if (current) lines.push(current);
  return lines;
}
