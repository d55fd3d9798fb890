import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { lookupPhone, resetPhone } from '../../src/db/phones.js';
import { hottestNumbers, readStats } from '../../src/db/stats.js';
import { peekState } from '../../src/db/decisions.js';
import { evaluate, makeLogPolicy, type LogPolicy } from '../../src/core/policy/log.js';
import { hashPhone, maskPhone, normalizePhone } from '../../src/core/phone.js';
import { createTestDatabase } from '../helpers/fixture.js';
import { consumeLog, seedConsumes, type SeedRequest } from '../helpers/seed.js';

const KEY = 'test-key-'.repeat(5);
let db: { url: string; drop(): Promise<void> };
let pool: Pool;
const extraPools: Pool[] = [];

let counter = 0;
/** A fresh number per test, so tests sharing the database never share a row. */
function freshNumber(): { e164: string; req: SeedRequest } {
  const e164 = `+1415555${String(1000 + counter++).padStart(4, '0')}`;
  const { region } = normalizePhone(e164);
  return { e164, req: { hash: hashPhone(e164, KEY), region, masked: maskPhone(e164) } };
}

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 8 });
  await migrate(pool);
});
afterAll(async () => {
  await Promise.all([pool, ...extraPools].map((p) => p.end()));
  await db.drop();
});

const HOUR = 3_600_000;
const twoPerHour = makeLogPolicy([{ id: 'phone', limit: 2, windowMs: HOUR }]);

describe('decisions through ratelimit_decide_v3, number rules only', () => {
  it('allows max, then denies without spending quota, counting the denials', async () => {
    const { req } = freshNumber();
    const out = await seedConsumes(pool, [req, req, req, req], twoPerHour);
    expect(out.map((o) => o.allowed)).toEqual([true, true, false, false]);
    expect(out[1]!.log).toHaveLength(2);
    expect(out[3]!.log).toEqual(out[1]!.log);
    const { row } = await lookupPhone(pool, req.hash);
    expect(row).toMatchObject({ callCount: 2, deniedTotal: 2, deniedInWindow: 2, region: 'US', calls: out[1]!.log });
    expect(row!.windowStart).toBe(out[0]!.atMs);
    // BIGINTs arrive as numbers, not strings.
    expect(typeof row!.windowStart).toBe('number');
    expect(typeof row!.calls[0]).toBe('number');
  });

  it('decides each request of a batch in order and reports per request', async () => {
    const a = freshNumber().req;
    const b = freshNumber().req;
    const out = await seedConsumes(pool, [a, b, a, b, a, b], twoPerHour);
    expect(out.map((o) => o.allowed)).toEqual([true, true, true, true, false, false]);
  });

  it('agrees with the pure policy, request by request (property)', async () => {
    const policy = makeLogPolicy([
      { id: 'short', limit: 3, windowMs: 200 },
      { id: 'long', limit: 5, windowMs: 10_000 },
    ]);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 0, max: 60 }),
        async (batches, pauseMs) => {
          const keys = [freshNumber().req, freshNumber().req, freshNumber().req];
          const logs = new Map<string, number[]>();
          for (const batch of batches) {
            const reqs = batch.map((k) => keys[k]!);
            const out = await seedConsumes(pool, reqs, policy);
            reqs.forEach((r, i) => {
              const o = out[i]!;
              const expected = consumeLog(logs.get(r.hash) ?? [], o.atMs, policy);
              expect(o.allowed).toBe(expected.decision.allowed);
              expect(o.log).toEqual(expected.log);
              logs.set(r.hash, o.log);
            });
            if (pauseMs) await new Promise((res) => setTimeout(res, pauseMs));
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it('hundreds of concurrent consumes for one number from several pools: never more than max allowed', async () => {
    const { req } = freshNumber();
    const policy = makeLogPolicy([{ id: 'phone', limit: 7, windowMs: HOUR }]);
    const pools = Array.from({ length: 4 }, () => createPool({ url: db.url, max: 6 }));
    extraPools.push(...pools);
    const results = await Promise.all(
      Array.from({ length: 400 }, (_, i) => {
        // Mixed shapes: lone requests and batches carrying the same number several times.
        const n = (i % 5) + 1;
        return seedConsumes(
          pools[i % pools.length]!,
          Array.from({ length: n }, () => req),
          policy,
        );
      }),
    );
    const allowed = results.flat().filter((o) => o.allowed).length;
    expect(allowed).toBe(7);
    const { row } = await lookupPhone(pool, req.hash);
    expect(row!.calls).toHaveLength(7);
    expect(row!.deniedTotal).toBe(results.flat().length - 7);
  });

  it('concurrent batches over overlapping numbers in any order neither deadlock nor overshoot', async () => {
    const numbers = Array.from({ length: 12 }, () => freshNumber().req);
    const policy = makeLogPolicy([{ id: 'phone', limit: 3, windowMs: HOUR }]);
    const pools = Array.from({ length: 3 }, () => createPool({ url: db.url, max: 4 }));
    extraPools.push(...pools);
    let seed = 7;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
    const results = await Promise.all(
      Array.from({ length: 120 }, (_, i) => {
        const batch = Array.from({ length: 1 + rand(20) }, () => numbers[rand(numbers.length)]!);
        return seedConsumes(pools[i % pools.length]!, batch, policy).then((out) => out.map((o, j) => ({ hash: batch[j]!.hash, allowed: o.allowed })));
      }),
    );
    const allowedPerNumber = new Map<string, number>();
    for (const r of results.flat()) if (r.allowed) allowedPerNumber.set(r.hash, (allowedPerNumber.get(r.hash) ?? 0) + 1);
    for (const n of numbers) {
      const requested = results.flat().filter((r) => r.hash === n.hash).length;
      expect(allowedPerNumber.get(n.hash) ?? 0).toBe(Math.min(3, requested));
    }
  });

  it('a long random run with a 300 ms window never admits more than max in any rolling window', async () => {
    const { req } = freshNumber();
    const windowMs = 300;
    const max = 3;
    const policy = makeLogPolicy([{ id: 'phone', limit: max, windowMs }]);
    const pools = Array.from({ length: 3 }, () => createPool({ url: db.url, max: 4 }));
    extraPools.push(...pools);
    const allowedAt: number[] = [];
    const deadline = Date.now() + 2_500;
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const worker = async (p: Pool) => {
      while (Date.now() < deadline) {
        const out = await seedConsumes(
          p,
          Array.from({ length: 1 + Math.floor(rand() * 3) }, () => req),
          policy,
        );
        for (const o of out) if (o.allowed) allowedAt.push(o.atMs);
        await new Promise((r) => setTimeout(r, rand() * 40));
      }
    };
    await Promise.all(pools.flatMap((p) => [worker(p), worker(p)]));
    allowedAt.sort((a, b) => a - b);
    // Enough traffic to have hit the limit many times over.
    expect(allowedAt.length).toBeGreaterThan(max * 3);
    for (let i = 0; i + max < allowedAt.length; i++) {
      expect(allowedAt[i + max]! - allowedAt[i]!, `calls ${i}..${i + max}`).toBeGreaterThanOrEqual(windowMs);
    }
  });

  it('lets the next call through once the oldest leaves the window', async () => {
    const { req } = freshNumber();
    const policy = makeLogPolicy([{ id: 'phone', limit: 1, windowMs: 250 }]);
    // A test clock for the database (p_now): the window passes without waiting for it.
    const t0 = 2_000_000_000_000;
    const [first] = await seedConsumes(pool, [req], policy, t0);
    const [second] = await seedConsumes(pool, [req], policy, t0 + 10);
    expect([first!.allowed, second!.allowed]).toEqual([true, false]);
    const d = evaluate(second!.log, second!.atMs, policy);
    expect(d.resetTime).toBe(first!.atMs + 250);
    const [early] = await seedConsumes(pool, [req], policy, d.resetTime - 1);
    expect(early!.allowed).toBe(false);
    const [third] = await seedConsumes(pool, [req], policy, d.resetTime);
    expect(third!.allowed).toBe(true);
  });
});

describe('peek, reset, stats, hottest', () => {
  let policy: LogPolicy;
  beforeAll(() => {
    policy = twoPerHour;
  });

  it('peek reads without changing anything', async () => {
    const { req } = freshNumber();
    const before = await peekState(pool, [req.hash], []);
    expect(before.numbers.get(req.hash)).toBeUndefined();
    await seedConsumes(pool, [req], policy);
    const after = await peekState(pool, [req.hash], []);
    expect(after.numbers.get(req.hash)?.log).toHaveLength(1);
    const again = await peekState(pool, [req.hash], []);
    expect(again.numbers.get(req.hash)).toEqual(after.numbers.get(req.hash));
  });

  it('reset clears usage, writes an audit row and notifies listeners', async () => {
    const { req } = freshNumber();
    await seedConsumes(pool, [req, req, req], policy);
    const listener = await pool.connect();
    const notes: string[] = [];
    listener.on('notification', (n) => notes.push(n.payload ?? ''));
    await listener.query('LISTEN ratelimit_reset');
    try {
      const out = await resetPhone(pool, req.hash, 'alice@support', 'customer called', policy);
      expect(out).toMatchObject({ existed: true, previousCount: 2 });
      const { row, lastReset } = await lookupPhone(pool, req.hash);
      expect(row).toMatchObject({ calls: [], callCount: 0, deniedInWindow: 0 });
      expect(lastReset).toMatchObject({ resetBy: 'alice@support', reason: 'customer called', previousCount: 2 });
      const [next] = await seedConsumes(pool, [req], policy);
      expect(next!.allowed).toBe(true);
      await vi.waitFor(() => expect(notes).toContain(req.hash));
    } finally {
      await listener.query('UNLISTEN *');
      listener.release();
    }
  });

  it('reset of an unknown number records the audit row and reports nothing cleared', async () => {
    const { req } = freshNumber();
    const out = await resetPhone(pool, req.hash, 'bob', null, policy);
    expect(out).toMatchObject({ existed: false, previousCount: 0 });
    const { lastReset, row } = await lookupPhone(pool, req.hash);
    expect(row).toBeNull();
    expect(lastReset).toMatchObject({ resetBy: 'bob', reason: null });
  });

  it('stats and hottest count what happened, by region', async () => {
    const isolated = await createTestDatabase();
    const p = createPool({ url: isolated.url, max: 2 });
    try {
      await migrate(p);
      const us = freshNumber().req;
      const gbE164 = '+442079460958';
      const gb = { hash: hashPhone(gbE164, KEY), region: 'GB', masked: maskPhone(gbE164) };
      const fictional = { hash: hashPhone('+15555550100', KEY), region: undefined, masked: maskPhone('+15555550100') };
      await seedConsumes(p, [us, us, us, us, gb, fictional], policy);
      const s = await readStats(p, policy);
      expect(s).toMatchObject({ tracked: 3, trackedEstimated: false, active: 3, atLimit: 1, calls: 4, denials: 2 });
      expect(s.regions).toEqual([
        { region: 'US', active: 1, atLimit: 1, calls: 2, denials: 2 },
        { region: 'GB', active: 1, atLimit: 0, calls: 1, denials: 0 },
        { region: 'unknown', active: 1, atLimit: 0, calls: 1, denials: 0 },
      ]);
      const hot = await hottestNumbers(p, policy, 10);
      // The stored mask is the number's 1,000-number range (+1415555 1xxx), nothing more.
      expect(hot.rows[0]).toMatchObject({ hash: us.hash, masked: '+14155551•••', deniedInWindow: 2 });
      expect(hot.rows).toHaveLength(3);
    } finally {
      await p.end();
      await isolated.drop();
    }
  });

  it('an empty database has zero stats', async () => {
    const empty = await createTestDatabase();
    const p = createPool({ url: empty.url, max: 1 });
    try {
      await migrate(p);
      expect(await readStats(p, policy)).toMatchObject({ tracked: 0, active: 0, atLimit: 0, calls: 0, denials: 0, resets: 0, regions: [] });
      expect((await hottestNumbers(p, policy, 5)).rows).toEqual([]);
    } finally {
      await p.end();
      await empty.drop();
    }
  });
});
