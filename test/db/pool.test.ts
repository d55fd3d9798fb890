// The pool's connections run without JIT (src/db/pool.ts): a misestimated plan once spent ~1 s
// of `stats`'s 1.2 s compiling. Checked on a real server, for every connection the pool opens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { createTestDatabase } from '../helpers/fixture.js';

let db: { url: string; drop(): Promise<void> };
let pool: Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ url: db.url, max: 3 });
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

describe('createPool', () => {
  it('turns JIT off on each connection it opens', async () => {
    const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
    try {
      const settings = await Promise.all(clients.map((c) => c.query<{ jit: string }>('SHOW jit')));
      expect(settings.map((r) => r.rows[0]!.jit)).toStrictEqual(['off', 'off', 'off']);
      // And the server's default is untouched: a plain connection outside the pool still has it on.
      const { rows } = await clients[0]!.query<{ reset_val: string }>(`SELECT reset_val FROM pg_settings WHERE name = 'jit'`);
      expect(rows[0]!.reset_val).toBe('on');
    } finally {
      clients.forEach((c) => c.release());
    }
  });
});
