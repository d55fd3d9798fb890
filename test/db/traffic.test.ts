// Traffic by country and by range with no rule (src/db/traffic.ts, src/core/traffic.ts): a day of
// normal traffic over three countries, then a pump walking two GB ranges in the last minutes.
// The movers must name GB first and then exactly its two ranges, from masks alone.
import { describe, expect, it } from 'vitest';
import { readTrafficBaseline, readTrafficNow } from '../../src/db/traffic.js';
import { hottestNumbers } from '../../src/db/stats.js';
import { movers, rangePrefix } from '../../src/core/traffic.js';
import { DEFAULT_PRICES, parsePrices } from '../../src/core/prices.js';
import { migratedTestDatabase } from '../helpers/fixture.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const db = migratedTestDatabase({ max: 4 });

let seq = 0;
async function number(region: string, masked: string, agoMs: number[], nowMs: number): Promise<void> {
  const calls = agoMs.map((a) => nowMs - a).sort((a, b) => a - b);
  await db.pool.query(`INSERT INTO phone_rate_limits (phone_hash, window_start, region, phone_masked, calls, last_call_at) VALUES ($1, 0, $2, $3, $4, $5)`, [
    `t${seq++}`,
    region,
    masked,
    calls,
    calls.at(-1),
  ]);
}

describe('traffic by country and range', () => {
  it('ranks the pumped country and its ranges above normal, and counts old masks by country only', async () => {
    const { rows } = await db.pool.query<{ now_ms: string }>(`SELECT (extract(epoch FROM now()) * 1000)::bigint::text AS now_ms`);
    const nowMs = Number(rows[0]!.now_ms);
    // Normal: every 20 minutes over the last day, 6 US numbers, 3 FR, 1 GB, each in its own range.
    for (let ago = 20 * MINUTE; ago < 23 * HOUR; ago += 20 * MINUTE) {
      for (let i = 0; i < 6; i++) await number('US', `+1415555${i}•••`, [ago], nowMs);
      for (let i = 0; i < 3; i++) await number('FR', `+3361234${i}•••`, [ago], nowMs);
      await number('GB', '+4420794•••', [ago], nowMs);
    }
    // Now: the same normal mix, plus a pump over two GB mobile ranges, plus a number with an old mask.
    for (let i = 0; i < 6; i++) await number('US', `+1415555${i}•••`, [2 * MINUTE], nowMs);
    for (let i = 0; i < 3; i++) await number('FR', `+3361234${i}•••`, [2 * MINUTE], nowMs);
    for (let i = 0; i < 40; i++) await number('GB', i % 2 === 0 ? '+4477009•••' : '+4477008•••', [MINUTE + i * 1000], nowMs);
    await number('US', '+1415•••••71', [MINUTE], nowMs);

    const now = await readTrafficNow(db.pool, 10 * MINUTE);
    const base = await readTrafficBaseline(db.pool, 24 * HOUR, 10 * MINUTE);
    expect(now.unranged).toBe(1);
    expect(now.countries.find((c) => c.key === 'GB')).toMatchObject({ numbers: 40, calls: 40 });
    expect(now.ranges.find((r) => r.key === '+4477009•••')).toMatchObject({ country: 'GB', numbers: 20 });
    expect(base.epochs).toBeGreaterThan(60);
    expect(base.countries.get('US')! / base.total).toBeCloseTo(0.6, 1);

    const ranked = movers(now, base, DEFAULT_PRICES, (kind, key) => kind === 'range' && key === '+4477008•••');
    expect(ranked[0]).toMatchObject({ kind: 'country', key: 'GB', numbers: 40 });
    expect(ranked[0]!.ratio).toBeGreaterThan(5);
    expect(ranked[1]).toMatchObject({ kind: 'range', key: '+4477009•••', ratio: Infinity, blocked: false });
    // A blocked range goes to the bottom, marked.
    expect(ranked.at(-1)).toMatchObject({ key: '+4477008•••', blocked: true });
    expect(rangePrefix('+4477009•••')).toBe('+4477009');
    // 40 calls in 10 minutes at the default 0.05 a consume.
    expect(ranked[0]!.spendPerMin).toBeCloseTo(0.2, 5);
    const priced = movers(now, base, parsePrices('unit=sms,currency=GBP,default=0.01,GB=0.5', []), () => false);
    expect(priced.find((m) => m.key === 'GB')!.spendPerMin).toBeCloseTo(2, 5);
    // top's hottest numbers leave out blocked ranges, so a blocked pump does not fill the list.
    const hot = await hottestNumbers(db.pool, 10 * MINUTE, 100, 'calls', ['+4477009', '+4477008']);
    expect(hot.rows.some((r) => r.masked?.startsWith('+447700'))).toBe(false);
    expect(hot.rows.some((r) => r.masked === '+1415•••••71')).toBe(true);
    expect((await hottestNumbers(db.pool, 10 * MINUTE, 100, 'calls')).rows.some((r) => r.masked?.startsWith('+4477009'))).toBe(true);
    // US is below its normal share now: at the bottom of the unblocked keys, never above GB.
    expect(ranked.findIndex((m) => m.key === 'US')).toBeGreaterThan(2);
  });
});

describe('RATELIMIT_PRICES', () => {
  it('parses a table and reports every problem at once', () => {
    const problems: string[] = [];
    expect(parsePrices('unit=call,currency=EUR,default=0.2,GB=0.04', problems)).toMatchObject({
      unit: 'call',
      currency: 'EUR',
      defaultPrice: 0.2,
      countries: { GB: 0.04 },
      isDefault: false,
    });
    expect(problems).toEqual([]);
    parsePrices('unit=fax,GB=-1,gb=1,default=x', problems);
    expect(problems).toHaveLength(4);
    expect(parsePrices(undefined, [])).toBe(DEFAULT_PRICES);
  });
});
