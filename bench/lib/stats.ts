// Latencies go into log-spaced buckets (1% wide) instead of an array of samples: a 10 s run at
// 50k/s would otherwise hold 500k floats in the load generator, whose memory and GC we measure.
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
const MIN_US = 1;
const BUCKETS = Math.ceil(Math.log(60e6 / MIN_US) / LOG_GROWTH) + 1;

export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKETS);
  count = 0;
  private maxUs = 0;

  recordMs(ms: number): void {
    const us = Math.max(MIN_US, ms * 1000);
    const i = Math.min(BUCKETS - 1, Math.floor(Math.log(us / MIN_US) / LOG_GROWTH));
    this.counts[i]!++;
    this.count++;
    if (us > this.maxUs) this.maxUs = us;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.maxUs = 0;
  }

  /** Upper edge of the bucket holding the q-quantile, in ms (≤ 1% above the true value). */
  quantileMs(q: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(this.maxUs, MIN_US * GROWTH ** (i + 1)) / 1000;
    }
    return this.maxUs / 1000;
  }

  get maxMs(): number {
    return this.maxUs / 1000;
  }
}

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
