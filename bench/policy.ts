// The "full policy" scenarios (issue #10, "Tests and numbers"): every group of the policy engine
// at once, Zipf keys, 256 in flight, against rate-limiter-flexible's RateLimiterUnion of one
// RateLimiterPostgres per rule on the same PostgreSQL. Store level for both, end to end over
// WebSocket for ours. Kept out of run.ts (which hands over its process helpers) so scenarios
// added there and here do not collide.
import type { ChildProcess } from 'node:child_process';
import type { Pool } from '../src/db/pool.js';
import type { CpuWindow } from './lib/proc.js';
import type { WorkerResult } from './lib/child.js';
import type { KeyDistribution } from './lib/keys.js';
import type { Row } from './lib/report.js';
import type { PolicyStoreSystem, PolicyStoreWorkerConfig } from './policy-store-worker.js';
import type { WsLoadConfig } from './load-ws.js';

/** docs/protocol.md's example policy with the brief's numbers; ip as the documented example, 20/h. */
export const BENCH_POLICY_YAML = `number:
  limits: [{limit: 2, window: 1h}, {limit: 5, window: 1d}]
prefix:
  digits: 3
  limits: [{limit: 10, window: 1h}]
country:
  limits: [{limit: 200, window: 1h}]
global:
  limits: [{limit: 100000, window: 1h}]
ip:
  limits: [{limit: 20, window: 1h}]
`;

const HOUR_S = 3_600;
const DAY_S = 86_400;
const UNION_LIMITERS: PolicyStoreWorkerConfig['unionLimiters'] = [
  { keyPrefix: 'n1h', points: 2, durationS: HOUR_S, on: 'hash' },
  { keyPrefix: 'n1d', points: 5, durationS: DAY_S, on: 'hash' },
  { keyPrefix: 'p1h', points: 10, durationS: HOUR_S, on: 'prefix' },
  { keyPrefix: 'c1h', points: 200, durationS: HOUR_S, on: 'region' },
  { keyPrefix: 'g1h', points: 100_000, durationS: HOUR_S, on: 'global' },
  { keyPrefix: 'ip1h', points: 20, durationS: HOUR_S, on: 'ip' },
];
export const UNION_TABLE = 'bench_rlf_union';
const INFLIGHT = 256;
const SOCKETS = 32;

export type PolicyScenario = {
  kind: 'policy';
  name: string;
  side: 'store' | 'ws';
  system: PolicyStoreSystem;
  dist: KeyDistribution;
  inflight: number;
};

/** Issue 22's "policy engine's full-policy scenario": every group at once, end to end. */
export const FULL_POLICY_SCENARIO = `policy ws zipf ${INFLIGHT}`;

export function policyScenarios(): PolicyScenario[] {
  const base = { kind: 'policy', dist: 'zipf', inflight: INFLIGHT } as const;
  return [
    { ...base, name: `policy store ours zipf ${INFLIGHT}`, side: 'store', system: 'ours' },
    { ...base, name: `policy store union zipf ${INFLIGHT}`, side: 'store', system: 'union' },
    { ...base, name: FULL_POLICY_SCENARIO, side: 'ws', system: 'ours' },
  ];
}

/**
 * What run.ts lends: its process handling, so both files measure the same way, bound to one side
 * of an A/B run (the checkout whose workers and daemon run, and its database).
 */
export interface PolicyHarness {
  url: string;
  admin: Pool;
  postmasterPid: number;
  keysFile: string;
  tmp: string;
  token: string;
  poolSize: number;
  warmupMs: number;
  measureMs: number;
  /** A worker of the side's checkout (dist/bench/<name>). */
  workerScript(name: string, config: unknown): ChildProcess;
  /** A load generator (this checkout's: the same load for both sides). */
  loadScript(name: string, config: unknown): ChildProcess;
  runWorker(
    child: ChildProcess,
    roots: () => Record<string, number>,
    opts: { wal?: Pool },
  ): Promise<{ result: WorkerResult; cpu: CpuWindow | undefined; walBytes: number }>;
  startDaemon(): Promise<{ child: ChildProcess; port: number; errorLines: string[] }>;
  /** Makes the YAML the active policy, by the side's own `ratelimit policy apply`. */
  applyPolicy(yaml: string): Promise<void>;
  terminate(child: ChildProcess): Promise<void>;
  /** The daemon's own figures (mean batch...) from /metrics. */
  daemonStats(port: number): Promise<Record<string, number>>;
  peakRssMb(pid: number): number;
}

export interface PolicyRunResult {
  worker: WorkerResult;
  cpu: CpuWindow | undefined;
  peakRssMb: number;
  extra: Record<string, unknown>;
}

/**
 * After run.ts's reset (numbers known, nothing counted): no aggregate counted, no policy applied,
 * the Union's number rows known and expired, as bench_rlf's are for the single-rule rows.
 */
async function resetPolicyState(admin: Pool, withUnion: boolean): Promise<void> {
  await admin.query(`TRUNCATE rate_limit_counters, rate_limit_policies`);
  if (withUnion) {
    await admin.query(`CREATE TABLE IF NOT EXISTS ${UNION_TABLE} (key varchar(255) PRIMARY KEY, points integer NOT NULL DEFAULT 0, expire bigint)`);
    await admin.query(`TRUNCATE ${UNION_TABLE}`);
    await admin.query(
      `INSERT INTO ${UNION_TABLE} (key, points, expire)
       SELECT p || ':' || phone_hash, 0, 0 FROM phone_rate_limits, unnest(ARRAY['n1h', 'n1d']) AS p`,
    );
  }
  for (const table of withUnion ? ['rate_limit_counters', UNION_TABLE] : ['rate_limit_counters']) await admin.query(`VACUUM ANALYZE ${table}`);
  await admin.query('CHECKPOINT');
}

export async function runPolicy(h: PolicyHarness, s: PolicyScenario): Promise<PolicyRunResult> {
  // Only the Union's runs read its table (and only the subject's database has it).
  await resetPolicyState(h.admin, s.system === 'union');
  if (s.side === 'store') {
    const config: PolicyStoreWorkerConfig = {
      system: s.system,
      dist: s.dist,
      inflight: s.inflight,
      policyYaml: BENCH_POLICY_YAML,
      unionLimiters: UNION_LIMITERS,
      unionTable: UNION_TABLE,
      poolSize: h.poolSize,
      warmupMs: h.warmupMs,
      measureMs: h.measureMs,
      url: h.url,
      keysFile: h.keysFile,
    };
    const child = h.workerScript('policy-store-worker.js', config);
    const { result, cpu, walBytes } = await h.runWorker(child, () => ({ pg: h.postmasterPid }), { wal: h.admin });
    if (cpu) {
      cpu.processPercent.subject = cpu.processPercent.loadgen!;
      cpu.processPercent.loadgen = NaN;
    }
    return { worker: result, cpu, peakRssMb: result.peakRssMb, extra: { ...(result.extra ?? {}), walBytesPerDecision: walBytes / result.decisions } };
  }
  // The daemon reads the active policy when it starts.
  await h.applyPolicy(BENCH_POLICY_YAML);
  const daemon = await h.startDaemon();
  try {
    const child = h.loadScript('load-ws.js', {
      mode: 'consume',
      url: `ws://127.0.0.1:${daemon.port}/ws`,
      token: h.token,
      sockets: SOCKETS,
      perSocket: s.inflight / SOCKETS,
      dist: s.dist,
      warmupMs: h.warmupMs,
      measureMs: h.measureMs,
    } satisfies WsLoadConfig);
    const { result, cpu, walBytes } = await h.runWorker(child, () => ({ subject: daemon.child.pid!, pg: h.postmasterPid }), { wal: h.admin });
    const stats = await h.daemonStats(daemon.port).catch(() => ({}));
    return {
      worker: result,
      cpu,
      peakRssMb: h.peakRssMb(daemon.child.pid!),
      extra: {
        ...(result.extra ?? {}),
        walBytesPerDecision: walBytes / result.decisions,
        loadgenPeakRssMb: result.peakRssMb,
        ...stats,
        daemonErrors: daemon.errorLines.slice(0, 3),
      },
    };
  } finally {
    await h.terminate(daemon.child);
    // Later scenarios measure the RATE_LIMIT_* default.
    await h.admin.query('TRUNCATE rate_limit_policies');
  }
}

/** "× RLF" of the policy rows: against the Union at the store level. */
export function setPolicyRatios(rows: Row[]): void {
  const union = rows.find((r) => r.name === `policy store union zipf ${INFLIGHT}`);
  for (const r of rows) if (r.kind === 'policy') r.ratioVsRlf = union ? r.ratePerS / union.ratePerS : NaN;
}

/** Issue #10's targets for the full policy, in the shape of run.ts's. */
export function policyTargets(rows: readonly Row[]): Array<{ what: string; value: string; met: boolean | undefined }> {
  const ws = rows.find((r) => r.name === `policy ws zipf ${INFLIGHT}`);
  const union = rows.find((r) => r.name === `policy store union zipf ${INFLIGHT}`);
  if (!ws) return [];
  const out = [{ what: `policy ws zipf ${INFLIGHT}: ≥ 20k decisions/s`, value: `${Math.round(ws.ratePerS)}/s`, met: ws.ratePerS >= 20_000 }];
  if (union)
    out.push({
      what: `policy ws zipf ${INFLIGHT}: ≥ 5× RateLimiterUnion store level`,
      value: `${(ws.ratePerS / union.ratePerS).toFixed(2)}×`,
      met: ws.ratePerS >= 5 * union.ratePerS,
    });
  out.push({ what: `policy ws zipf ${INFLIGHT}: p99 ≤ 25 ms`, value: `${ws.p99Ms.toFixed(1)} ms`, met: ws.p99Ms <= 25 });
  return out;
}
