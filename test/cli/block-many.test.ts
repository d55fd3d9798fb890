// One-command response (issue 20): `block --prefix A B C` is one transaction and one change
// announcement; `block --top range N` blocks the ranges furthest above normal (what top lists
// first); `--dry-run` changes nothing; bad input is a usage error before any connection.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { countryPrefix } from '../../src/core/traffic.js';
import { createTestDatabase } from '../helpers/fixture.js';
import { cli } from './run.js';

const MINUTE = 60_000;
let db: { url: string; drop(): Promise<void> };
let pool: Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  // The admin commands refuse an uninitialised database.
  const first = await cli(['db', 'init'], db.url);
  expect(first.code, first.stderr).toBe(0);
  pool = createPool({ url: db.url, max: 2 });
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

async function listVersion(): Promise<number> {
  const { rows } = await pool.query<{ version: number }>(`SELECT version FROM rate_limit_changes WHERE name = 'lists'`);
  return rows[0]?.version ?? 0;
}

describe('block several prefixes at once', () => {
  it('stores them all in one change, audited each, and list shows them', async () => {
    const before = await listVersion();
    const r = await cli(['block', '--prefix', '+4477009', '+4477008', '+234', '--for', '1h', '--reason', 'pumping'], db.url);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/3 prefixes blocked until .* in one change/);
    expect(await listVersion()).toBe(before + 1);
    const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM rate_limit_audit WHERE action = 'list_block'`);
    expect(rows[0]!.n).toBe(3);
    const list = await cli(['list', '--json'], db.url);
    const entries = (JSON.parse(list.stdout) as { entries: Array<{ target: string; reason: string }> }).entries;
    expect(entries.map((e) => e.target).sort()).toEqual(['+234', '+4477008', '+4477009']);
  });

  it('refuses a bad prefix, --top with --prefix, and a bad --top, as usage errors', async () => {
    expect((await cli(['block', '--prefix', '+4477009', 'nope'], db.url)).code).toBe(2);
    expect((await cli(['block', '--prefix', '+1', '+2', '--top', 'range', '2'], db.url)).code).toBe(2);
    expect((await cli(['block', '--top', 'range'], db.url)).code).toBe(2);
    expect((await cli(['block', '--top', 'planet', '2'], db.url)).code).toBe(2);
    expect((await cli(['block', '--top', 'range', '0'], db.url)).code).toBe(2);
  });
});

describe('block --top', () => {
  it('blocks the ranges furthest above normal, skipping blocked ones; --dry-run changes nothing', async () => {
    await cli(['unlist', '--prefix', '+4477009'], db.url);
    await cli(['unlist', '--prefix', '+4477008'], db.url);
    const { rows } = await pool.query<{ now_ms: string }>(`SELECT (extract(epoch FROM now()) * 1000)::bigint::text AS now_ms`);
    const nowMs = Number(rows[0]!.now_ms);
    let i = 0;
    const add = (region: string, masked: string, agoMs: number) =>
      pool.query(
        `INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked, calls, last_call_at) VALUES ($1, 0, $2, $3, ARRAY[$4::bigint], $4::bigint)`,
        [`b${i++}`, region, masked, nowMs - agoMs],
      );
    for (let k = 0; k < 30; k++) await add('GB', '+4477009•••', MINUTE);
    for (let k = 0; k < 20; k++) await add('GB', '+4477005•••', MINUTE);
    for (let k = 0; k < 10; k++) await add('GB', '+4477001•••', MINUTE);
    for (let k = 0; k < 5; k++) await add('US', `+1415555${k}•••`, MINUTE);

    const dry = await cli(['block', '--top', 'range', '2', '--dry-run'], db.url);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^\+4477009 +\+4477009••• \(GB\) 30 numbers/m);
    expect(dry.stdout).toMatch(/^\+4477005 /m);
    expect(dry.stdout).toContain('--dry-run: nothing changed');
    expect((await cli(['list', '--json'], db.url)).stdout).not.toContain('+4477009');

    const r = await cli(['block', '--top', 'range', '2', '--for', '1h', '--json'], db.url);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { entries: Array<{ target: string; expiresAt: string; reason: string }> };
    expect(out.entries.map((e) => e.target).sort()).toEqual(['+4477005', '+4477009']);
    expect(out.entries[0]!.reason).toBe('block --top range 2');
    // Again: the next hottest, not the same two.
    const next = await cli(['block', '--top', 'range', '1', '--dry-run'], db.url);
    expect(next.stdout).toMatch(/^\+4477001 /m);
  });

  it('turns a country into its calling code only when no other country shares it', () => {
    expect(countryPrefix('NG')).toEqual({ prefix: '+234' });
    expect(countryPrefix('GB').why).toMatch(/\+44 is shared with .*JE/);
    expect(countryPrefix('US').why).toMatch(/\+1 is shared/);
  });
});
