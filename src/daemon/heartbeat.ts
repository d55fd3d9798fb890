// Publishes this instance's heartbeat row for `ratelimit top`. Nothing here may hurt serving:
// a failed write is reported and retried on the next tick, and timers never keep the process up.
// Each beat also adds the decisions made since the last one to the fleet's per-minute rollup
// (rate_limit_decision_counts), which `ratelimit stats` sums over its window.
import type { Pool } from '../db/pool.js';
import { deleteStaleInstances, upsertHeartbeat, type DaemonIdentity } from '../db/fleet.js';
import { addDecisionCounts, LIST_HIT_REASON, pruneDecisionCounts, SHADOW_REASON, type DecisionCountDelta } from '../db/decision-counts.js';
import { pruneActiveNumbers } from '../db/active-numbers.js';
import type { DecisionCounters } from './tally.js';

export interface InstanceSnapshot {
  connections: number;
  /** Cumulative since the instance started. */
  allowedTotal: number;
  deniedTotal: number;
  fallback: boolean;
  dbLatencyMs: number | null;
  /** The policy version being enforced (0: the RATE_LIMIT_* default). */
  policyVersion?: number;
  /** Every consume by outcome, denial reason and shadow rule (src/daemon/tally.ts). */
  counters?: DecisionCounters;
}

export interface HeartbeatOptions {
  pool: Pool;
  intervalMs: number;
  identity: DaemonIdentity;
  snapshot: () => InstanceSnapshot;
  onError?: (err: Error) => void;
}

export interface HeartbeatHandle {
  /** Marks the row stopped (so `top` shows the instance as left, not crashed); deletes nothing. */
  stop(): Promise<void>;
}

// The sparkline's resolution and length: one bucket per second over the last minute.
export const SAMPLE_INTERVAL_MS = 1_000;
export const SERIES_LENGTH = 60;
// Rates are averaged over a few seconds so one busy second does not make the dashboard flicker.
export const RATE_WINDOW_MS = 5_000;
// Rows of instances that crashed (or stopped) this long ago are of no use to anyone.
export const STALE_INSTANCE_MS = 10 * 60_000;
// Every instance cleans up after the others; once a minute each is plenty.
export const CLEANUP_EVERY_MS = 60_000;
// A database outage would otherwise report the same error every tick: once per streak, then
// once a minute while it lasts; a different error is reported at once.
export const ERROR_REPEAT_MS = 60_000;

interface Sample {
  atMs: number;
  allowed: number;
  denied: number;
  byReason: Readonly<Record<string, number>>;
}

type Counts = Readonly<Record<string, number>>;

/** What grew from `before` to `after`, as rollup rows; a counter that went backwards (a restart) counts from zero. */
function deltas(reasonOf: (key: string) => [string, string], before: Counts, after: Counts): DecisionCountDelta[] {
  const out: DecisionCountDelta[] = [];
  for (const [key, n] of Object.entries(after)) {
    const was = before[key] ?? 0;
    const d = n >= was ? n - was : n;
    const [reason, rule] = reasonOf(key);
    if (d > 0) out.push({ reason, rule, n: d });
  }
  return out;
}

export function startHeartbeat(opts: HeartbeatOptions): HeartbeatHandle {
  const { pool, identity } = opts;
  const intervalMs = Math.max(1, Math.round(opts.intervalMs));
  // Monotonic, so a wall-clock jump cannot make uptime or a rate go backwards.
  const t0 = performance.now();
  const uptimeAtT0Ms = Math.max(0, Date.now() - identity.startedAt.getTime());
  const allowedSeries: number[] = [];
  const deniedSeries: number[] = [];
  let samples: Sample[] = [];
  let lastCleanupAt = -Infinity;
  let lastReported: { message: string; atMs: number } | undefined;
  let inFlight: Promise<void> | undefined;
  let stopping: Promise<void> | undefined;

  const report = (err: unknown) => {
    const error = err instanceof Error ? err : new Error(String(err));
    const now = performance.now();
    if (lastReported?.message === error.message && now - lastReported.atMs < ERROR_REPEAT_MS) return;
    lastReported = { message: error.message, atMs: now };
    try {
      opts.onError?.(error);
    } catch {
      // a throwing error handler must not take the heartbeat (or the daemon) down with it
    }
  };

  const read = (): { atMs: number; snap: InstanceSnapshot } | undefined => {
    try {
      return { atMs: performance.now(), snap: opts.snapshot() };
    } catch (err) {
      report(err);
      return undefined;
    }
  };

  const toSample = (atMs: number, snap: InstanceSnapshot): Sample => ({
    atMs,
    allowed: snap.allowedTotal,
    denied: snap.deniedTotal,
    byReason: { ...(snap.counters?.deniedByReason ?? {}) },
  });
  const first = read();
  if (first) samples.push(toSample(first.atMs, first.snap));
  // What the rollup already holds: decisions are added to it once, when a beat has written them.
  let rolledUp: { byReason: Counts; shadow: Counts; listHits: Counts } = { byReason: {}, shadow: {}, listHits: {} };

  const sample = () => {
    const now = read();
    if (!now) return;
    const prev = samples[samples.length - 1];
    const next = toSample(now.atMs, now.snap);
    if (prev) {
      // Timers drift: scale each bucket to a true second. A counter that went backwards
      // (it should not) counts as zero rather than as a negative rate.
      const perSecond = SAMPLE_INTERVAL_MS / Math.max(1, next.atMs - prev.atMs);
      push(allowedSeries, Math.max(0, Math.round((next.allowed - prev.allowed) * perSecond)));
      push(deniedSeries, Math.max(0, Math.round((next.denied - prev.denied) * perSecond)));
    }
    samples.push(next);
    samples = samples.filter((s) => s.atMs >= next.atMs - RATE_WINDOW_MS - SAMPLE_INTERVAL_MS);
  };

  const rates = (atMs: number, snap: InstanceSnapshot): { allowedPerS: number; deniedPerS: number; deniedPerSByReason: Record<string, number> } => {
    const base = samples.find((s) => s.atMs >= atMs - RATE_WINDOW_MS) ?? samples[samples.length - 1];
    const elapsedS = base ? (atMs - base.atMs) / 1000 : 0;
    if (!base || elapsedS < 0.2) return { allowedPerS: 0, deniedPerS: 0, deniedPerSByReason: {} };
    const deniedPerSByReason: Record<string, number> = {};
    for (const [reason, n] of Object.entries(snap.counters?.deniedByReason ?? {})) {
      const perS = Math.max(0, (n - (base.byReason[reason] ?? 0)) / elapsedS);
      if (perS > 0) deniedPerSByReason[reason] = perS;
    }
    return {
      allowedPerS: Math.max(0, (snap.allowedTotal - base.allowed) / elapsedS),
      deniedPerS: Math.max(0, (snap.deniedTotal - base.denied) / elapsedS),
      deniedPerSByReason,
    };
  };

  const rollUp = async (snap: InstanceSnapshot): Promise<void> => {
    const c = snap.counters;
    if (!c) return;
    const now = { byReason: { ...c.deniedByReason }, shadow: { ...c.shadowDenied }, listHits: { ...c.listHits } };
    await addDecisionCounts(pool, [
      ...deltas((reason) => [reason, ''], rolledUp.byReason, now.byReason),
      ...deltas((rule) => [SHADOW_REASON, rule], rolledUp.shadow, now.shadow),
      ...deltas((entry) => [LIST_HIT_REASON, entry], rolledUp.listHits, now.listHits),
    ]);
    rolledUp = now;
  };

  const write = async (stopped: boolean): Promise<void> => {
    const now = read();
    if (!now) return;
    const { snap, atMs } = now;
    const live = !stopped;
    try {
      await upsertHeartbeat(pool, {
        ...identity,
        uptimeMs: uptimeAtT0Ms + (atMs - t0),
        intervalMs,
        connections: live ? snap.connections : 0,
        ...(live ? rates(atMs, snap) : { allowedPerS: 0, deniedPerS: 0, deniedPerSByReason: {} }),
        allowedTotal: snap.allowedTotal,
        deniedTotal: snap.deniedTotal,
        fallback: snap.fallback,
        dbLatencyMs: snap.dbLatencyMs,
        allowedSeries,
        deniedSeries,
        stopped,
        policyVersion: snap.policyVersion ?? 0,
        deniedByReason: snap.counters?.deniedByReason ?? {},
        shadowDenied: snap.counters?.shadowDenied ?? {},
      });
      // Not added on failure: the next beat carries these deltas too.
      await rollUp(snap);
      lastReported = undefined;
    } catch (err) {
      report(err);
      return;
    }
    if (live && atMs - lastCleanupAt >= CLEANUP_EVERY_MS) {
      lastCleanupAt = atMs;
      await deleteStaleInstances(pool, STALE_INSTANCE_MS).catch(report);
      await pruneDecisionCounts(pool).catch(report);
      // The active-number set of `stats` and `top` (migrations 011, 013): epochs no window needs any more.
      await pruneActiveNumbers(pool).catch(report);
    }
  };

  const beat = () => {
    // A slow database must not pile up writes: skip this tick, the next one carries newer numbers.
    if (inFlight || stopping) return;
    inFlight = write(false).finally(() => {
      inFlight = undefined;
    });
  };

  const sampler = setInterval(sample, SAMPLE_INTERVAL_MS);
  sampler.unref();
  const writer = setInterval(beat, intervalMs);
  writer.unref();
  // Show up in `top` right away rather than one interval after start.
  beat();

  return {
    stop() {
      stopping ??= (async () => {
        clearInterval(sampler);
        clearInterval(writer);
        await inFlight;
        await write(true);
      })();
      return stopping;
    },
  };
}

function push(series: number[], value: number): void {
  series.push(value);
  if (series.length > SERIES_LENGTH) series.splice(0, series.length - SERIES_LENGTH);
}
