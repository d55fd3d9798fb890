import Table from 'cli-table3';
import { humanizeMs } from '../core/duration.js';

/** Tables without colour codes: output is often piped into tickets and logs. */
export function table(head?: string[]): Table.Table {
  return new Table({ ...(head ? { head } : {}), style: { head: [], border: [], compact: false } });
}

export function keyValueTable(rows: Array<[string, string]>): string {
  const t = table();
  for (const [k, v] of rows) t.push({ [k]: v });
  return t.toString();
}

export function isoTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || ms <= 0) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}

export function relative(ms: number, nowMs: number): string {
  const d = ms - nowMs;
  if (Math.abs(d) < 1000) return 'now';
  return d > 0 ? `in ${humanizeMs(d)}` : `${humanizeMs(-d)} ago`;
}
