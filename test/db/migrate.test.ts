import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { loadMigrations, migrate, schemaVersion } from '../../src/db/migrate.js';
import { createTestDatabase } from '../helpers/fixture.js';

let db: { url: string; drop(): Promise<void> };
const pools: Pool[] = [];
const pool = (max = 2) => {
  const p = createPool({ url: db.url, max });
  pools.push(p);
  return p;
};

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await db.drop();
});

describe('migrations', () => {
  it('are numbered from 1, increasing, each number once (reserved numbers may leave gaps)', async () => {
    const ms = await loadMigrations();
    expect(ms[0]!.id).toBe(1);
    ms.slice(1).forEach((m, i) => expect(m.id).toBeGreaterThan(ms[i]!.id));
    expect(ms[0]!.name).toBe('seed_schema');
  });

  it('apply once; a second run applies nothing', async () => {
    const p = pool();
    expect(await schemaVersion(p)).toBe(0);
    const first = await migrate(p);
    const all = await loadMigrations();
    expect(first.applied.map((m) => m.id)).toEqual(all.map((m) => m.id));
    const second = await migrate(p);
    expect(second.applied).toEqual([]);
    expect(second.alreadyApplied).toBe(all.length);
    expect(await schemaVersion(p)).toBe(all.at(-1)!.id);
  });

  it('keep the seed schema of docs/protocol.md intact', async () => {
    const { rows } = await pool().query<{ column_name: string; data_type: string; is_nullable: string }>(
      `SELECT column_name, data_type, is_nullable FROM information_schema.columns
        WHERE table_name = 'phone_rate_limits' ORDER BY ordinal_position`,
    );
    const cols = Object.fromEntries(rows.map((r) => [r.column_name, [r.data_type, r.is_nullable]]));
    expect(cols).toMatchObject({
      phone_hash: ['text', 'NO'],
      call_count: ['integer', 'NO'],
      window_start: ['bigint', 'NO'],
      region: ['text', 'YES'],
      created_at: ['timestamp with time zone', 'YES'],
      updated_at: ['timestamp with time zone', 'YES'],
    });
    expect(rows.slice(0, 6).map((r) => r.column_name)).toEqual(['phone_hash', 'call_count', 'window_start', 'region', 'created_at', 'updated_at']);
  });

  it('twenty concurrent runs on a fresh database: all succeed, each migration applied exactly once', async () => {
    const fresh = await createTestDatabase();
    const ps = Array.from({ length: 20 }, () => createPool({ url: fresh.url, max: 1 }));
    try {
      const reports = await Promise.all(ps.map((p) => migrate(p)));
      const all = await loadMigrations();
      const appliedCounts = new Map<number, number>();
      for (const r of reports) for (const m of r.applied) appliedCounts.set(m.id, (appliedCounts.get(m.id) ?? 0) + 1);
      expect([...appliedCounts.entries()].sort((a, b) => a[0] - b[0])).toEqual(all.map((m) => [m.id, 1]));
      const { rows } = await ps[0]!.query<{ n: number }>('SELECT count(*)::int AS n FROM ratelimit_migrations');
      expect(rows[0]!.n).toBe(all.length);
    } finally {
      await Promise.all(ps.splice(0).map((p) => p.end()));
      await fresh.drop();
    }
  });

  it('adopt a database created by the original design, converting its counts conservatively', async () => {
    const legacy = await createTestDatabase();
    const p = createPool({ url: legacy.url, max: 1 });
    try {
      const all = await loadMigrations();
      await p.query(all[0]!.sql);
      await p.query(`INSERT INTO phone_rate_limits (phone_hash, call_count, window_start, region) VALUES ('h1', 2, 1000, 'US'), ('h2', 0, 5000, NULL)`);
      await migrate(p);
      const { rows } = await p.query<{ phone_hash: string; calls: number[] }>('SELECT phone_hash, calls FROM phone_rate_limits ORDER BY phone_hash');
      expect(rows).toEqual([
        { phone_hash: 'h1', calls: [1000, 1000] },
        { phone_hash: 'h2', calls: [] },
      ]);
    } finally {
      await p.end();
      await legacy.drop();
    }
  });

  it('refuse a database newer than the code', async () => {
    const newer = await createTestDatabase();
    const p = createPool({ url: newer.url, max: 1 });
    try {
      await migrate(p);
      await p.query(`INSERT INTO ratelimit_migrations (id, name) VALUES (999, 'from_the_future')`);
      await expect(migrate(p)).rejects.toThrow(/upgrade ratelimit/);
    } finally {
      await p.end();
      await newer.drop();
    }
  });

  it('roll back a failing migration and name it', async () => {
    const broken = await createTestDatabase();
    const p = createPool({ url: broken.url, max: 1 });
    try {
      const all = await loadMigrations();
      const bad = [...all, { id: all.length + 1, name: 'broken', sql: 'CREATE TABLE t_ok (x int); SELECT no_such_function();' }];
      await expect(migrate(p, bad)).rejects.toThrow(new RegExp(`migration ${String(all.length + 1).padStart(3, '0')}_broken failed`));
      const { rows } = await p.query<{ t: string | null }>(`SELECT to_regclass('t_ok')::text AS t`);
      expect(rows[0]!.t).toBeNull();
      expect(await schemaVersion(p)).toBe(all.at(-1)!.id);
    } finally {
      await p.end();
      await broken.drop();
    }
  });
});
