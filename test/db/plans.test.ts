// The decision path never reads phone_rate_limits sequentially. On a fresh database the table is
// nearly empty when the first plans are made, and a pooled backend keeps a cached generic plan
// (a sequential scan, cheap for an empty table) long after the table has grown: every decision
// then reads the whole table. src/db/functions/decide_v3.sql explains the cure.
import { describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import { decideBatch } from '../../src/db/decisions.js';
import { decisionPolicy } from '../../src/core/policy/decide.js';
import { applicableCounters } from '../../src/core/policy/counters.js';
import { migratedTestDatabase } from '../helpers/fixture.js';
import { policy, rule } from '../helpers/policy.js';

const db = migratedTestDatabase({ max: 1 });

describe('the decision path on a fresh database', () => {
  it('reads phone_rate_limits through its primary key only, as the table fills', async () => {
    // One connection: every batch reuses the same backend and so its cached plans.
    const pool = createPool({ url: db.url, max: 1 });
    try {
      const full = policy({
        number: [rule('number', 3, 3_600_000), rule('number', 10, 86_400_000)],
        blockAfter: { denials: 2, withinMs: 3_600_000, forMs: 3_600_000 },
        prefix: { digits: 4, rules: [rule('prefix', 100, 3_600_000)] },
        global: [rule('global', 100_000, 3_600_000)],
      });
      const dp = decisionPolicy(full);
      const seqScans = async () => {
        // Statistics reach the shared counters when a backend flushes them: force it, then read
        // from a fresh snapshot.
        await pool.query('SELECT pg_stat_force_next_flush()');
        const { rows } = await pool.query<{ n: string }>(
          `SELECT pg_stat_clear_snapshot(), (SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'phone_rate_limits')::text AS n`,
        );
        return Number(rows[0]!.n);
      };
      const before = await seqScans();
      const t0 = 2_000_000_000_000;
      // Batches of new and returning numbers (both the insert and the update paths), one
      // decision alone (the single-decision statement) and big batches: more executions than
      // the plan cache needs before it settles on a generic plan.
      for (let b = 0; b < 40; b++) {
        const size = b % 5 === 0 ? 1 : 12;
        const requests = Array.from({ length: size }, (_, i) => {
          const e164 = `+1415555${String((b * 7 + i) % 200).padStart(4, '0')}`;
          return { hash: `plan:${e164}`, region: 'US', masked: '+1415•••', allowlisted: false, counters: applicableCounters(full, e164, 'US') };
        });
        await decideBatch(pool, requests, dp, t0 + b * 1_000);
      }
      expect(await seqScans()).toBe(before);
    } finally {
      await pool.end();
    }
  });
});
