// The fraud drill's simulator (bench/drill/traffic.ts): the same seed gives the same day, and its
// legitimate traffic has the shape the drill states (BENCHMARKS.md, *Fraud drill*).
import { describe, expect, it } from 'vitest';
import { normalizePhoneWithType } from '../../src/core/phone.js';
import { rangeLabel } from '../../src/core/decision-id.js';
import { ATTACK_PLAN, simulate, type SimCall } from '../../bench/drill/traffic.js';

const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;

describe('drill traffic', () => {
  const day = simulate({ seed: 19 });
  const legit = day.calls.filter((c) => c.source === 'legit');
  const of = (source: SimCall['source']) => day.calls.filter((c) => c.source === source);

  it('is the same for the same seed and differs for another', () => {
    const short = { seed: 7, durationMs: 3 * HOUR_MS };
    expect(simulate(short)).toEqual(simulate(short));
    const other = simulate({ ...short, seed: 8 });
    expect(other.calls.map((c) => c.phone)).not.toEqual(simulate(short).calls.map((c) => c.phone));
  });

  it('is in order of arrival within the day', () => {
    for (let i = 1; i < day.calls.length; i++) expect(day.calls[i]!.atMs).toBeGreaterThanOrEqual(day.calls[i - 1]!.atMs);
    expect(day.calls.map((c) => c.seq)).toEqual(day.calls.map((_, i) => i));
    expect(day.calls.at(-1)!.atMs).toBeLessThan(day.durationMs);
  });

  it('converts about 70% of legitimate calls, with outcomes after realistic delays', () => {
    const converted = legit.filter((c) => c.converted);
    expect(converted.length / legit.length).toBeGreaterThan(0.67);
    expect(converted.length / legit.length).toBeLessThan(0.73);
    for (const c of converted) {
      if (c.channel === 'sms') {
        expect(c.outcome?.outcome).toBe('verified');
        expect(c.outcome!.reportAfterMs).toBeGreaterThanOrEqual(MINUTE_MS);
        expect(c.outcome!.reportAfterMs).toBeLessThanOrEqual(5 * MINUTE_MS);
      } else {
        expect(c.outcome?.outcome).toBe('answered');
        expect(c.outcome!.durationMs).toBeGreaterThanOrEqual(30_000);
        expect(c.outcome!.durationMs).toBeLessThanOrEqual(5 * MINUTE_MS);
      }
    }
    // Unconverted calls never report a converting outcome.
    for (const c of legit.filter((x) => !x.converted)) {
      expect(c.outcome?.outcome !== 'verified' && !(c.outcome?.outcome === 'answered' && c.outcome.durationMs! >= 10_000)).toBe(true);
    }
  });

  it('calls mostly one number once, retries some, in many countries, partly through shared addresses', () => {
    const perNumber = new Map<string, number>();
    for (const c of legit) perNumber.set(c.phone, (perNumber.get(c.phone) ?? 0) + 1);
    const once = [...perNumber.values()].filter((n) => n === 1).length;
    // Retries and returning users make the rest.
    expect(once / perNumber.size).toBeGreaterThan(0.7);
    expect([...perNumber.values()].some((n) => n >= 3)).toBe(true);
    expect(new Set(legit.map((c) => c.country)).size).toBeGreaterThanOrEqual(20);
    const perIp = new Map<string, number>();
    for (const c of legit) perIp.set(c.ip, (perIp.get(c.ip) ?? 0) + 1);
    expect([...perIp.values()].filter((n) => n >= 20).length).toBeGreaterThan(10);
    expect(legit.some((c) => c.ip.includes(':'))).toBe(true);
    for (const c of legit.slice(0, 500)) {
      const t = normalizePhoneWithType(c.phone);
      expect(t.region).toBe(c.country);
      expect(['mobile', 'fixed_line_or_mobile']).toContain(t.type);
    }
  });

  it('has each attack as planned', () => {
    const sweep = of('sweep');
    expect(sweep).toHaveLength(ATTACK_PLAN.sweep.calls);
    // Consecutive numbers, each from its own address.
    for (let i = 1; i < sweep.length; i++) expect(BigInt(sweep[i]!.phone.slice(1)) - BigInt(sweep[i - 1]!.phone.slice(1))).toBe(1n);
    expect(new Set(sweep.map((c) => c.ip)).size).toBe(sweep.length);
    expect(sweep.every((c) => normalizePhoneWithType(c.phone).region === 'UZ')).toBe(true);
    expect(of('premium').every((c) => normalizePhoneWithType(c.phone).type === 'premium_rate')).toBe(true);
    expect(new Set(of('victim').map((c) => c.phone)).size).toBe(1);
    const slow = of('slow');
    // Never two calls in one range: below any per-range threshold.
    expect(new Set(slow.map((c) => rangeLabel(c.phone))).size).toBe(slow.length);
    expect(slow.every((c) => normalizePhoneWithType(c.phone).type === 'mobile')).toBe(true);
  });
});
