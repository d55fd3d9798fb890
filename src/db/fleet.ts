// The fleet as `ratelimit top` sees it: each daemon's heartbeat row (migration 003) and the
// state of the database they share. Ages are measured on the database's clock, the one clock
// every instance and every operator's laptop agree on.
import type { Pool } from './pool.js';

/** An instance that misses this many heartbeats in a row is shown as down. */
export const MISSED_HEARTBEATS_FOR_DOWN = 3;

/** Who a daemon is, as its heartbeat names it. */
export interface DaemonIdentity {
  instanceId: string;
  host: string;
  flyRegion: string | undefined;
  version: string;
  pid: number;
  startedAt: Date;
}

/** What a daemon reports of its traffic in each heartbeat, and `top` reads back. */
export interface DaemonLoad {
  connections: number;
  allowedPerS: number;
  deniedPerS: number;
  allowedTotal: number;
  deniedTotal: number;
  fallback: boolean;
  dbLatencyMs: number | null;
}

export interface Heartbeat extends DaemonIdentity, DaemonLoad {
  uptimeMs: number;
  intervalMs: number;
  /** Decisions in each of the last (up to) 60 seconds, oldest first. */
  allowedSeries: readonly number[];
  deniedSeries: readonly number[];
  /** The last beat of a graceful shutdown. */
  stopped?: boolean;
  /** The policy version the daemon enforces (0: the RATE_LIMIT_* default). */
  policyVersion?: number;
  /** Denials since start by reason, every reason (ip, lists, destinations, rules). */
  deniedByReason?: Readonly<Record<string, number>>;
  deniedPerSByReason?: Readonly<Record<string, number>>;
  /** Consumes each shadow rule would have denied since start. */
  shadowDenied?: Readonly<Record<string, number>>;
}

/**
 * One statement, one row, on an UNLOGGED table: cheap enough to run every second from every
 * instance. A beat after a stop (a restart reusing the id) clears the stop.
 */
export async function upsertHeartbeat(pool: Pool, hb: Heartbeat): Promise<void> {
  await pool.query({
    name: 'ratelimit_heartbeat',
    text: `INSERT INTO ratelimit_instances AS i (
             instance_id, host, fly_region, version, pid, started_at, uptime_ms, last_seen, stopped_at,
             interval_ms, connections, allowed_per_s, denied_per_s, allowed_total, denied_total,
             fallback, db_latency_ms, allowed_series, denied_series,
             policy_version, denied_by_reason, denied_per_s_by_reason, shadow_denied)
           VALUES ($1, $2, $3, $4, $5, $6, $7, NOW(), CASE WHEN $8::boolean THEN NOW() END,
                   $9, $10, $11, $12, $13, $14, $15, $16, $17::int[], $18::int[],
                   $19, $20::jsonb, $21::jsonb, $22::jsonb)
           ON CONFLICT (instance_id) DO UPDATE SET
             host = EXCLUDED.host, fly_region = EXCLUDED.fly_region, version = EXCLUDED.version,
             pid = EXCLUDED.pid, started_at = EXCLUDED.started_at, uptime_ms = EXCLUDED.uptime_ms,
             last_seen = EXCLUDED.last_seen, stopped_at = EXCLUDED.stopped_at,
             interval_ms = EXCLUDED.interval_ms, connections = EXCLUDED.connections,
             allowed_per_s = EXCLUDED.allowed_per_s, denied_per_s = EXCLUDED.denied_per_s,
             allowed_total = EXCLUDED.allowed_total, denied_total = EXCLUDED.denied_total,
             fallback = EXCLUDED.fallback, db_latency_ms = EXCLUDED.db_latency_ms,
             allowed_series = EXCLUDED.allowed_series, denied_series = EXCLUDED.denied_series,
             policy_version = EXCLUDED.policy_version, denied_by_reason = EXCLUDED.denied_by_reason,
             denied_per_s_by_reason = EXCLUDED.denied_per_s_by_reason, shadow_denied = EXCLUDED.shadow_denied`,
    values: [
      hb.instanceId,
      hb.host,
      hb.flyRegion ?? null,
      hb.version,
      hb.pid,
      hb.startedAt,
      Math.max(0, Math.round(hb.uptimeMs)),
      hb.stopped === true,
      Math.max(1, Math.round(hb.intervalMs)),
      hb.connections,
      hb.allowedPerS,
      hb.deniedPerS,
      hb.allowedTotal,
      hb.deniedTotal,
      hb.fallback,
      hb.dbLatencyMs,
      hb.allowedSeries.map((n) => Math.round(n)),
      hb.deniedSeries.map((n) => Math.round(n)),
      hb.policyVersion ?? 0,
      JSON.stringify(hb.deniedByReason ?? {}),
      JSON.stringify(hb.deniedPerSByReason ?? {}),
      JSON.stringify(hb.shadowDenied ?? {}),
    ],
  });
}

/** Removes rows not refreshed for `olderThanMs` (crashed or long-stopped instances). Returns how many. */
export async function deleteStaleInstances(pool: Pool, olderThanMs: number): Promise<number> {
  const { rowCount } = await pool.query(`DELETE FROM ratelimit_instances WHERE last_seen < clock_timestamp() - make_interval(secs => $1::float8 / 1000)`, [
    olderThanMs,
  ]);
  return rowCount ?? 0;
}

export type InstanceState = 'up' | 'down' | 'stopped';

export interface FleetInstance extends DaemonLoad {
  instanceId: string;
  host: string;
  flyRegion: string | null;
  version: string;
  pid: number;
  startedAt: Date;
  /** As of now for a live instance; as of its last beat for one that is down or stopped. */
  uptimeMs: number;
  intervalMs: number;
  lastSeenAgoMs: number;
  /** Not serving: silent for more than MISSED_HEARTBEATS_FOR_DOWN intervals, or stopped. */
  down: boolean;
  /** `down` is silent without having said goodbye (a crash, a partition); `stopped` said goodbye. */
  state: InstanceState;
  allowedSeries: number[];
  deniedSeries: number[];
  policyVersion: number;
  deniedByReason: Record<string, number>;
  deniedPerSByReason: Record<string, number>;
  shadowDenied: Record<string, number>;
}

export interface DatabaseState {
  serverVersion: string;
  /** Sessions on this database, ours included. */
  connections: number;
  maxConnections: number;
  sizeBytes: number;
  /** A hot standby: readable, but `r` (reset) would fail. */
  readOnly: boolean;
}

export interface Fleet {
  /** The database's clock, ms since epoch. */
  nowMs: number;
  instances: FleetInstance[];
  database: DatabaseState;
}

interface FleetSql {
  now_ms: number;
  server_version: string;
  connections: number;
  max_connections: number;
  size_bytes: number;
  read_only: boolean;
  instance_id: string | null;
  host: string;
  fly_region: string | null;
  version: string;
  pid: number;
  started_at: Date;
  uptime_ms: number;
  seen_ago_ms: number;
  stopped: boolean;
  interval_ms: number;
  connections_i: number;
  allowed_per_s: number;
  denied_per_s: number;
  allowed_total: number;
  denied_total: number;
  fallback: boolean;
  db_latency_ms: number | null;
  allowed_series: number[];
  denied_series: number[];
  policy_version: number;
  denied_by_reason: Record<string, number>;
  denied_per_s_by_reason: Record<string, number>;
  shadow_denied: Record<string, number>;
}

/** Every heartbeat row and the database's own state, in one round trip. */
export async function readFleet(pool: Pool): Promise<Fleet> {
  const { rows } = await pool.query<FleetSql>({
    name: 'ratelimit_read_fleet',
    text: `WITH d AS (
             SELECT clock_timestamp() AS now_ts,
                    current_setting('server_version') AS server_version,
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())::int AS connections,
                    current_setting('max_connections')::int AS max_connections,
                    pg_database_size(current_database()) AS size_bytes,
                    pg_is_in_recovery() AS read_only
           )
           SELECT (extract(epoch FROM d.now_ts) * 1000)::bigint AS now_ms,
                  d.server_version, d.connections, d.max_connections, d.size_bytes, d.read_only,
                  i.instance_id, i.host, i.fly_region, i.version, i.pid, i.started_at, i.uptime_ms,
                  GREATEST(0, (extract(epoch FROM (d.now_ts - i.last_seen)) * 1000))::bigint AS seen_ago_ms,
                  i.stopped_at IS NOT NULL AS stopped, i.interval_ms, i.connections AS connections_i,
                  i.allowed_per_s, i.denied_per_s, i.allowed_total, i.denied_total, i.fallback,
                  i.db_latency_ms, i.allowed_series, i.denied_series, i.policy_version,
                  i.denied_by_reason, i.denied_per_s_by_reason, i.shadow_denied
             FROM d LEFT JOIN ratelimit_instances AS i ON true
            ORDER BY i.instance_id`,
  });
  const first = rows[0]!;
  const instances = rows
    .filter((r) => r.instance_id !== null)
    .map((r): FleetInstance => {
      const silent = r.seen_ago_ms > MISSED_HEARTBEATS_FOR_DOWN * r.interval_ms;
      const state: InstanceState = r.stopped ? 'stopped' : silent ? 'down' : 'up';
      return {
        instanceId: r.instance_id!,
        host: r.host,
        flyRegion: r.fly_region,
        version: r.version,
        pid: r.pid,
        startedAt: r.started_at,
        uptimeMs: state === 'up' ? r.uptime_ms + r.seen_ago_ms : r.uptime_ms,
        intervalMs: r.interval_ms,
        lastSeenAgoMs: r.seen_ago_ms,
        down: state !== 'up',
        state,
        connections: r.connections_i,
        allowedPerS: r.allowed_per_s,
        deniedPerS: r.denied_per_s,
        allowedTotal: r.allowed_total,
        deniedTotal: r.denied_total,
        fallback: r.fallback,
        dbLatencyMs: r.db_latency_ms,
        allowedSeries: r.allowed_series,
        deniedSeries: r.denied_series,
        policyVersion: r.policy_version,
        deniedByReason: r.denied_by_reason,
        deniedPerSByReason: r.denied_per_s_by_reason,
        shadowDenied: r.shadow_denied,
      };
    });
  return {
    nowMs: first.now_ms,
    instances,
    database: {
      serverVersion: first.server_version,
      connections: first.connections,
      maxConnections: first.max_connections,
      sizeBytes: first.size_bytes,
      readOnly: first.read_only,
    },
  };
}
