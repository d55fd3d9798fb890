const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
type Unit = keyof typeof UNIT_MS;
const DURATION = /^(\d+)\s*(ms|s|m|h|d)?$/;
// Longer windows would need more than a Postgres BIGINT of headroom nowhere, but they are always a typo.
const MAX_DURATION_MS = 366 * UNIT_MS.d;

/** Parses `500ms`, `30s`, `15m`, `1h`, `1d` or plain milliseconds; null when it is none of them. */
export function parseDurationMs(text: string): number | null {
  const match = DURATION.exec(text.trim());
  if (!match) return null;
  const value = Number(match[1]) * UNIT_MS[(match[2] ?? 'ms') as Unit];
  if (!Number.isSafeInteger(value) || value <= 0 || value > MAX_DURATION_MS) return null;
  return value;
}

/** The shortest exact spelling: 3600000 → `1h`, 90000 → `90s`. */
export function formatDurationMs(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms >= UNIT_MS[unit] && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}

/** For people: 1234567 → `20m 35s`. */
export function humanizeMs(ms: number): string {
  if (ms <= 0) return 'now';
  const s = Math.ceil(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const parts: string[] = [];
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m) parts.push(`${m}m`);
  if (sec && !d) parts.push(`${sec}s`);
  return parts.slice(0, 2).join(' ');
}
