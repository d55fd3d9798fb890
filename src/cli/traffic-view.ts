// The movers for `top`, `stats` and `block --top`: the last minutes against the day before
// (src/db/traffic.ts reads, src/core/traffic.ts ranks), the baseline kept between frames.
import type { Pool } from '../db/pool.js';
import { readTrafficBaseline, readTrafficNow, type TrafficBaseline } from '../db/traffic.js';
import { blockedBy, movers, type Mover } from '../core/traffic.js';
import { DEFAULT_PRICES, type PriceTable } from '../core/prices.js';

/** "Now" for the movers: long enough to hold a few hundred calls, short enough to move within a minute of an attack. */
export const TRAFFIC_WINDOW_MS = 10 * 60_000;
/**
 * Normal: the day before the window, from the active set (its retention). The last hours rather
 * than the same hour on past days because the database keeps no older per-number history; a day
 * rather than an hour so that an attack running for an hour is not yet its own normal.
 */
export const BASELINE_SPAN_MS = 24 * 3_600_000;
// The baseline reads a day of the active set: once per this, not on every frame.
const BASELINE_REFRESH_MS = 5 * 60_000;

export interface MoversView {
  windowMs: number;
  baselineSpanMs: number;
  /** 10-minute epochs with history in the baseline: 0 means no baseline yet. */
  baselineEpochs: number;
  rows: Mover[];
  /** Active numbers whose stored mask names no range (older masks): counted by country only. */
  unranged: number;
  prices: Pick<PriceTable, 'currency' | 'unit' | 'isDefault'>;
  /** Spend per minute over the window, every country. */
  spendPerMin: number;
}

/** Reads the movers, re-reading the baseline only every few minutes (a live `top` keeps one). */
export class TrafficReader {
  private base: { atMs: number; value: TrafficBaseline } | undefined;

  constructor(
    private readonly prices: PriceTable = DEFAULT_PRICES,
    private readonly windowMs: number = TRAFFIC_WINDOW_MS,
  ) {}

  async read(pool: Pool, blockedPrefixes: readonly string[]): Promise<MoversView> {
    const fresh = this.base && performance.now() - this.base.atMs < BASELINE_REFRESH_MS ? this.base.value : undefined;
    const [now, base] = await Promise.all([readTrafficNow(pool, this.windowMs), fresh ?? readTrafficBaseline(pool, BASELINE_SPAN_MS, this.windowMs)]);
    if (!fresh) this.base = { atMs: performance.now(), value: base };
    const rows = movers(now, base, this.prices, blockedBy(blockedPrefixes));
    return {
      windowMs: this.windowMs,
      baselineSpanMs: BASELINE_SPAN_MS,
      baselineEpochs: base.epochs,
      rows,
      unranged: now.unranged,
      prices: { currency: this.prices.currency, unit: this.prices.unit, isDefault: this.prices.isDefault },
      spendPerMin: rows.filter((r) => r.kind === 'country').reduce((n, r) => n + r.spendPerMin, 0),
    };
  }
}

/** The digits a mask shows before its first bullet: a prefix entry covering them covers the number. */
export function visibleHead(masked: string): string {
  const i = masked.indexOf('•');
  return i < 0 ? masked : masked.slice(0, i);
}
