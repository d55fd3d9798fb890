// Same-session A/B (issue 22's targets are "same-session A/B against today's main"): the pure
// parts of the baseline mode of bench/run.ts, apart so test/bench can hold them to their rules.
// A run with a baseline measures each chosen daemon/SQL scenario on both checkouts, alternating
// (baseline, subject, subject, baseline, ...), on the same PostgreSQL server, and reports both
// sides with their ratio. Scenarios that do not run our code (rate-limiter-flexible, the bare
// upsert, the echo server) run once, as before: they are the same on both sides.
import path from 'node:path';
import type { Row } from './report.js';

export type Side = 'baseline' | 'subject';

/** Where the baseline comes from: a git ref this checkout knows (built by the bench) or a built checkout. */
export type BaselineSpec = { kind: 'ref'; ref: string } | { kind: 'dir'; dir: string };

/** BENCH_BASELINE=<git ref> or BENCH_BASELINE_DIR=<built checkout>; neither: no baseline. */
export function parseBaseline(env: Readonly<Record<string, string | undefined>>, cwd = process.cwd()): BaselineSpec | undefined {
  const ref = env.BENCH_BASELINE?.trim() || undefined;
  const dir = env.BENCH_BASELINE_DIR?.trim() || undefined;
  if (ref && dir) throw new Error('set BENCH_BASELINE (a git ref the bench builds) or BENCH_BASELINE_DIR (a built checkout), not both');
  if (ref) {
    // Handed to git as one argument: an option or a revision range is not a ref to build.
    if (ref.startsWith('-') || /\s|\.\./.test(ref)) throw new Error(`BENCH_BASELINE must be one git ref (a commit, branch or tag), got "${ref}"`);
    return { kind: 'ref', ref };
  }
  if (dir) return { kind: 'dir', dir: path.resolve(cwd, dir) };
  return undefined;
}

/**
 * The command line: `--quick` (a smoke run) and `--issue22` (exactly the scenarios issue 22's
 * targets need). Unknown arguments are refused rather than ignored: a typo would otherwise
 * silently run the full half-hour bench.
 */
export function parseBenchArgs(argv: readonly string[]): { quick: boolean; issue22: boolean } {
  const known = new Set(['--quick', '--issue22']);
  const unknown = argv.filter((a) => !known.has(a));
  if (unknown.length) throw new Error(`unknown argument${unknown.length > 1 ? 's' : ''} ${unknown.join(' ')}: expected --quick or --issue22`);
  const quick = argv.includes('--quick');
  const issue22 = argv.includes('--issue22');
  if (quick && issue22) throw new Error('--quick and --issue22 are two different selections: give one');
  return { quick, issue22 };
}

/** Issue 22's targets read these scenarios, and only these (bench/run.ts's targets()). */
export const ISSUE22_SCENARIOS: readonly string[] = [
  'ws uniform 256',
  'ws single 512',
  'store rlf uniform 256',
  'ws echo 256',
  'ws open 500/s',
  'store rlf open 500/s',
  'ws open 2000/s',
  'store rlf open 2000/s',
  'idle 10000 ws',
  'idle cpu',
  'policy ws zipf 256',
];

/**
 * The scenarios to run, in the bench's own order: the preset's (when asked) that also match
 * `only` (when given). A preset name the bench no longer has is an error, not a silently
 * missing target.
 */
export function selectScenarios<T extends { name: string }>(all: readonly T[], opts: { only?: RegExp; preset?: readonly string[] }): T[] {
  if (opts.preset) {
    const names = new Set(all.map((s) => s.name));
    const missing = opts.preset.filter((n) => !names.has(n));
    if (missing.length) throw new Error(`the preset names scenarios the bench does not have: ${missing.join(', ')}`);
  }
  const inPreset = opts.preset ? new Set(opts.preset) : undefined;
  return all.filter((s) => (!inPreset || inPreset.has(s.name)) && (!opts.only || opts.only.test(s.name)));
}

/** Whether a scenario runs code of the checkout under test (and so is measured on both sides). */
export function runsOurCode(s: { kind: string; system?: string }): boolean {
  switch (s.kind) {
    case 'ws':
    case 'http':
    case 'idle':
    case 'idlecpu':
      return true;
    case 'store':
    case 'policy':
      return s.system === 'ours';
    default:
      return false;
  }
}

/**
 * The order of one scenario's runs: baseline, subject, then subject, baseline, and so on (A B B A
 * A B ...). Each side's i-th run sits next to the other's i-th, and neither side always goes
 * first, so a drift in the machine (someone else's build starting) lands on both.
 */
export function abOrder(runsPerSide: number, withBaseline: boolean): Side[] {
  if (!Number.isInteger(runsPerSide) || runsPerSide < 1) throw new RangeError(`runs per side must be a positive integer, got ${runsPerSide}`);
  if (!withBaseline) return Array.from({ length: runsPerSide }, () => 'subject' as const);
  const out: Side[] = [];
  for (let i = 0; i < runsPerSide; i++) out.push(...(i % 2 === 0 ? (['baseline', 'subject'] as const) : (['subject', 'baseline'] as const)));
  return out;
}

/** One scenario on both sides: the medians (aggregated rows) and each run alone, in run order. */
export interface AbPair {
  name: string;
  baseline: Row;
  subject: Row;
  baselineRuns: readonly Row[];
  subjectRuns: readonly Row[];
}

/** subject ÷ baseline, NaN when either is missing or the baseline is zero. */
export function ratio(subject: number, baseline: number): number {
  return Number.isFinite(subject) && Number.isFinite(baseline) && baseline !== 0 ? subject / baseline : NaN;
}

/** The ratio of each adjacent pair of runs (the i-th run of each side), for the spread. */
export function pairRatios(pair: AbPair, figure: (r: Row) => number): number[] {
  const n = Math.min(pair.baselineRuns.length, pair.subjectRuns.length);
  return Array.from({ length: n }, (_, i) => ratio(figure(pair.subjectRuns[i]!), figure(pair.baselineRuns[i]!))).filter(Number.isFinite);
}

const fmt = (x: number, digits = 1): string => (Number.isFinite(x) ? x.toFixed(digits) : '–');
const times = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(2)}×` : '–');
const thousands = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
const spread = (xs: readonly number[]): string => (xs.length === 0 ? '–' : `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`);

/**
 * The A/B table: for each scenario measured on both sides, the rate and CPU per decision of each
 * with subject ÷ baseline (of the medians) and the range of that ratio over adjacent pairs of runs.
 * The idle rows have no decisions: their figure (daemon RSS with the sockets open, daemon CPU ms
 * per second) is listed under the table.
 */
export function renderAbTable(pairs: readonly AbPair[]): string {
  const header = [
    'scenario',
    'decisions/s baseline',
    'decisions/s this',
    'rate ×',
    'µs daemon+PG baseline',
    'µs daemon+PG this',
    'µs ×',
    'µs × per pair',
    'µs daemon baseline',
    'µs daemon this',
    'µs PG baseline',
    'µs PG this',
    'p50 ms baseline',
    'p50 ms this',
  ];
  const total = (r: Row) => r.totalUsPerDecision;
  const decided = pairs.filter((p) => p.subject.kind !== 'idle' && p.subject.kind !== 'idlecpu');
  const body = decided.map((p) => [
    p.name,
    thousands(p.baseline.ratePerS),
    thousands(p.subject.ratePerS),
    times(ratio(p.subject.ratePerS, p.baseline.ratePerS)),
    fmt(p.baseline.totalUsPerDecision),
    fmt(p.subject.totalUsPerDecision),
    times(ratio(p.subject.totalUsPerDecision, p.baseline.totalUsPerDecision)),
    spread(pairRatios(p, total)),
    fmt(p.baseline.subjectUsPerDecision),
    fmt(p.subject.subjectUsPerDecision),
    fmt(p.baseline.pgUsPerDecision),
    fmt(p.subject.pgUsPerDecision),
    fmt(p.baseline.p50Ms, 2),
    fmt(p.subject.p50Ms, 2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  const lines = body.length ? [line(header), rule, ...body.map(line)] : [];
  for (const p of pairs) {
    if (p.subject.kind === 'idle') {
      const rss = (r: Row) => r.peakRssMb;
      lines.push(
        `- ${p.name}: daemon RSS with them open ${fmt(p.baseline.peakRssMb)} MB baseline, ${fmt(p.subject.peakRssMb)} MB this (${times(ratio(p.subject.peakRssMb, p.baseline.peakRssMb))}; per pair ${spread(pairRatios(p, rss))})`,
      );
    } else if (p.subject.kind === 'idlecpu') {
      const ms = (r: Row) => r.subjectCpuPercent * 10;
      lines.push(
        `- ${p.name}: daemon ${fmt(ms(p.baseline))} ms CPU/s baseline, ${fmt(ms(p.subject))} ms/s this (${times(ratio(ms(p.subject), ms(p.baseline)))}); ` +
          `PostgreSQL ${fmt(p.baseline.pgCpuPercent * 10)} and ${fmt(p.subject.pgCpuPercent * 10)} ms/s`,
      );
    }
  }
  return lines.join('\n');
}

export interface Target {
  what: string;
  value: string;
  met: boolean | undefined;
}

/**
 * Each target's line with the baseline's figure beside this run's. Both lists come from the same
 * function over rows of the same names, so they pair up in order; a line whose wording differs
 * beyond its figures (a scenario only one side has) is left without one rather than mismatched.
 */
export function withBaselineFigures(subject: readonly Target[], baseline: readonly Target[]): Target[] {
  const shape = (what: string) => what.replace(/[\d.,]+/g, '#');
  return subject.map((t, i) => {
    const b = baseline[i];
    return b && shape(b.what) === shape(t.what) && b.value !== t.value ? { ...t, value: `${t.value}; baseline ${b.value}` } : { ...t };
  });
}

/**
 * "No slower than today": CPU per decision (daemon + PostgreSQL, the figure that survives a shared
 * machine) at most `tolerance` above the baseline's in the same run; the rate ratio is shown beside.
 */
export function noSlowerTarget(name: string, pair: AbPair | undefined, tolerance: number): Target {
  const what = `${name}: no slower than the baseline (CPU µs per decision, daemon + PostgreSQL, ≤ ${(1 + tolerance).toFixed(2)}× the baseline's in the same run)`;
  if (!pair) return { what, value: 'needs a baseline in the same run (BENCH_BASELINE or BENCH_BASELINE_DIR)', met: undefined };
  const us = ratio(pair.subject.totalUsPerDecision, pair.baseline.totalUsPerDecision);
  const rate = ratio(pair.subject.ratePerS, pair.baseline.ratePerS);
  return {
    what,
    value:
      `${times(us)} (${fmt(pair.subject.totalUsPerDecision)} µs against ${fmt(pair.baseline.totalUsPerDecision)}; per pair ${spread(pairRatios(pair, (r) => r.totalUsPerDecision))}); ` +
      `rate ${times(rate)} (${thousands(pair.subject.ratePerS)}/s against ${thousands(pair.baseline.ratePerS)}/s)`,
    met: Number.isFinite(us) ? us <= 1 + tolerance : undefined,
  };
}
