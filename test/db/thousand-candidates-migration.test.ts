// Migration 015 scrubs what older releases stored that narrows a number below 1,000
// candidates: masks that showed the last two digits (rows, list entries, audit copies) and
// prefix counters keyed by ranges of 10 or 100 numbers.

import { afterEach, describe, expect, it } from 'vitest';
import { applicableCounters } from '../../src/core/policy/counters.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { readEffectivePolicy } from '../../src/db/policies.js';
import { PolicySource } from '../../src/daemon/policy-source.js';
import { pino } from 'pino';
import { createPool, type Pool } from '../../src/db/pool.js';
import { createTestDatabase } from '../helpers/fixture.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A database migrated to just before 015, as an older release left it. */
async function olderDatabase(): Promise<Pool> {
  const db = await createTestDatabase();
  const pool = createPool({ url: db.url, max: 2 });
  cleanups.push(
    () => db.drop(),
    () => pool.end(),
  );
  await migrate(
    pool,
    (await loadMigrations()).filter((m) => m.id < 15),
  );
  return pool;
}

async function seed(pool: Pool, policyYaml: string): Promise<void> {
  await pool.query(
    `INSERT INTO phone_rate_limits (phone_hash, window_start, phone_masked) VALUES
       ('h1', 0, '+1415•••••71'), ('h2', 0, '+4479••••••56'), ('h3', 0, '+86138•••••0001'), ('h4', 0, NULL), ('h5', 0, '+14155552•••')`,
  );
  await pool.query(
    `INSERT INTO rate_limit_lists (target_type, target, kind, masked, created_by) VALUES
       ('number', 'h1', 'block', '+1415•••••71', 'ops'), ('prefix', '+4470', 'block', '+4470', 'ops')`,
  );
  await pool.query(
    `INSERT INTO rate_limit_audit (actor, action, target, detail) VALUES
       ('ops', 'list_block', 'number:h1', '{"masked": "+1415•••••71", "reason": "fraud"}'),
       ('ops', 'list_block', 'prefix:+4470', '{"masked": "+4470", "reason": null}'),
       ('ops', 'policy_apply', 'policy:1', '{"version": 1}')`,
  );
  await pool.query(`INSERT INTO rate_limit_policies (yaml, applied_by) VALUES ($1, 'ops')`, [policyYaml]);
  await pool.query(`INSERT INTO rate_limit_counters (rule_id, key) VALUES ('prefix:1h', '+1415555267'), ('country:1h', 'US'), ('global:1d', '*')`);
}

describe('migration 015', () => {
  it('rewrites old masks to show no digit past the first bullet and drops prefix counters of a narrow policy', async () => {
    const pool = await olderDatabase();
    await seed(pool, 'prefix:\n  digits: 1\n  limits: [{limit: 4, window: 1h}]\n');
    await migrate(pool);

    const rows = await pool.query<{ phone_hash: string; phone_masked: string | null }>(
      'SELECT phone_hash, phone_masked FROM phone_rate_limits ORDER BY phone_hash',
    );
    expect(rows.rows.map((r) => r.phone_masked)).toEqual(['+1415•••••••', '+4479••••••••', '+86138•••••••••', null, '+14155552•••']);
    const lists = await pool.query<{ target: string; masked: string }>('SELECT target, masked FROM rate_limit_lists ORDER BY target_type');
    expect(lists.rows).toEqual([
      { target: 'h1', masked: '+1415•••••••' },
      { target: '+4470', masked: '+4470' },
    ]);
    const audit = await pool.query<{ detail: Record<string, unknown> }>('SELECT detail FROM rate_limit_audit ORDER BY id');
    expect(audit.rows.map((r) => r.detail)).toEqual([{ masked: '+1415•••••••', reason: 'fraud' }, { masked: '+4470', reason: null }, { version: 1 }]);
    const counters = await pool.query<{ rule_id: string }>('SELECT rule_id FROM rate_limit_counters ORDER BY rule_id');
    expect(counters.rows.map((r) => r.rule_id)).toEqual(['country:1h', 'global:1d']);
  });

  it('keeps prefix counters when no stored policy ever asked for fewer than 3 digits', async () => {
    const pool = await olderDatabase();
    await seed(pool, 'prefix: {digits: 3, limits: [{limit: 12, window: 1h}]}\n');
    await migrate(pool);
    const counters = await pool.query<{ rule_id: string }>('SELECT rule_id FROM rate_limit_counters ORDER BY rule_id');
    expect(counters.rows.map((r) => r.rule_id)).toEqual(['country:1h', 'global:1d', 'prefix:1h']);
  });

  it('recognises a narrow policy however the YAML spells it', async () => {
    for (const yaml of ['prefix: {digits: 2, limits: [{limit: 1, window: 1h}]}', "prefix:\n  digits:   '2'\n  limits: []", 'prefix:\n  digits: 2']) {
      const pool = await olderDatabase();
      await seed(pool, yaml);
      await migrate(pool);
      const counters = await pool.query('SELECT 1 FROM rate_limit_counters WHERE rule_id LIKE $1', ['prefix:%']);
      expect(counters.rowCount, yaml).toBe(0);
    }
  });
});

describe('a stored policy with prefix digits below 3', () => {
  it('is enforced with ranges of 1,000 numbers, and the change is said', async () => {
    const pool = await olderDatabase();
    await migrate(pool);
    await pool.query(`INSERT INTO rate_limit_policies (yaml, applied_by) VALUES ($1, 'an older release')`, [
      'prefix:\n  digits: 2\n  limits: [{limit: 4, window: 1h}]\n',
    ]);
    const fallback = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 1, ipWindowMs: 1_000 });
    const effective = await readEffectivePolicy(pool, fallback);
    expect(effective.source).toBe('database');
    expect(effective.policy.prefix?.digits).toBe(3);
    expect(effective.adjustments).toEqual([
      expect.stringMatching(/^policy version 1: prefix\.digits 2 is enforced as 3 \(a range must hold at least 1,000 numbers/),
    ]);
    expect(applicableCounters(effective.policy, '+14155552671', 'US').map((c) => c.key)).toEqual(['+14155552']);
  });
});

describe('a daemon reading what an older release stored', () => {
  it('says it enforces a narrow prefix policy with 3 digits, and that narrow list prefixes exist, without naming them', async () => {
    const pool = await olderDatabase();
    await migrate(pool);
    await pool.query(`INSERT INTO rate_limit_policies (yaml, applied_by) VALUES ($1, 'an older release')`, [
      'prefix:\n  digits: 1\n  limits: [{limit: 4, window: 1h}]\n',
    ]);
    await pool.query(
      `INSERT INTO rate_limit_lists (target_type, target, kind, masked, created_by) VALUES ('prefix', '+4420794601', 'block', '+4420794601', 'ops'), ('prefix', '+4470', 'block', '+4470', 'ops')`,
    );
    await pool.query(`UPDATE rate_limit_changes SET version = version + 1`);
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const fallback = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 1, ipWindowMs: 1_000 });
    const source = new PolicySource({ pool, logger, defaultPolicy: fallback, defaultPolicySources: [], pollIntervalMs: 60_000, onChange: () => undefined });
    try {
      await source.start(true);
      expect(source.current.policy.prefix?.digits).toBe(3);
      const warnings = lines.filter((l) => l.level === 40).map((l) => String(l.msg));
      expect(warnings).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^policy version 1: prefix\.digits 1 is enforced as 3/),
          expect.stringMatching(/block or allow prefixes stored before ranges were held to 1,000 numbers/),
        ]),
      );
      expect(lines.find((l) => /block or allow prefixes/.test(String(l.msg)))).toMatchObject({ entries: 1 });
      expect(JSON.stringify(lines)).not.toContain('4420794601');
    } finally {
      source.stop();
    }
  });
});
