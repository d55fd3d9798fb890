import { LatencyHistogram } from './stats.js';

// Workers talk to run.ts in JSON lines on stdout: "measure-start" and "measure-end" let the
// parent read /proc exactly around the measured window, "result" carries the numbers.

export type WorkerEvent =
  | { event: 'ready'; opened?: number; openMs?: number; port?: number }
  | { event: 'measure-start' }
  | { event: 'measure-end' }
  | { event: 'result'; result: WorkerResult };

export interface WorkerResult {
  decisions: number;
  allowed: number;
  denied: number;
  errors: number;
  measuredS: number;
  p50Ms: number;
  p99Ms: number;
  /** Open-loop runs only (closed-loop tails mostly measure the queue the driver itself builds). */
  p999Ms?: number;
  maxMs: number;
  /** The worker's own CPU over the measured window, % of one core. */
  cpuPercent: number;
  peakRssMb: number;
  extra?: Record<string, unknown>;
}

export function emit(e: WorkerEvent): void {
  process.stdout.write(`${JSON.stringify(e)}\n`);
}

/** Reads the worker's configuration from argv[2] (JSON). */
export function workerArgs<T>(): T {
  const raw = process.argv[2];
  if (!raw) throw new Error('expected the worker configuration as a JSON argument');
  return JSON.parse(raw) as T;
}

/** process.cpuUsage over a window, as % of one core. */
export function cpuWindow(): () => number {
  const start = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const d = process.cpuUsage(start);
    return ((d.user + d.system) / 1000 / (performance.now() - t0)) * 100;
  };
}

export function peakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/**
 * A closed-loop driver: `lanes` loops each keep one operation in flight. Runs warm-up then the
 * measured window, then stops issuing and waits (bounded) for what is still in flight.
 */
export async function driveLanes(opts: {
  lanes: number;
  warmupMs: number;
  measureMs: number;
  op: () => Promise<'allowed' | 'denied'>;
  onMeasureStart?: () => void;
}): Promise<WorkerResult> {
  const hist = new LatencyHistogram();
  let measuring = false;
  let stopped = false;
  let allowed = 0;
  let denied = 0;
  let errors = 0;
  let firstError: string | undefined;
  const lane = async () => {
    while (!stopped) {
      const t0 = performance.now();
      let outcome: 'allowed' | 'denied' | 'error';
      try {
        outcome = await opts.op();
      } catch (err) {
        outcome = 'error';
        firstError ??= (err as Error).message;
      }
      if (!measuring) continue;
      if (outcome === 'error') {
        errors++;
        continue;
      }
      hist.recordMs(performance.now() - t0);
      if (outcome === 'allowed') allowed++;
      else denied++;
    }
  };
  const running = Array.from({ length: opts.lanes }, lane);
  await new Promise((r) => setTimeout(r, opts.warmupMs));
  emit({ event: 'measure-start' });
  opts.onMeasureStart?.();
  const cpu = cpuWindow();
  const t0 = performance.now();
  measuring = true;
  await new Promise((r) => setTimeout(r, opts.measureMs));
  measuring = false;
  const measuredS = (performance.now() - t0) / 1000;
  const cpuPercent = cpu();
  emit({ event: 'measure-end' });
  stopped = true;
  await Promise.race([Promise.all(running), new Promise((r) => setTimeout(r, 10_000))]);
  return workerResult({ allowed, denied, errors, measuredS, hist, cpuPercent, firstError });
}

/**
 * An open-loop driver: issues `ratePerS` operations a second on a fixed schedule whatever the
 * replies do, and times each from when it was due (not when it was sent), so a stall shows up
 * in the latencies of everything scheduled behind it instead of silently lowering the rate.
 * `maxOutstanding` bounds what a stalled subject can pile up; what it refuses counts as errors.
 */
export async function driveOpenLoop(opts: {
  ratePerS: number;
  warmupMs: number;
  measureMs: number;
  maxOutstanding?: number;
  op: () => Promise<'allowed' | 'denied'>;
}): Promise<WorkerResult> {
  const hist = new LatencyHistogram();
  const maxOutstanding = opts.maxOutstanding ?? 10_000;
  let allowed = 0;
  let denied = 0;
  let errors = 0;
  let outstanding = 0;
  let firstError: string | undefined;
  const issue = (dueMs: number, counted: boolean) => {
    if (outstanding >= maxOutstanding) {
      if (counted) errors++;
      firstError ??= `more than ${maxOutstanding} operations outstanding`;
      return;
    }
    outstanding++;
    opts.op().then(
      (outcome) => {
        outstanding--;
        if (!counted) return;
        hist.recordMs(performance.now() - dueMs);
        if (outcome === 'allowed') allowed++;
        else denied++;
      },
      (err: unknown) => {
        outstanding--;
        if (counted) errors++;
        firstError ??= (err as Error).message;
      },
    );
  };
  const startMs = performance.now();
  const intervalMs = 1000 / opts.ratePerS;
  let issued = 0;
  let measureStartMs = Infinity;
  let measureEndMs = Infinity;
  // A 1 ms timer issues whatever has come due since the last tick, each with its own due time.
  const timer = setInterval(() => {
    const now = performance.now();
    while (startMs + issued * intervalMs <= now) {
      const due = startMs + issued * intervalMs;
      issued++;
      issue(due, due >= measureStartMs && due < measureEndMs);
    }
  }, 1);
  await new Promise((r) => setTimeout(r, opts.warmupMs));
  emit({ event: 'measure-start' });
  const cpu = cpuWindow();
  measureStartMs = performance.now();
  await new Promise((r) => setTimeout(r, opts.measureMs));
  measureEndMs = performance.now();
  const measuredS = (measureEndMs - measureStartMs) / 1000;
  const cpuPercent = cpu();
  emit({ event: 'measure-end' });
  clearInterval(timer);
  const drainUntil = performance.now() + 10_000;
  while (outstanding > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 5));
  const result = workerResult({ allowed, denied, errors, measuredS, hist, cpuPercent, firstError });
  return { ...result, p999Ms: hist.quantileMs(0.999) };
}

/** What every load worker reports at the end of its measured window. */
export function workerResult(m: {
  allowed: number;
  denied: number;
  errors: number;
  measuredS: number;
  hist: LatencyHistogram;
  cpuPercent: number;
  firstError: string | undefined;
}): WorkerResult {
  return {
    decisions: m.allowed + m.denied,
    allowed: m.allowed,
    denied: m.denied,
    errors: m.errors,
    measuredS: m.measuredS,
    p50Ms: m.hist.quantileMs(0.5),
    p99Ms: m.hist.quantileMs(0.99),
    maxMs: m.hist.maxMs,
    cpuPercent: m.cpuPercent,
    peakRssMb: peakRssMb(),
    ...(m.firstError ? { extra: { firstError: m.firstError } } : {}),
  };
}
