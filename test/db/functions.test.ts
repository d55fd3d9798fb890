// src/db/functions: one current source per SQL function, applied by migrate() after the
// migrations; a database made by an older version (migrations 001-013 with their own function
// copies) upgrades in place and keeps deciding right, for this release's daemons and v0.1.0's.
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { loadFunctions, loadMigrations, migrate } from '../../src/db/migrate.js';
import { decideBatch } from '../../src/db/decisions.js';
import { decisionPolicy } from '../../src/core/policy/decide.js';
import { createTestDatabase } from '../helpers/fixture.js';
import { policy, rule } from '../helpers/policy.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function emptyDatabase(): Promise<Pool> {
  const db = await createTestDatabase();
  const pool = createPool({ url: db.url, max: 2 });
  cleanups.push(
    () => db.drop(),
    () => pool.end(),
  );
  return pool;
}

async function ratelimitFunctions(pool: Pool): Promise<string[]> {
  const { rows } = await pool.query<{ sig: string }>(
    `SELECT p.oid::regprocedure::text AS sig FROM pg_proc AS p
      WHERE p.proname LIKE 'ratelimit\\_%' AND p.pronamespace = current_schema()::regnamespace ORDER BY 1`,
  );
  return rows.map((r) => r.sig);
}

/** The previous release's last migration: 013 (migrations 001-013 are byte for byte what it shipped). */
const PREVIOUS_RELEASE_MIGRATIONS = 13;

describe('src/db/functions', () => {
  it('defines each live function in exactly one file, and a fresh database holds no other', async () => {
    const dir = join(import.meta.dirname, '../../src/db/functions');
    const files = (await readdir(dir)).filter((f) => f.endsWith('.sql'));
    for (const f of files) {
      const text = await readFile(join(dir, f), 'utf8');
      expect(text.match(/CREATE OR REPLACE FUNCTION/g), f).toHaveLength(1);
    }
    const pool = await emptyDatabase();
    const report = await migrate(pool);
    const sources = await loadFunctions();
    expect(report.functions.sort()).toEqual(sources.map((f) => f.name).sort());
    const live = (await ratelimitFunctions(pool)).map((sig) => sig.slice(0, sig.indexOf('(')));
    expect(live).toEqual(sources.map((f) => f.name).sort());
    // Applied once: a restart re-creates nothing (no plan invalidated in running daemons).
    expect((await migrate(pool)).functions).toEqual([]);
  });

  it('drops the old overload when a signature changes, and recreates a function whose argument names change', async () => {
    const pool = await emptyDatabase();
    const probe = (args: string) => ({
      name: 'ratelimit_probe',
      sql: `CREATE OR REPLACE FUNCTION ratelimit_probe(${args}) RETURNS INTEGER LANGUAGE sql AS 'SELECT 1'`,
    });
    await migrate(pool, [], [probe('a INTEGER')]);
    expect(await ratelimitFunctions(pool)).toEqual(['ratelimit_probe(integer)']);
    await migrate(pool, [], [probe('a BIGINT')]);
    expect(await ratelimitFunctions(pool)).toEqual(['ratelimit_probe(bigint)']);
    // CREATE OR REPLACE refuses to rename an argument: migrate() drops and recreates.
    await migrate(pool, [], [probe('b BIGINT')]);
    const { rows } = await pool.query<{ args: string }>(`SELECT pg_get_function_arguments('ratelimit_probe'::regproc) AS args`);
    expect(rows[0]!.args).toBe('b bigint');
  });

  it('upgrades a database made by the previous release: its rows keep counting, its daemons keep deciding', async () => {
    const pool = await emptyDatabase();
    const all = await loadMigrations();
    await migrate(pool, all.slice(0, PREVIOUS_RELEASE_MIGRATIONS), []);
    expect(await ratelimitFunctions(pool)).toContain('ratelimit_consume(text[],text[],text[],integer[],bigint[])');
    // Rows seeded as that version's daemon decides: ratelimit_decide (v1) called by position.
    const oldDaemonDecide = (hash: string, nowMs: number) =>
      pool.query<{ r_allowed: boolean }>(
        `SELECT r_allowed FROM ratelimit_decide($1::text[], $2::text[], $3::text[], $4::boolean[], $5::text[], $6::int[], $7::bigint[],
           $8::boolean[], 0, 0, 0, '{}'::int[], '{}'::int[], '{}'::text[], '{}'::text[], '{}'::int[], '{}'::bigint[], '{}'::int[], '{}'::boolean[], $9::bigint)`,
        [[hash], ['US'], ['+1415•••'], [false], ['number:1h'], [2], [3_600_000], [false], nowMs],
      );
    const t0 = 2_000_000_000_000;
    expect((await oldDaemonDecide('upgrade-a', t0)).rows[0]!.r_allowed).toBe(true);
    expect((await oldDaemonDecide('upgrade-a', t0 + 1_000)).rows[0]!.r_allowed).toBe(true);
    expect((await oldDaemonDecide('upgrade-a', t0 + 2_000)).rows[0]!.r_allowed).toBe(false);

    const report = await migrate(pool);
    expect(report.applied.map((m) => m.id)).toEqual(all.slice(PREVIOUS_RELEASE_MIGRATIONS).map((m) => m.id));
    const live = await ratelimitFunctions(pool);
    expect(live.some((sig) => sig.startsWith('ratelimit_consume(') || sig.startsWith('ratelimit_record('))).toBe(false);
    // ratelimit_decide (v1) was called by no released version: migration 022 drops it.
    expect(live.some((sig) => sig.startsWith('ratelimit_decide('))).toBe(false);
    expect(live).toContain(
      'ratelimit_decide_v2(text[],text[],text[],boolean[],boolean[],text[],integer[],bigint[],boolean[],integer,bigint,bigint,bigint[],bigint,integer[],integer[],text[],text[],integer[],bigint[],integer[],boolean[],text[],boolean[],bigint)',
    );

    // The new daemon sees the old calls: the third call in the hour is denied, a new number is not.
    const dp = decisionPolicy(policy({ number: [rule('number', 2, 3_600_000)] }));
    const req = (hash: string) => ({ hash, region: 'US', masked: '+1415•••', allowlisted: false, counters: [] });
    const [a, b] = await decideBatch(pool, [req('upgrade-a'), req('upgrade-b')], dp, t0 + 3_000);
    expect(a).toMatchObject({ allowed: false, rule: 'number:3600000ms', rules: [{ used: 2, resetTime: t0 + 3_600_000 }] });
    expect(b).toMatchObject({ allowed: true, rules: [{ used: 1 }] });
    // A v0.1.0 daemon, still running during a rolling upgrade, keeps deciding through
    // ratelimit_decide_v2, called by name as it calls it, on the same rows.
    const v010Decide = (hash: string, nowMs: number) =>
      pool.query<{ r_allowed: boolean }>(
        `SELECT r_allowed FROM ratelimit_decide_v2(p_hashes => $1::text[], p_regions => $2::text[], p_masked => $3::text[],
           p_allowlisted => $4::boolean[], p_safe => $5::boolean[], p_rule_ids => $6::text[], p_rule_limits => $7::int[],
           p_rule_windows => $8::bigint[], p_rule_shadow => $9::boolean[], p_block_denials => 0, p_block_within => 0, p_block_for => 0,
           p_block_steps => '{}'::bigint[], p_block_decay => 0, p_entry_request => '{}'::int[], p_entry_counter => '{}'::int[],
           p_counter_rules => '{}'::text[], p_counter_keys => '{}'::text[], p_counter_limits => '{}'::int[], p_counter_windows => '{}'::bigint[],
           p_counter_bucket_calls => '{}'::int[], p_counter_shadow => '{}'::boolean[], p_counter_kinds => '{}'::text[],
           p_counter_blocks_range => '{}'::boolean[], p_now => $10::bigint)`,
        [[hash], ['US'], ['+1415•••'], [false], [false], ['number:3600000ms'], [2], [3_600_000], [false], nowMs],
      );
    expect((await v010Decide('upgrade-b', t0 + 4_000)).rows[0]!.r_allowed).toBe(true);
    expect((await v010Decide('upgrade-b', t0 + 5_000)).rows[0]!.r_allowed).toBe(false);
    const { rows } = await pool.query('SELECT phone_hash, calls, denied_total FROM phone_rate_limits ORDER BY phone_hash');
    expect(rows).toEqual([
      { phone_hash: 'upgrade-a', calls: [t0, t0 + 1_000], denied_total: 2 },
      { phone_hash: 'upgrade-b', calls: [t0 + 3_000, t0 + 4_000], denied_total: 1 },
    ]);
  });
});
