import { afterEach, describe, expect, it, vi } from 'vitest';
import { migratedTestDatabase } from '../helpers/fixture.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { deleteStaleInstances, readFleet, upsertHeartbeat, type Heartbeat } from '../../src/db/fleet.js';
import { seedConsumes } from '../helpers/seed.js';
import { makeLogPolicy } from '../../src/core/policy/log.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { startHeartbeat, type InstanceSnapshot } from '../../src/daemon/heartbeat.js';
import { loadTopFrame } from '../../src/cli/top/model.js';

const db = migratedTestDatabase({ max: 4 });

afterEach(async () => {
  vi.useRealTimers();
  await db.pool.query('DELETE FROM ratelimit_instances');
});

function beat(over: Partial<Heartbeat> & { instanceId: string }): Heartbeat {
  return {
    host: 'host-1',
    flyRegion: 'iad',
    version: '1.2.3',
    pid: 100,
    startedAt: new Date('2025-01-01T00:00:00Z'),
    uptimeMs: 60_000,
    intervalMs: 2_000,
    connections: 7,
    allowedPerS: 12.5,
    deniedPerS: 0.5,
    allowedTotal: 1_000,
    deniedTotal: 40,
    fallback: false,
    dbLatencyMs: 1.5,
    allowedSeries: [1, 2, 3],
    deniedSeries: [0, 1, 0],
    ...over,
  };
}

/** Moves a row's last beat into the past on the database's clock, instead of waiting. */
async function age(instanceId: string, seconds: number): Promise<void> {
  await db.pool.query(`UPDATE ratelimit_instances SET last_seen = clock_timestamp() - make_interval(secs => $2) WHERE instance_id = $1`, [instanceId, seconds]);
}

describe('heartbeat rows', () => {
  it('round-trips every field of a beat and reports the instance up', async () => {
    await upsertHeartbeat(db.pool, beat({ instanceId: 'a' }));
    const fleet = await readFleet(db.pool);
    expect(fleet.instances).toHaveLength(1);
    const a = fleet.instances[0]!;
    expect(a).toMatchObject({
      instanceId: 'a',
      host: 'host-1',
      flyRegion: 'iad',
      version: '1.2.3',
      pid: 100,
      intervalMs: 2_000,
      connections: 7,
      allowedPerS: 12.5,
      deniedPerS: 0.5,
      allowedTotal: 1_000,
      deniedTotal: 40,
      fallback: false,
      dbLatencyMs: 1.5,
      allowedSeries: [1, 2, 3],
      deniedSeries: [0, 1, 0],
      state: 'up',
      down: false,
    });
    expect(a.startedAt.toISOString()).toBe('2025-01-01T00:00:00.000Z');
    expect(a.uptimeMs).toBeGreaterThanOrEqual(60_000);
    expect(a.lastSeenAgoMs).toBeGreaterThanOrEqual(0);
  });

  it('updates the one row per instance in place', async () => {
    await upsertHeartbeat(db.pool, beat({ instanceId: 'a', connections: 1 }));
    await upsertHeartbeat(db.pool, beat({ instanceId: 'a', connections: 2, flyRegion: undefined, dbLatencyMs: null }));
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM ratelimit_instances');
    expect(rows[0].n).toBe(1);
    const [a] = (await readFleet(db.pool)).instances;
    expect(a).toMatchObject({ connections: 2, flyRegion: null, dbLatencyMs: null });
  });

  it('shows an instance down after three silent intervals, measured on the database clock', async () => {
    await upsertHeartbeat(db.pool, beat({ instanceId: 'quiet', intervalMs: 2_000 }));
    await upsertHeartbeat(db.pool, beat({ instanceId: 'silent', intervalMs: 2_000 }));
    await age('quiet', 5); // two and a half intervals: late, not down
    await age('silent', 7); // three and a half
    const byId = new Map((await readFleet(db.pool)).instances.map((i) => [i.instanceId, i]));
    expect(byId.get('quiet')).toMatchObject({ state: 'up', down: false });
    expect(byId.get('silent')).toMatchObject({ state: 'down', down: true });
    expect(byId.get('silent')!.lastSeenAgoMs).toBeGreaterThanOrEqual(7_000);
    // A dead instance's uptime stops at its last beat.
    expect(byId.get('silent')!.uptimeMs).toBe(60_000);
  });

  it('marks a gracefully stopped instance as stopped, and a new beat with the same id revives it', async () => {
    await upsertHeartbeat(db.pool, beat({ instanceId: 'a', stopped: true }));
    expect((await readFleet(db.pool)).instances[0]).toMatchObject({ state: 'stopped', down: true });
    await upsertHeartbeat(db.pool, beat({ instanceId: 'a' }));
    expect((await readFleet(db.pool)).instances[0]).toMatchObject({ state: 'up', down: false });
  });

  it('deletes only rows older than the given age', async () => {
    for (const id of ['fresh', 'nine', 'eleven']) await upsertHeartbeat(db.pool, beat({ instanceId: id }));
    await age('nine', 9 * 60);
    await age('eleven', 11 * 60);
    expect(await deleteStaleInstances(db.pool, 10 * 60_000)).toBe(1);
    expect((await readFleet(db.pool)).instances.map((i) => i.instanceId).sort()).toEqual(['fresh', 'nine']);
  });

  it("reports the database's own state with the fleet, also with no instance at all", async () => {
    const fleet = await readFleet(db.pool);
    expect(fleet.instances).toEqual([]);
    expect(fleet.database.serverVersion).toMatch(/^\d+/);
    expect(fleet.database.maxConnections).toBeGreaterThan(0);
    expect(fleet.database.connections).toBeGreaterThanOrEqual(1);
    expect(fleet.database.sizeBytes).toBeGreaterThan(0);
    expect(fleet.database.readOnly).toBe(false);
    const { rows } = await db.pool.query<{ ms: number }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms');
    expect(Math.abs(fleet.nowMs - rows[0]!.ms)).toBeLessThan(60_000);
  });
});

describe('loadTopFrame', () => {
  it('sums live instances only, and reads the hottest numbers masked with their usage', async () => {
    const policy = makeLogPolicy([{ id: 'phone', limit: 2, windowMs: 3_600_000 }]);
    const hot = { hash: 'f'.repeat(64), region: 'US', masked: '+1415•••••71' };
    const calm = { hash: 'e'.repeat(64), region: 'GB', masked: '+4479••••••56' };
    await seedConsumes(db.pool, [hot, hot, hot, hot, calm], policy);
    await upsertHeartbeat(db.pool, beat({ instanceId: 'a', connections: 3, allowedPerS: 2, deniedPerS: 1, allowedSeries: [1, 1, 5], deniedSeries: [0, 0, 2] }));
    await upsertHeartbeat(db.pool, beat({ instanceId: 'b', connections: 4, allowedPerS: 3, deniedPerS: 0, allowedSeries: [2, 2], deniedSeries: [0, 0] }));
    await upsertHeartbeat(db.pool, beat({ instanceId: 'c', connections: 100, allowedPerS: 100, allowedSeries: [100] }));
    await age('c', 60);

    const fallback = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 100, ipWindowMs: 60_000 });
    const frame = await loadTopFrame(db.pool, fallback, 'denials');
    expect(frame.instances.map((i) => [i.instanceId, i.state])).toEqual([
      ['c', 'down'],
      ['a', 'up'],
      ['b', 'up'],
    ]);
    expect(frame.totals).toMatchObject({ up: 2, down: 1, stopped: 0, connections: 7, allowedPerS: 5, deniedPerS: 1 });
    // Aligned on the newest sample: [1, 1+2, 5+2].
    expect(frame.series).toEqual({ allowed: [1, 3, 7], denied: [0, 0, 2] });
    expect(frame.hottest[0]).toMatchObject({ hash: hot.hash, masked: '+1415•••••71', region: 'US', used: 2, limit: 2, deniedInWindow: 2, atLimit: true });
    expect(frame.hottest[0]!.resetInMs).toBeGreaterThan(3_500_000);
    expect(frame.hottest[1]).toMatchObject({ masked: '+4479••••••56', used: 1, deniedInWindow: 0, atLimit: false });
    expect(frame.window).toMatchObject({ tracked: 2, active: 2, atLimit: 1, calls: 3, denials: 2 });
    expect(frame.regions.map((r) => r.region).sort()).toEqual(['GB', 'US']);
    expect((await loadTopFrame(db.pool, fallback, 'calls')).sort).toBe('calls');
  });
});

describe('startHeartbeat against PostgreSQL', () => {
  const identity = { instanceId: 'hb-1', host: 'box', flyRegion: 'ams', version: '9.9.9', pid: 1234, startedAt: new Date() };
  const snapshot = (): InstanceSnapshot => ({ connections: 2, allowedTotal: 5, deniedTotal: 1, fallback: true, dbLatencyMs: 0.7 });

  it('publishes a row at once and marks it stopped (not deleted) on stop', async () => {
    const errors: Error[] = [];
    const hb = startHeartbeat({ pool: db.pool, intervalMs: 60_000, identity, snapshot, onError: (e) => errors.push(e) });
    await vi.waitFor(async () => expect((await readFleet(db.pool)).instances).toHaveLength(1), { timeout: 10_000, interval: 50 });
    expect((await readFleet(db.pool)).instances[0]).toMatchObject({
      instanceId: 'hb-1',
      host: 'box',
      flyRegion: 'ams',
      version: '9.9.9',
      pid: 1234,
      intervalMs: 60_000,
      connections: 2,
      allowedTotal: 5,
      deniedTotal: 1,
      fallback: true,
      dbLatencyMs: expect.closeTo(0.7, 5) as number,
      state: 'up',
    });
    await Promise.all([hb.stop(), hb.stop()]);
    await hb.stop();
    expect((await readFleet(db.pool)).instances[0]).toMatchObject({ state: 'stopped', connections: 0, allowedTotal: 5 });
    expect(errors).toEqual([]);
  });

  it('reports a database it cannot reach through onError and never throws', async () => {
    const dead = createPool({ url: 'postgres://nobody:nothing@127.0.0.1:1/none', connectTimeoutMs: 2_000 });
    const errors: Error[] = [];
    const hb = startHeartbeat({ pool: dead, intervalMs: 200, identity, snapshot, onError: (e) => errors.push(e) });
    await vi.waitFor(() => expect(errors.length).toBeGreaterThan(0), { timeout: 10_000, interval: 50 });
    await expect(hb.stop()).resolves.toBeUndefined();
    await dead.end();
    expect(errors[0]).toBeInstanceOf(Error);
  });
});

describe('startHeartbeat sampling (fake clock, recording db.pool)', () => {
  interface Recorded {
    name: string | undefined;
    text: string;
    values: unknown[];
  }
  function recordingPool(fail: () => boolean = () => false) {
    const queries: Recorded[] = [];
    const fake = {
      query: async (q: string | { name?: string; text: string; values?: unknown[] }, values?: unknown[]) => {
        const rec = typeof q === 'string' ? { name: undefined, text: q, values: values ?? [] } : { name: q.name, text: q.text, values: q.values ?? [] };
        queries.push(rec);
        if (fail()) throw new Error('connection refused');
        return { rows: [], rowCount: 0 };
      },
    };
    const beats = () => queries.filter((q) => q.name === 'ratelimit_heartbeat');
    return { pool: fake as unknown as Pool, queries, beats };
  }
  // upsertHeartbeat's parameter order.
  const P = { uptime: 6, stopped: 7, connections: 9, allowedPerS: 10, deniedPerS: 11, allowedTotal: 12, allowedSeries: 16, deniedSeries: 17 };
  const identity = { instanceId: 'x', host: 'h', flyRegion: undefined, version: 'v', pid: 1, startedAt: new Date() };

  it('derives per-second series and rates from cumulative counters', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'performance', 'Date'] });
    identity.startedAt = new Date();
    const { pool: fake, beats } = recordingPool();
    const counters = { allowedTotal: 0, deniedTotal: 0 };
    const hb = startHeartbeat({
      pool: fake,
      intervalMs: 2_000,
      identity,
      snapshot: () => ({ connections: 3, fallback: false, dbLatencyMs: null, ...counters }),
    });
    expect(beats()).toHaveLength(1);
    expect(beats()[0]!.values[P.allowedSeries]).toEqual([]);
    for (const [allowed, denied] of [
      [10, 1],
      [20, 0],
      [0, 3],
      [30, 0],
    ] as const) {
      counters.allowedTotal += allowed;
      counters.deniedTotal += denied;
      await vi.advanceTimersByTimeAsync(1_000);
    }
    expect(beats()).toHaveLength(3);
    const last = beats()[2]!.values;
    expect(last[P.allowedSeries]).toEqual([10, 20, 0, 30]);
    expect(last[P.deniedSeries]).toEqual([1, 0, 3, 0]);
    expect(last[P.allowedTotal]).toBe(60);
    expect(last[P.allowedPerS]).toBe(15);
    expect(last[P.deniedPerS]).toBe(1);
    expect(last[P.uptime]).toBe(4_000);
    expect(last[P.stopped]).toBe(false);

    for (let s = 0; s < 70; s++) await vi.advanceTimersByTimeAsync(1_000);
    expect(beats().at(-1)!.values[P.allowedSeries]).toHaveLength(60);

    await hb.stop();
    const final = beats().at(-1)!.values;
    expect(final[P.stopped]).toBe(true);
    expect(final[P.connections]).toBe(0);
    const n = beats().length;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(beats()).toHaveLength(n);
  });

  it('cleans stale rows at start and then at most once a minute', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'performance', 'Date'] });
    const { pool: fake, queries } = recordingPool();
    const hb = startHeartbeat({
      pool: fake,
      intervalMs: 2_000,
      identity,
      snapshot: () => ({ connections: 0, allowedTotal: 0, deniedTotal: 0, fallback: false, dbLatencyMs: null }),
    });
    await vi.advanceTimersByTimeAsync(130_000);
    await hb.stop();
    const deletes = queries.filter((q) => q.text.startsWith('DELETE FROM ratelimit_instances'));
    expect(deletes).toHaveLength(3);
    expect(deletes[0]!.values).toEqual([10 * 60_000]);
  });

  it('reports one error per outage (not one per tick), keeps trying, and survives a throwing snapshot', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'performance', 'Date'] });
    let down = true;
    const { pool: fake, beats } = recordingPool(() => down);
    const errors: string[] = [];
    let snapshotFails = false;
    const hb = startHeartbeat({
      pool: fake,
      intervalMs: 1_000,
      identity,
      snapshot: () => {
        if (snapshotFails) throw new Error('snapshot broke');
        return { connections: 0, allowedTotal: 0, deniedTotal: 0, fallback: false, dbLatencyMs: null };
      },
      onError: (e) => errors.push(e.message),
    });
    await vi.advanceTimersByTimeAsync(5_000);
    expect(beats().length).toBeGreaterThanOrEqual(5);
    expect(errors).toEqual(['connection refused']);
    down = false;
    await vi.advanceTimersByTimeAsync(1_000);
    down = true;
    await vi.advanceTimersByTimeAsync(1_000);
    expect(errors).toEqual(['connection refused', 'connection refused']);
    down = false;
    snapshotFails = true;
    await vi.advanceTimersByTimeAsync(1_000);
    expect(errors.at(-1)).toBe('snapshot broke');
    await expect(hb.stop()).resolves.toBeUndefined();
  });
});
