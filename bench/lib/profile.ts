// Where a daemon's CPU goes, from the V8 CPU profiles an A/B run writes (BENCH_PROFILE_DIR):
// each sample's function is put in a category (GC, libphonenumber, socket writes, the pg driver,
// our engine...), and each category's share of the busy samples times the run's daemon CPU per
// decision gives µs per decision per category, for the baseline and for this checkout. Issue 22
// asks the note to say where each saved microsecond came from: this is that table.

/** The parts of a `.cpuprofile` (Chrome DevTools protocol Profiler.Profile) read here. */
export interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string }; children?: number[] }>;
  /** µs on CLOCK_MONOTONIC (on Linux), as process.hrtime in any process. */
  startTime?: number;
  samples: number[];
  timeDeltas?: number[];
}

/**
 * The category of a function by where its code lives, first match wins. Self time only: a
 * sample counts for the function running, not for its callers.
 */
export function categorize(frame: { functionName: string; url: string }): string {
  const { functionName: fn, url } = frame;
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)') return 'idle';
  if (fn === '(program)') return 'V8 and native (program)';
  if (fn === '(root)') return 'idle';
  const mod = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1];
  if (mod) {
    if (mod === 'libphonenumber-js') return 'libphonenumber';
    if (mod === 'ws' || mod === 'bufferutil' || mod === 'utf-8-validate') return 'ws (frames)';
    if (mod === 'pg' || mod.startsWith('pg-') || mod === 'pgpass' || mod === 'postgres-array') return 'pg driver';
    if (mod === 'lru-cache') return 'lru-cache';
    if (mod === 'zod') return 'zod';
    if (mod === 'pino' || mod.startsWith('pino-') || mod === 'sonic-boom' || mod === 'thread-stream') return 'logging';
    if (mod === 'ipaddr.js') return 'ipaddr';
    if (mod === 'prom-client') return 'metrics';
    return `other packages (${mod})`;
  }
  if (/\/dist\/src\/daemon\/engine\//.test(url)) return 'engine and batcher';
  if (/\/dist\/src\/daemon\//.test(url)) return 'daemon (transport, decider)';
  if (/\/dist\/src\/core\//.test(url)) return 'core (phone, hash, policy)';
  if (/\/dist\/src\/db\//.test(url)) return 'db layer';
  if (/\/dist\/src\//.test(url)) return 'other own code';
  if (/^node:(net|stream|internal\/(net|stream_base_commons|streams))/.test(url) || fn === 'writev' || fn === 'writeBuffer' || fn === 'writeUtf8String')
    return 'socket I/O';
  if (/^node:(crypto|internal\/crypto)/.test(url) || fn === 'digest' || fn === 'Hmac') return 'crypto (HMAC, cipher)';
  if (/^node:internal\/(modules|bootstrap)|^node:internal\/deps\/cjs-module-lexer/.test(url)) return 'module loading';
  if (/^node:(internal\/)?(timers|process\/task_queues|async_hooks)/.test(url) || fn === 'processTicksAndRejections' || fn === 'runMicrotasks')
    return 'timers, ticks and promises';
  if (url === '' && (fn === 'parse' || fn === 'stringify')) return 'JSON';
  if (url.startsWith('node:')) return 'other node internals';
  if (url === '') return `V8 builtins (${fn || 'anonymous'})`.slice(0, 60);
  return 'other';
}

/**
 * Each category's share of the profile's busy time (idle excluded), by the time between samples
 * when the profile has it, else by sample count. `windowUs`: only the samples taken inside it
 * (the run's measured window: not start-up, warm-up or shutdown); needs the profile's times.
 */
export function categoryShares(profile: CpuProfile, windowUs?: { startUs: number; endUs: number }): Map<string, number> {
  const categoryOf = new Map(profile.nodes.map((n) => [n.id, categorize(n.callFrame)]));
  const weight = new Map<string, number>();
  const timed = profile.timeDeltas !== undefined && profile.startTime !== undefined;
  let at = profile.startTime ?? 0;
  let busy = 0;
  profile.samples.forEach((id, i) => {
    // timeDeltas[i] is the time since the previous sample (for the first, since the start).
    if (timed) at += profile.timeDeltas![i]!;
    if (windowUs && timed && (at < windowUs.startUs || at > windowUs.endUs)) return;
    const c = categoryOf.get(id) ?? 'other';
    if (c === 'idle') return;
    const w = profile.timeDeltas && i > 0 ? Math.max(0, profile.timeDeltas[i]!) : 1;
    weight.set(c, (weight.get(c) ?? 0) + w);
    busy += w;
  });
  const shares = new Map<string, number>();
  if (busy > 0) for (const [c, w] of weight) shares.set(c, w / busy);
  return shares;
}

/** What run.ts records beside each profiled run. */
export interface ProfileMeta {
  scenario: string;
  side: 'baseline' | 'subject';
  run: number;
  /** The daemon's CPU µs per decision over the run's measured window. */
  daemonUsPerDecision: number;
  /** That window on CLOCK_MONOTONIC, µs (the profile's clock). */
  windowStartUs?: number;
  windowEndUs?: number;
}

/** One scenario's µs per decision per category on each side: the median over its runs. */
export interface ProfileComparison {
  scenario: string;
  daemonUs: { baseline: number; subject: number };
  rows: Array<{ category: string; baseline: number; subject: number }>;
}

function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

/**
 * µs per decision per category: each run's shares × its daemon µs per decision, the median over
 * a side's runs. Categories under `minUs` on both sides are folded into "everything else".
 */
export function compareProfiles(runs: ReadonlyArray<{ meta: ProfileMeta; shares: Map<string, number> }>, minUs = 0.5): ProfileComparison[] {
  const scenarios = [...new Set(runs.map((r) => r.meta.scenario))];
  return scenarios.map((scenario) => {
    const of = (side: ProfileMeta['side']) => runs.filter((r) => r.meta.scenario === scenario && r.meta.side === side);
    const categories = [...new Set(runs.filter((r) => r.meta.scenario === scenario).flatMap((r) => [...r.shares.keys()]))];
    const usOf = (side: ProfileMeta['side'], c: string) => median(of(side).map((r) => (r.shares.get(c) ?? 0) * r.meta.daemonUsPerDecision));
    const all = categories.map((category) => ({ category, baseline: usOf('baseline', category), subject: usOf('subject', category) }));
    const big = (r: { baseline: number; subject: number }) =>
      (Number.isFinite(r.baseline) && r.baseline >= minUs) || (Number.isFinite(r.subject) && r.subject >= minUs);
    const rows = all.filter(big).sort((a, b) => (b.baseline || b.subject) - (a.baseline || a.subject));
    const rest = all.filter((r) => !big(r));
    if (rest.length) {
      const sum = (k: 'baseline' | 'subject') => (of(k).length ? rest.reduce((a, r) => a + (Number.isFinite(r[k]) ? r[k] : 0), 0) : NaN);
      rows.push({ category: `everything else (${rest.length} categories)`, baseline: sum('baseline'), subject: sum('subject') });
    }
    return {
      scenario,
      daemonUs: {
        baseline: median(of('baseline').map((r) => r.meta.daemonUsPerDecision)),
        subject: median(of('subject').map((r) => r.meta.daemonUsPerDecision)),
      },
      rows,
    };
  });
}

export function renderProfileComparison(c: ProfileComparison): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
  const d = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) ? `${b - a >= 0 ? '+' : ''}${(b - a).toFixed(1)}` : '–');
  return [
    `${c.scenario}: daemon CPU µs per decision, by where it went (self time in the daemon's CPU profile × the run's µs per decision; median over runs)`,
    '',
    '| category | baseline µs | this µs | this − baseline |',
    '|:--|--:|--:|--:|',
    ...c.rows.map((r) => `| ${r.category} | ${f(r.baseline)} | ${f(r.subject)} | ${d(r.baseline, r.subject)} |`),
    `| **daemon total** | ${f(c.daemonUs.baseline)} | ${f(c.daemonUs.subject)} | ${d(c.daemonUs.baseline, c.daemonUs.subject)} |`,
  ].join('\n');
}
