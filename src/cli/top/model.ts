// `ratelimit top`'s data: everything it shows comes from the database the daemons share (their
// heartbeat rows and the rate-limit rows), so it never has to reach a daemon over the network.
// The frame is plain data in the view's own types: the ink views import this file, never src/db.
import type { Pool } from '../../db/pool.js';
import { readFleet, type FleetInstance } from '../../db/fleet.js';
import { resetPhone } from '../../db/phones.js';
import { hottestNumbers, readStats, type HotSort as DbHotSort } from '../../db/stats.js';
import { hashPrefix } from '../../core/phone.js';
import { evaluate } from '../../core/policy/log.js';
import type { Policy } from '../../core/policy/types.js';
import { readPolicyUsage, type AggregateUsage } from '../policy-usage.js';
import { readListEntries, setListEntries } from '../../db/lists.js';
import { TrafficReader, visibleHead, type MoversView } from '../traffic-view.js';
import { GuardReader } from '../guard-view.js';
import type { GuardView } from '../guard-text.js';

export { GuardReader } from '../guard-view.js';
export { TrafficReader, BASELINE_SPAN_MS, TRAFFIC_WINDOW_MS, visibleHead, type MoversView } from '../traffic-view.js';

export const SORTS = ['denials', 'calls', 'recent'] as const;
export type HotSort = (typeof SORTS)[number];
// The view's sorts are the queries' sorts: this fails to compile if either side gains one.
const SAME_SORTS: [HotSort, DbHotSort] extends [DbHotSort, HotSort] ? true : never = true;
void SAME_SORTS;

// Enough to scroll through on a tall terminal; the query reads the window's active numbers only.
const HOT_LIMIT = 50;
const SPARKLINE_SECONDS = 60;
// Busiest keys per aggregate rule: a screenful at most.
const AGGREGATE_KEYS_PER_RULE = 10;

export type InstanceState = 'up' | 'down' | 'stopped';

/** One daemon as the dashboard shows it (from its heartbeat row). */
export interface TopInstance {
  instanceId: string;
  host: string;
  flyRegion: string | null;
  version: string;
  pid: number;
  uptimeMs: number;
  lastSeenAgoMs: number;
  state: InstanceState;
  connections: number;
  allowedPerS: number;
  deniedPerS: number;
  fallback: boolean;
  dbLatencyMs: number | null;
  allowedSeries: number[];
  deniedSeries: number[];
  /** The policy version the daemon enforces (0: the RATE_LIMIT_* default). */
  policyVersion: number;
  /** Denials per second by docs/protocol.md reason, every reason (ip included). */
  deniedPerSByReason: Record<string, number>;
}

export interface TopDatabase {
  serverVersion: string;
  /** Sessions on this database, ours included. */
  connections: number;
  maxConnections: number;
  sizeBytes: number;
  /** A hot standby: readable, but `r` (reset) would fail. */
  readOnly: boolean;
}

export interface TopRegion {
  region: string;
  /** Numbers with a call or a denial in the window. */
  active: number;
  atLimit: number;
  calls: number;
  denials: number;
}

/** What the dashboard says after a reset. */
export interface ResetResult {
  previousCount: number;
}

export interface HotRow {
  /** The full hash: what a reset needs. */
  hash: string;
  hashPrefix: string;
  /** The stored masked number; null for rows written before numbers were stored masked. */
  masked: string | null;
  region: string | null;
  used: number;
  /** The binding number rule's limit; null when the policy has no number rule. */
  limit: number | null;
  deniedInWindow: number;
  /** Until the next call is allowed (at its limit) or the oldest counted call leaves the window; 0 when nothing counts. */
  resetInMs: number;
  atLimit: boolean;
  /** A block entry covers it (its own, or a prefix covering the digits its mask shows). */
  blocked?: boolean;
}

export interface FleetTotals {
  up: number;
  down: number;
  stopped: number;
  connections: number;
  allowedPerS: number;
  deniedPerS: number;
  /** Live instances' denials per second by reason, largest first. */
  deniedPerSByReason: Array<[string, number]>;
  onFallback: number;
  /** Live instances enforcing another policy version than the database's active one. */
  onOtherPolicy: number;
}

export interface FlyRegionTotals {
  region: string;
  up: number;
  total: number;
  allowedPerS: number;
  deniedPerS: number;
}

export interface TopFrame {
  /** The database's clock, ms since epoch. */
  nowMs: number;
  sort: HotSort;
  /** The primary number rule's limit; null when the policy has no number rule. */
  limit: number | null;
  windowMs: number;
  /** The database's active policy version (0: the RATE_LIMIT_* default), what every daemon should run. */
  policyVersion: number;
  /** Round trip of the lightest of this frame's queries, as seen from here. */
  dbLatencyMs: number;
  database: TopDatabase;
  /** Down first, then up, then stopped; by id within each. */
  instances: TopInstance[];
  totals: FleetTotals;
  flyRegions: FlyRegionTotals[];
  /** Decisions per second over the last minute summed over live instances, oldest first. */
  series: { allowed: number[]; denied: number[] };
  hottest: HotRow[];
  window: { tracked: number; trackedEstimated: boolean; active: number; atLimit: number; calls: number; denials: number; resets: number };
  regions: TopRegion[];
  /** Aggregate rules' busiest keys (prefixes masked), closest to their limit first. */
  aggregates: AggregateUsage[];
  /** Every daemon's denials in the window by reason, and shadow denials by rule (largest first). */
  windowDenials: { byReason: Array<[string, number]>; shadowByRule: Array<[string, number]> };
  /** Countries and ranges by how far above normal; null when not read. */
  movers?: MoversView | null;
  /** Conversion by country, worst conversion and sweep ranges, automatic blocks, idle conversion rules; null when not read. */
  guard?: GuardView | null;
}

/** The traffic view (fleet, movers, numbers, aggregates) or the guard's (conversion, ranges, automatic blocks). */
export const VIEWS = ['traffic', 'guard'] as const;
export type TopViewName = (typeof VIEWS)[number];

// Trouble first: on a short terminal, a down instance must not be the one that scrolls away.
const STATE_ORDER = { down: 0, up: 1, stopped: 2 } as const;

function largestFirst(counts: Record<string, number>): Array<[string, number]> {
  return Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

export function fleetTotals(instances: readonly TopInstance[], policyVersion?: number): FleetTotals {
  const live = instances.filter((i) => i.state === 'up');
  const byReason: Record<string, number> = {};
  for (const i of live) for (const [reason, perS] of Object.entries(i.deniedPerSByReason)) byReason[reason] = (byReason[reason] ?? 0) + perS;
  return {
    deniedPerSByReason: largestFirst(byReason),
    onOtherPolicy: policyVersion === undefined ? 0 : live.filter((i) => i.policyVersion !== policyVersion).length,
    up: live.length,
    down: instances.filter((i) => i.state === 'down').length,
    stopped: instances.filter((i) => i.state === 'stopped').length,
    connections: live.reduce((n, i) => n + i.connections, 0),
    allowedPerS: live.reduce((n, i) => n + i.allowedPerS, 0),
    deniedPerS: live.reduce((n, i) => n + i.deniedPerS, 0),
    onFallback: live.filter((i) => i.fallback).length,
  };
}

/**
 * Each live instance's series ends at its own last beat, at most a few seconds apart, so they
 * are summed aligned on their newest sample; instances that are down or stopped no longer count.
 */
export function fleetSeries(instances: readonly TopInstance[], length = SPARKLINE_SECONDS): { allowed: number[]; denied: number[] } {
  const sum = (pick: (i: TopInstance) => readonly number[]): number[] => {
    const live = instances.filter((i) => i.state === 'up').map(pick);
    const n = Math.min(length, Math.max(0, ...live.map((s) => s.length)));
    const out = new Array<number>(n).fill(0);
    for (const s of live) {
      for (let k = 1; k <= Math.min(n, s.length); k++) out[n - k]! += s[s.length - k]!;
    }
    return out;
  };
  return { allowed: sum((i) => i.allowedSeries), denied: sum((i) => i.deniedSeries) };
}

export function flyRegionTotals(instances: readonly TopInstance[]): FlyRegionTotals[] {
  const byRegion = new Map<string, FlyRegionTotals>();
  for (const i of instances) {
    if (i.flyRegion === null || i.state === 'stopped') continue;
    const t = byRegion.get(i.flyRegion) ?? { region: i.flyRegion, up: 0, total: 0, allowedPerS: 0, deniedPerS: 0 };
    t.total++;
    if (i.state === 'up') {
      t.up++;
      t.allowedPerS += i.allowedPerS;
      t.deniedPerS += i.deniedPerS;
    }
    byRegion.set(i.flyRegion, t);
  }
  return [...byRegion.values()].sort((a, b) => b.allowedPerS + b.deniedPerS - (a.allowedPerS + a.deniedPerS) || a.region.localeCompare(b.region));
}

/** One frame of plain data: the effective policy first (everything is measured against it), then the rest at once. */
export async function loadTopFrame(
  pool: Pool,
  fallback: Policy,
  sort: HotSort,
  traffic: TrafficReader = new TrafficReader(),
  guardReader: GuardReader = new GuardReader(),
): Promise<TopFrame> {
  const usage = await readPolicyUsage(pool, fallback, AGGREGATE_KEYS_PER_RULE);
  const numberPolicy = usage.numberPolicy;
  const started = performance.now();
  const lists = await readListEntries(pool);
  const blocks = lists.entries.filter((e) => e.kind === 'block');
  const blockedPrefixes = blocks.filter((e) => e.targetType === 'prefix').map((e) => e.target);
  const blockedHashes = new Set(blocks.filter((e) => e.targetType === 'number').map((e) => e.target));
  const [timedFleet, stats, hot, moversView, guard] = await Promise.all([
    readFleet(pool).then((fleet) => ({ fleet, latencyMs: performance.now() - started })),
    readStats(pool, { rules: numberPolicy?.rules ?? [] }, usage.windowMs),
    // Numbers in a blocked range cost nothing more: left out, so the pump's numbers do not fill the list.
    hottestNumbers(pool, usage.windowMs, HOT_LIMIT, sort, blockedPrefixes),
    traffic.read(pool, blockedPrefixes),
    guardReader.read(pool, usage.policy),
  ]);
  const isBlocked = (hash: string, masked: string | null) =>
    blockedHashes.has(hash) || (masked !== null && blockedPrefixes.some((p) => visibleHead(masked).startsWith(p)));
  const { fleet, latencyMs } = timedFleet;
  const instances = fleet.instances.map(toTopInstance).sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state] || a.instanceId.localeCompare(b.instanceId));
  const nowMs = hot.nowMs;
  return {
    nowMs: fleet.nowMs,
    sort,
    limit: usage.policy.number[0]?.limit ?? null,
    windowMs: stats.windowMs,
    policyVersion: usage.version,
    dbLatencyMs: latencyMs,
    database: { ...fleet.database },
    instances,
    totals: fleetTotals(instances, usage.version),
    flyRegions: flyRegionTotals(instances),
    series: fleetSeries(instances),
    hottest: hot.rows
      .map((r): HotRow => {
        const base = {
          hash: r.hash,
          hashPrefix: hashPrefix(r.hash),
          masked: r.masked,
          region: r.region,
          deniedInWindow: r.deniedInWindow,
          blocked: isBlocked(r.hash, r.masked),
        };
        if (!numberPolicy) {
          const used = r.calls.filter((t) => t > nowMs - usage.windowMs).length;
          return { ...base, used, limit: null, resetInMs: 0, atLimit: false };
        }
        const d = evaluate(r.calls, nowMs, numberPolicy);
        return {
          ...base,
          used: d.used,
          limit: d.limit,
          resetInMs: d.allowed ? (d.used > 0 ? Math.max(0, d.resetTime - nowMs) : 0) : d.retryAfterMs,
          atLimit: !d.allowed,
        };
      })
      // Blocked numbers cannot cost anything more: they go below the ones that still can.
      .sort((a, b) => Number(a.blocked) - Number(b.blocked)),
    window: {
      tracked: stats.tracked,
      trackedEstimated: stats.trackedEstimated,
      active: stats.active,
      atLimit: stats.atLimit,
      calls: stats.calls,
      denials: stats.denials,
      resets: stats.resets,
    },
    regions: stats.regions.map((r) => ({ region: r.region, active: r.active, atLimit: r.atLimit, calls: r.calls, denials: r.denials })),
    aggregates: usage.aggregates,
    windowDenials: { byReason: largestFirst(usage.decisions.deniedByReason), shadowByRule: largestFirst(usage.decisions.shadowByRule) },
    movers: moversView,
    guard,
  };
}

function toTopInstance(i: FleetInstance): TopInstance {
  return {
    instanceId: i.instanceId,
    host: i.host,
    flyRegion: i.flyRegion,
    version: i.version,
    pid: i.pid,
    uptimeMs: i.uptimeMs,
    lastSeenAgoMs: i.lastSeenAgoMs,
    state: i.state,
    connections: i.connections,
    allowedPerS: i.allowedPerS,
    deniedPerS: i.deniedPerS,
    fallback: i.fallback,
    dbLatencyMs: i.dbLatencyMs,
    allowedSeries: i.allowedSeries,
    deniedSeries: i.deniedSeries,
    policyVersion: i.policyVersion,
    deniedPerSByReason: i.deniedPerSByReason,
  };
}

// The reason recorded in the audit table for resets made from the dashboard.
const RESET_REASON = 'top';

/**
 * The dashboard's `r`: clears the number's usage, recorded as `operator` with reason "top".
 * `windowMs`: the frame's window, over which the cleared calls are counted.
 */
export function resetFromTop(pool: Pool, windowMs: number, row: HotRow, operator: string): Promise<ResetResult> {
  return resetPhone(pool, row.hash, operator, RESET_REASON, { rules: [{ id: 'number', limit: row.limit ?? 1, windowMs }] });
}

/** The dashboard's `b`: blocks a range for an hour, recorded as `operator` with reason "top". */
export async function blockFromTop(pool: Pool, prefix: string, operator: string, forMs = 3_600_000): Promise<void> {
  await setListEntries(pool, [{ targetType: 'prefix', target: prefix, masked: prefix, kind: 'block', forMs, by: operator, reason: RESET_REASON }]);
}
