// One-off (not part of `npm run bench`): where PostgreSQL's CPU goes process by process while a
// bench command runs. The end-to-end bench sums every PostgreSQL process from /proc; this splits
// that sum into client backends (by application_name in the process title), autovacuum workers,
// walwriter, checkpointer, background writer and the rest, sampled from /proc every 250 ms.
// It runs the command as its child, so every PostgreSQL process the command starts is below it.
//
//   npm run build && BENCH_ONLY='^(ws uniform 256)$' BENCH_SECONDS=6 BENCH_REPEATS=1 BENCH_SIZES=0 \
//     node dist/bench/sql-pg-split.js node --expose-gc dist/bench/run.js
//
// It prints CPU per second by kind, one line per second, then the same summed over the busy
// stretch (the seconds where client backends used at least half their peak): divide by the
// decisions per second the bench printed to get µs per decision for each kind.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { processTree } from './lib/proc.js';

/** utime and stime of one process in seconds (USER_HZ is 100 on Linux); undefined once gone. */
function cpuSplitS(pid: number): { user: number; sys: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
  } catch {
    return undefined;
  }
}

const SAMPLE_MS = 250;

function title(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** The kind of a PostgreSQL process from its title ("postgres: autovacuum worker …"). */
function kind(t: string): string | undefined {
  if (!t.startsWith('postgres')) return undefined;
  if (!t.startsWith('postgres:')) return 'postmaster';
  if (/autovacuum worker/.test(t)) return 'autovacuum worker';
  if (/autovacuum launcher/.test(t)) return 'autovacuum launcher';
  if (/walwriter/.test(t)) return 'walwriter';
  if (/checkpointer/.test(t)) return 'checkpointer';
  if (/background writer/.test(t)) return 'bgwriter';
  if (/logical replication|stats|logger|archiver|walsender|io worker/.test(t)) return 'other';
  // Client backends: "postgres: user db 127.0.0.1(port) state"; the daemon's pool and the
  // bench's own admin connections are told apart by application_name only in pg_stat_activity,
  // so they count together here (the admin pool is idle while a scenario runs).
  return 'backend';
}

const [cmd, ...args] = process.argv.slice(2);
if (!cmd) {
  console.error('usage: node dist/bench/sql-pg-split.js <command> [args...]');
  process.exit(2);
}
const child = spawn(cmd, args, { stdio: 'inherit' });
const kinds = ['backend', 'bk sys', 'autovacuum worker', 'autovacuum launcher', 'walwriter', 'checkpointer', 'bgwriter', 'postmaster', 'other'];
const last = new Map<number, { kind: string; cpuS: number; sysS: number }>();
// Per second since start: CPU seconds by kind.
const perSecond: Record<string, number>[] = [];
const t0 = performance.now();

function sample(): void {
  const second = Math.floor((performance.now() - t0) / 1000);
  while (perSecond.length <= second) perSecond.push({});
  const bucket = perSecond[second]!;
  for (const pid of processTree(process.pid)) {
    const prev = last.get(pid);
    const k = prev?.kind ?? kind(title(pid));
    if (!k) continue;
    const split = cpuSplitS(pid);
    if (split === undefined) continue;
    const cpuS = split.user + split.sys;
    // A process seen for the first time counts from its start (backends appear mid-run).
    bucket[k] = (bucket[k] ?? 0) + cpuS - (prev?.cpuS ?? 0);
    // The kernel's share of the backends: WAL writes and flushes at commit, sockets, page faults.
    if (k === 'backend') bucket['bk sys'] = (bucket['bk sys'] ?? 0) + split.sys - (prev?.sysS ?? 0);
    last.set(pid, { kind: k, cpuS, sysS: split.sys });
  }
}

const timer = setInterval(sample, SAMPLE_MS);
child.once('exit', (code) => {
  clearInterval(timer);
  const fmt = (x: number | undefined) => ((x ?? 0) * 100).toFixed(0).padStart(8);
  console.log(`\nPostgreSQL CPU by process kind, % of one core per second (sampled every ${SAMPLE_MS} ms)`);
  console.log(`  sec ${kinds.map((k) => k.slice(0, 8).padStart(8)).join(' ')}`);
  perSecond.forEach((b, i) => {
    if (Object.values(b).some((v) => v > 0.005)) console.log(`${String(i).padStart(5)} ${kinds.map((k) => fmt(b[k])).join(' ')}`);
  });
  // The busy stretch: the longest run of seconds with backends at ≥ half their peak.
  const peak = Math.max(...perSecond.map((b) => b.backend ?? 0));
  let best: [number, number] = [0, -1];
  let start = -1;
  perSecond.forEach((b, i) => {
    if ((b.backend ?? 0) >= peak / 2) {
      if (start < 0) start = i;
      if (i - start > best[1] - best[0]) best = [start, i];
    } else start = -1;
  });
  const sum: Record<string, number> = {};
  for (let i = best[0]; i <= best[1]; i++) for (const k of kinds) sum[k] = (sum[k] ?? 0) + (perSecond[i]![k] ?? 0);
  const secs = best[1] - best[0] + 1;
  console.log(`busy stretch: seconds ${best[0]}–${best[1]} (${secs} s), mean % of one core per kind:`);
  console.log(`      ${kinds.map((k) => fmt((sum[k] ?? 0) / secs)).join(' ')}`);
  const after: Record<string, number> = {};
  for (let i = best[1] + 1; i < perSecond.length; i++) for (const k of kinds) after[k] = (after[k] ?? 0) + (perSecond[i]![k] ?? 0);
  console.log(`after it, CPU seconds per kind: ${kinds.map((k) => `${k} ${(after[k] ?? 0).toFixed(2)}`).join(', ')}`);
  process.exit(code ?? 1);
});
