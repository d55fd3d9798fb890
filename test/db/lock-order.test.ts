// ratelimit_decide_v3 locks numbers that have a row, then counters, and writes a number new to the
// database last (write-once, migration 006). ratelimit_record_v2 (the replay of what memory
// decided, possibly on another daemon) creates numbers before it locks counters. The two orders
// differ for one case, a number that is new to both, and PostgreSQL then resolves the cycle by
// aborting one statement (40P01, deadlock_detected) having written nothing. This test builds that
// cycle on purpose and asserts that decideBatch runs its batch again instead of failing the
// batch's consumes. (The replay retries on its own at the next probe or flush.)
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Pool } from '../../src/db/pool.js';
import { decideBatch, recordDecisions } from '../../src/db/decisions.js';
import { applicableCounters } from '../../src/core/policy/counters.js';
import { decisionPolicy } from '../../src/core/policy/decide.js';
import { migratedTestDatabase, waitFor } from '../helpers/fixture.js';
import { policy, rule } from '../helpers/policy.js';

const db = migratedTestDatabase({ max: 4 });

async function client(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  return c;
}

/** Lock requests of this database not granted yet (sessions waiting on a lock). */
async function waiting(admin: pg.Client): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(DISTINCT pid)::int AS n FROM pg_locks WHERE NOT granted AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())`,
  );
  return rows[0]!.n;
}

describe('lock order between ratelimit_decide_v3 and ratelimit_record_v2', () => {
  it('a deadlock on a number new to both is retried by decideBatch, and both calls are kept', async () => {
    const p = policy({ number: [rule('number', 5, 3_600_000, false, '#dl')], global: [rule('global', 100, 3_600_000, false, '#dl')] });
    const dp = decisionPolicy(p);
    const counters = applicableCounters(p, '+14155550111', 'US');
    const req = (hash: string) => ({ hash, region: 'US', masked: '+1415•••••11', allowlisted: false, counters });
    // The global counter's row exists (so it can be held), and number X does not.
    await decideBatch(db.pool, [req('lock-order-seed')], dp);

    const admin = await client();
    const holder = await client();
    const recorder = await client();
    try {
      // The recorder must not be the one PostgreSQL aborts: its deadlock check comes much later
      // than the decider's (1 s by default), so the decider is the statement that gets 40P01.
      await recorder.query(`SET deadlock_timeout = '60s'`);
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM rate_limit_counters WHERE rule_id = $1 FOR UPDATE`, [p.global[0]!.id]);

      // 1. The decider queues on the counter first (it has locked nothing: X is new to it).
      const decided = decideBatch(db.pool, [req('lock-order-X')], dp);
      await waitFor('the decider to wait on the counter', async () => ((await waiting(admin)) >= 1 ? true : undefined), 10_000, 20);
      // 2. The replay inserts X (uncommitted) and queues on the counter behind the decider.
      const pool2 = { query: (q: pg.QueryConfig) => recorder.query(q) } as unknown as Pool;
      const recorded = recordDecisions(pool2, [{ hash: 'lock-order-X', region: 'US', masked: '+1415•••••11', atMs: Date.now(), allowed: true, counters }], dp);
      await waitFor('the replay to wait on the counter too', async () => ((await waiting(admin)) >= 2 ? true : undefined), 10_000, 20);
      // 3. The counter is free: the decider takes it, then waits on the replay's X, which waits on
      //    the decider's counter. PostgreSQL aborts the decider; decideBatch runs it again.
      await holder.query('COMMIT');

      const [outs, n] = await Promise.all([decided, recorded]);
      expect(n).toBe(1);
      expect(outs).toHaveLength(1);
      expect(outs[0]!.allowed).toBe(true);
      // Both calls are in X's log: the replayed one and the decided one.
      const { rows } = await admin.query<{ n: number }>(`SELECT cardinality(calls)::int AS n FROM phone_rate_limits WHERE phone_hash = 'lock-order-X'`);
      expect(rows[0]!.n).toBe(2);
      // The cycle did happen (otherwise this test proves nothing about the retry). Statistics
      // reach pg_stat_database up to a second after the fact.
      await waitFor(
        'the deadlock to be counted',
        async () => {
          const { rows: d } = await admin.query<{ n: number }>(`SELECT deadlocks::int AS n FROM pg_stat_database WHERE datname = current_database()`);
          return d[0]!.n >= 1 ? true : undefined;
        },
        10_000,
        100,
      );
    } finally {
      await Promise.all([admin.end(), holder.end().catch(() => undefined), recorder.end()]);
    }
  }, 30_000);
});
