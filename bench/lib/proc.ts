// CPU and memory of other processes, read from /proc so the process under test needs no
// instrumentation (and pays nothing for it).
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const CLOCK_TICKS_PER_S = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of one process, in seconds; undefined once it has gone. */
export function processCpuS(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/** A process's time on a CPU in µs, from /proc/<pid>/schedstat (ns; stat's ticks are 10 ms). */
export function processOnCpuUs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1_000;
}

function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** The process and every process below it (PostgreSQL: postmaster, backends, walwriter...). */
export function processTree(rootPid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const ppid = parentPid(pid);
    if (ppid === undefined) continue;
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  const out: number[] = [];
  const stack = [rootPid];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** VmRSS and VmHWM (peak resident set), in MB. */
export function processMemoryMb(pid: number): { rssMb: number; peakRssMb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMb: kb('VmRSS') / 1024, peakRssMb: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** CLOCK_MONOTONIC in µs: the clock of the timestamps in V8's CPU profiles, in any process. */
function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Busy and total jiffies of the whole machine (all cores). */
function machineJiffies(): { busy: number; total: number; cpus: number } {
  const lines = readFileSync('/proc/stat', 'utf8').split('\n');
  // guest and guest_nice (fields 9-10) are already counted in user and nice.
  const v = lines[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total, cpus: lines.filter((l) => /^cpu\d/.test(l)).length };
}

export interface CpuWindow {
  /** CPU time / wall time, ×100: 100 = one core saturated. */
  processPercent: Record<string, number>;
  /** Share of the whole machine busy (any process), 100 = every core. */
  machineBusyPercent: number;
  /**
   * CPU used by processes outside this benchmark (100 = one core). The machine may be shared;
   * a run that competed with someone's build is not comparable and is flagged.
   */
  foreignPercent: number;
  raw?: Record<string, number>;
}

/**
 * CPU used between start() and stop() by named process trees. Trees are re-listed at stop so
 * backends that appeared in between count from zero instead of being missed.
 */
export class CpuMeter {
  private startWallMs = 0;
  private startMonoUs = 0;
  private startMachine = { busy: 0, total: 0, cpus: 0 };
  private readonly startCpu = new Map<string, Map<number, number>>();

  private startOwn = new Map<number, number>();

  constructor(private readonly roots: Record<string, number>) {}

  private snapshot(root: number): Map<number, number> {
    const m = new Map<number, number>();
    for (const pid of processTree(root)) {
      const s = processCpuS(pid);
      if (s !== undefined) m.set(pid, s);
    }
    return m;
  }

  start(): void {
    this.startWallMs = performance.now();
    this.startMonoUs = monotonicUs();
    this.startMachine = machineJiffies();
    for (const [name, pid] of Object.entries(this.roots)) this.startCpu.set(name, this.snapshot(pid));
    this.startOwn = this.snapshot(process.pid);
  }

  stop(): CpuWindow {
    const wallS = (performance.now() - this.startWallMs) / 1000;
    const machine = machineJiffies();
    const processPercent: Record<string, number> = {};
    for (const [name, pid] of Object.entries(this.roots)) {
      const before = this.startCpu.get(name)!;
      let cpuS = 0;
      for (const [p, s] of this.snapshot(pid)) cpuS += s - (before.get(p) ?? 0);
      processPercent[name] = (cpuS / wallS) * 100;
    }
    // Everything this benchmark started (PostgreSQL included) descends from this process.
    let ownS = 0;
    for (const [p, s] of this.snapshot(process.pid)) ownS += s - (this.startOwn.get(p) ?? 0);
    const dBusy = machine.busy - this.startMachine.busy;
    const dTotal = machine.total - this.startMachine.total;
    const machineBusyPercent = dTotal > 0 ? (dBusy / dTotal) * 100 : NaN;
    const ownPercent = (ownS / wallS) * 100;
    return {
      processPercent,
      machineBusyPercent,
      // From the busy share, not from jiffies over wall time: the two clocks need not agree.
      foreignPercent: Math.max(0, (machineBusyPercent / 100) * machine.cpus * 100 - ownPercent),
      // The window on the clock V8's CPU profiles use (bench/lib/profile.ts cuts them to it).
      raw: { wallS, dBusyJiffies: dBusy, dTotalJiffies: dTotal, ownPercent, cpus: machine.cpus, monoStartUs: this.startMonoUs, monoEndUs: monotonicUs() },
    };
  }
}

/**
 * Waits (bounded) until processes outside this benchmark use less than `maxForeignPercent` of
 * one core over a one-second sample. Returns what the last sample saw.
 */
export async function waitForQuiet(maxForeignPercent: number, maxWaitMs: number): Promise<{ foreignPercent: number; waitedMs: number }> {
  const t0 = performance.now();
  for (;;) {
    const meter = new CpuMeter({});
    meter.start();
    await new Promise((r) => setTimeout(r, 1_000));
    const { foreignPercent } = meter.stop();
    const waitedMs = performance.now() - t0;
    if (foreignPercent < maxForeignPercent || waitedMs >= maxWaitMs) return { foreignPercent, waitedMs };
  }
}
