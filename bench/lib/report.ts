import { readFile, writeFile } from 'node:fs/promises';

export interface Row {
  name: string;
  kind: 'store' | 'ws' | 'http' | 'echo' | 'idle' | 'idlecpu' | 'policy';
  /** e.g. "uniform 256" */
  ratePerS: number;
  rateMinPerS: number;
  rateMaxPerS: number;
  /** CPU time per decision (µs) of the subject (daemon or store worker), PostgreSQL (every backend), the load generator. */
  subjectUsPerDecision: number;
  pgUsPerDecision: number;
  genUsPerDecision: number;
  /** Subject + PostgreSQL: what a decision costs the deployment. */
  totalUsPerDecision: number;
  p50Ms: number;
  p99Ms: number;
  /** Open-loop rows only. */
  p999Ms: number;
  subjectCpuPercent: number;
  pgCpuPercent: number;
  genCpuPercent: number;
  machineBusyPercent: number;
  foreignCpuPercent: number;
  walBytesPerDecision: number;
  peakRssMb: number;
  ratioVsRlf: number;
  allowedPercent: number;
  errors: number;
  /** Mean decisions per consume statement (the daemon's histogram); ws and http rows. */
  meanBatch?: number;
  note?: string;
}

const fmt = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '–');
const thousands = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');

export function renderTable(rows: readonly Row[]): string {
  const header = [
    'scenario',
    'decisions/s',
    'µs/decision subject',
    'µs PG',
    'µs subject+PG',
    'µs loadgen',
    'min–max',
    'p50 ms',
    'p99 ms',
    'p99.9 ms',
    'CPU % subject',
    'CPU % PG',
    'CPU % loadgen',
    'machine busy %',
    'other CPU %',
    'WAL B/decision',
    'peak RSS MB',
    '× RLF',
    'allowed %',
  ];
  const body = rows.map((r) => [
    r.name,
    thousands(r.ratePerS),
    fmt(r.subjectUsPerDecision, 1),
    fmt(r.pgUsPerDecision, 1),
    fmt(r.totalUsPerDecision, 1),
    fmt(r.genUsPerDecision, 1),
    Number.isFinite(r.rateMinPerS) ? `${thousands(r.rateMinPerS)}–${thousands(r.rateMaxPerS)}` : '–',
    fmt(r.p50Ms, 2),
    fmt(r.p99Ms, 2),
    fmt(r.p999Ms, 2),
    fmt(r.subjectCpuPercent),
    fmt(r.pgCpuPercent),
    fmt(r.genCpuPercent),
    fmt(r.machineBusyPercent),
    fmt(r.foreignCpuPercent),
    fmt(r.walBytesPerDecision),
    fmt(r.peakRssMb, 1),
    Number.isFinite(r.ratioVsRlf) ? `${r.ratioVsRlf.toFixed(2)}×` : '–',
    fmt(r.allowedPercent),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

const START = '<!-- bench:start (written by `npm run bench`; edits inside are overwritten) -->';
const END = '<!-- bench:end -->';

const PREAMBLE = `# Benchmarks

\`npm run bench\` starts its own PostgreSQL (fsync and synchronous_commit on), runs every scenario
below for a fixed time after a warm-up, repeats each and reports medians. It prints this table,
writes \`bench/results/latest.json\` and rewrites the section between the markers below.
\`npm run bench -- --quick\` is a smoke run of a few scenarios (it does not touch this file).
Environment: \`BENCH_SECONDS\` (measured seconds per run), \`BENCH_WARMUP_SECONDS\`,
\`BENCH_REPEATS\`, \`BENCH_ONLY\` (regular expression over scenario names; such a run leaves this
file alone unless \`BENCH_WRITE_MD=1\`), \`BENCH_DAEMON_NODE_ARGS\` (e.g. \`--cpu-prof
--cpu-prof-dir=/tmp/prof\` to profile the daemon), \`BENCH_MAX_ATTEMPTS\`, \`BENCH_QUIET_WAIT_SECONDS\`,
\`BENCH_SIZES=0\` (skip the table-size scenarios), \`BENCH_WARM_DISTINCT\`,
\`BENCH_IDLE_CPU_SECONDS\` / \`BENCH_IDLE_CPU_SETTLE_SECONDS\`.

How to read it:
- **store** rows run in one process (the "subject"): our decision path (the daemon's
  \`DecisionEngine\`: group commit, one \`ratelimit_decide\` statement per batch, no deny cache),
  rate-limiter-flexible's \`RateLimiterPostgres.consume()\`, and a bare one-upsert-per-decision loop
  (the per-commit ceiling). Same pool size, same keys (HMAC hashes of valid US numbers, 7 per 1,000-number range so the default sweep rule allows them,
  uniform or Zipf s=1.1 over 100k), same number of decisions in flight.
- Every run starts from the same state: the 100k numbers already known with nothing counted
  (rate-limiter-flexible's rows expired), tables vacuumed and analysed, a fresh CHECKPOINT.
- **ws** / **http** rows are end to end: \`ratelimit serve\` (the subject) in one process, a load
  generator in another, PostgreSQL in a third set, all on the same cores.
- **echo** is a \`ws\` server that only echoes, driven by the same generator: the transport ceiling.
- **µs/decision** is the headline: CPU time (utime + stime from /proc) of each process over the
  measured window divided by the decisions made in it, for the subject, every PostgreSQL process,
  and the load generator. Unlike rates and tails it survives a shared machine. \`idle cpu\` has
  no decisions: its CPU % × 10 is CPU ms per second of a daemon with nothing to do.
- **open** rows are open loop (fixed rate, latency timed from when each request was due);
  p99.9 is shown for them only.
- CPU % is CPU time over wall time (100 = one core); "machine busy" is the whole machine
  (100 = every core); "other CPU" is CPU used by processes outside the benchmark during the
  measured window: kernel threads doing this benchmark's I/O (WAL fsyncs) show up there too,
  ~10 % at high commit rates; more means the machine was shared. Each run first waits, up to a
  minute, for the machine to be quiet, and a run during which others took more than 25 % of a
  core is repeated (up to three attempts; the least disturbed one is kept). "WAL B/decision" is WAL written per decision (pg_current_wal_lsn). Peak RSS is the subject's VmHWM. "× RLF" compares with
  rate-limiter-flexible at the same keys, concurrency and limit.
`;

export async function updateBenchmarksMd(file: string, section: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    text = `${PREAMBLE}\n${START}\n${END}\n`;
  }
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  const next = a >= 0 && b > a ? `${text.slice(0, a + START.length)}\n${section}\n${text.slice(b)}` : `${text.trimEnd()}\n\n${START}\n${section}\n${END}\n`;
  await writeFile(file, next);
}
