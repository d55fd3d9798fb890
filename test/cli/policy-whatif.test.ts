// What-if before apply (issue 20): the shipped example's country allow-list against an app that
// serves 15 countries. Replayed over the last hour, it must say it would deny about 40% of real
// calls, by country; `policy apply` must warn before storing it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createPool, type Pool } from '../../src/db/pool.js';
import { replayPolicy } from '../../src/core/policy/whatif.js';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { createTestDatabase } from '../helpers/fixture.js';
import { cli } from './run.js';

const EXAMPLE = join(import.meta.dirname, '..', '..', 'docs', 'examples', 'policy.yaml');
const MINUTE = 60_000;
// The example's allow list, and six countries the app also serves.
const LISTED = ['US', 'CA', 'GB', 'IE', 'FR', 'DE', 'ES', 'IT', 'NL'];
const UNLISTED = ['MX', 'BR', 'IN', 'AU', 'JP', 'PH'];

let db: { url: string; drop(): Promise<void> };
let pool: Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  expect((await cli(['db', 'init'], db.url)).code).toBe(0);
  pool = createPool({ url: db.url, max: 2 });
  const { rows } = await pool.query<{ now_ms: string }>(`SELECT (extract(epoch FROM now()) * 1000)::bigint::text AS now_ms`);
  const nowMs = Number(rows[0]!.now_ms);
  // Each listed country: 10 numbers; each unlisted: 10 numbers: 60 of 150 numbers (40%) are outside
  // the list. One call each over the last hour, and one number per country also active 3 h ago.
  let i = 0;
  for (const country of [...LISTED, ...UNLISTED]) {
    for (let k = 0; k < 10; k++) {
      const t = nowMs - (5 + ((i * 7) % 50)) * MINUTE;
      await pool.query(
        `INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked, calls, last_call_at) VALUES ($1, 0, $2, $3, ARRAY[$4::bigint], $4::bigint)`,
        [`w${i++}`, country, `+99${String(i).padStart(6, '0')}•••`, t],
      );
    }
  }
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe('policy check --against', () => {
  it("reports the example policy trap: its allow list would deny 40% of last hour's calls, by country", async () => {
    const r = await cli(['policy', 'check', EXAMPLE, '--against', '1h', '--json'], db.url);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      calls: number;
      denied: number;
      rules: Array<{ rule: string; denied: number; byCountry: Record<string, number> }>;
      notReconstructed: string[];
    };
    expect(out.calls).toBe(150);
    const dest = out.rules.find((o) => o.rule === 'destination:country')!;
    expect(dest.denied).toBe(60);
    expect(Object.keys(dest.byCountry).sort()).toEqual([...UNLISTED].sort());
    expect(out.notReconstructed.join('\n')).toMatch(/number types are not stored/);
    expect(out.notReconstructed.join('\n')).toMatch(/client addresses are not stored/);

    const text = await cli(['policy', 'check', EXAMPLE, '--against', '1h'], db.url);
    expect(text.stdout).toMatch(/destination:country +│? *60 +│? *40\.0%/);
    expect(text.stdout).toMatch(/WARNING: that is more than 3% of real traffic/);
  });

  it('policy apply warns about the country list before storing it', async () => {
    const r = await cli(['policy', 'apply', EXAMPLE], db.url);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: destinations\.countries would have denied 40\.0% of the last day's active numbers \((MX|BR|IN|AU|JP|PH)/);
  });

  it('refuses a bad --against as a usage error', async () => {
    expect((await cli(['policy', 'check', EXAMPLE, '--against', 'soon'], db.url)).code).toBe(2);
    expect((await cli(['policy', 'check', EXAMPLE, '--against', '2d'], db.url)).code).toBe(2);
  });
});

describe('replayPolicy', () => {
  it('counts a denied call against nothing else, and replays limits in time order', () => {
    const parsed = parsePolicyFile('number:\n  limits: [{limit: 2, window: 1h}]\nprefix:\n  digits: 3\n  limits: [{limit: 3, window: 1h}]\n');
    if (!parsed.ok) throw new Error('bad test policy');
    const calls = [
      ...[1, 2, 3].map((t) => ({ number: 'a', country: 'GB', range: '+4479112301•••', t })),
      ...[4, 5, 6].map((t) => ({ number: `b${t}`, country: 'GB', range: '+4479112301•••', t })),
      { number: 'c', country: 'GB', range: null, t: 7 },
    ];
    const r = replayPolicy(parsed.policy, calls);
    // a's third call: number:1h. Its denial spends nothing, so the range has 2+1 = 3 by t=4: b5, b6 denied by prefix.
    expect(r.rules.map((o) => [o.rule, o.denied])).toEqual([
      ['prefix:1h', 2],
      ['number:1h', 1],
    ]);
    expect(r.denied).toBe(3);
    expect(r.notReconstructed.join('\n')).toMatch(/1 calls to numbers whose stored mask names no range/);
  });
});
