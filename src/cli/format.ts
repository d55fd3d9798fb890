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

/**
 * The one time format people read from every command: ISO 8601 in UTC, to the second, with `Z`
 * (`2025-11-25T14:03:07Z`), which sorts, pastes into tickets, and means the same on every machine.
 */
export function isoTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || ms <= 0) return '—';
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function relative(ms: number, nowMs: number): string {
  const d = ms - nowMs;
  if (Math.abs(d) < 1000) return 'now';
  return d > 0 ? `in ${humanizeMs(d)}` : `${humanizeMs(-d)} ago`;
}

/** A moment near now: `2025-11-25T14:03:07Z (in 43m)`. */
export function when(ms: number, nowMs: number): string {
  return `${isoTime(ms)} (${relative(ms, nowMs)})`;
}
