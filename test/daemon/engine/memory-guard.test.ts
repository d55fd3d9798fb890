// The in-memory fallback (src/daemon/engine/memory.ts) decides #19's groups as the model does:
// sweep and conversion counters, automatic range blocks that escalate, block_after's level,
// safe numbers; and it takes a converted call back from its counters (removeCall).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MemoryState } from '../../../src/daemon/engine/memory.js';
import { EMPTY_BUCKETS } from '../../../src/core/policy/aggregate.js';
import { applicableCounters, counterMapKey, isSafe, type ConversionState } from '../../../src/core/policy/counters.js';
import { decideConsume, decisionPolicy, EMPTY_NUMBER, type DecideResult, type NumberState } from '../../../src/core/policy/decide.js';
import { AUTO_BLOCK_RULE, type Buckets, type Policy } from '../../../src/core/policy/types.js';
import { policy as makePolicy, rule } from '../../helpers/policy.js';

const NUMBERS = [
  { e164: '+14155550101', region: 'US' },
  { e164: '+14155550102', region: 'US' },
  { e164: '+14155550103', region: 'US' },
  { e164: '+14155550777', region: 'US' },
  { e164: '+442079460958', region: 'GB' },
] as const;

const sweep = rule('sweep', 2, 400, false, '', 'prefix');
const unconverted = rule('conversion', 3, 300, false, '', 'prefix');
const GUARD: Policy = makePolicy({
  number: [rule('number', 2, 100)],
  blockAfter: { denials: 2, withinMs: 200, forMs: 1_000 },
  conversion: {
    answeredAtLeastMs: 10_000,
    pendingAfterMs: 60_000,
    prefix: { digits: 4, rules: [unconverted] },
    country: { rules: [rule('conversion', 4, 500, true, '', 'country')], baseline: undefined },
  },
  sweep: { digits: 4, rules: [sweep] },
  blocks: { escalateMs: [150, 300, 600], escalate: ['150ms', '300ms', '600ms'], decayMs: 1_000 },
  // +14155550777 is safe.
  safe: { prefixes: ['+1415555077', '+1999'] },
});
const ENGAGED: ConversionState = { engaged: true, baselineLimits: new Map() };

function inputFor(n: number, allowlisted: boolean) {
  const num = NUMBERS[n]!;
  const safe = allowlisted || isSafe(GUARD, num.e164);
  return { counters: applicableCounters(GUARD, num.e164, num.region, { conversion: ENGAGED, safe }), allowlisted, safe };
}

describe('MemoryState with conversion, sweep, blocks and safe numbers', () => {
  it('decides as decideConsume does, blocks and levels included (property)', () => {
    const dp = decisionPolicy(GUARD);
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            n: fc.integer({ min: 0, max: NUMBERS.length - 1 }),
            allowlisted: fc.integer({ min: 0, max: 19 }).map((x) => x < 2),
            advanceMs: fc.integer({ min: 0, max: 60 }),
          }),
          { maxLength: 150 },
        ),
        (seq) => {
          const memory = new MemoryState(100, 100);
          const numbers = new Map<string, NumberState>();
          const counters = new Map<string, Buckets>();
          let now = 1_000_000;
          const seen: DecideResult[] = [];
          for (const step of seq) {
            now += step.advanceMs;
            const hash = NUMBERS[step.n]!.e164;
            const input = inputFor(step.n, step.allowlisted);
            const want = decideConsume(
              { number: numbers.get(hash) ?? EMPTY_NUMBER, buckets: input.counters.map((c) => counters.get(counterMapKey(c.rule.id, c.key)) ?? EMPTY_BUCKETS) },
              input,
              dp,
              now,
            );
            numbers.set(hash, want.state.number);
            input.counters.forEach((c, i) => counters.set(counterMapKey(c.rule.id, c.key), want.state.buckets[i]!));
            const got = memory.consume(hash, input, dp, now);
            expect(got).toEqual(want.result);
            seen.push(got);
          }
          // The safe number is never denied by a range block, and never blocked by block_after.
          seq.forEach((step, i) => {
            if (NUMBERS[step.n]!.e164 === '+14155550777') expect([AUTO_BLOCK_RULE, 'number:block_after']).not.toContain(seen[i]!.rule);
          });
        },
      ),
      { numRuns: 200 },
    );
  });

  it('blocks a range on a sweep denial and escalates while the attack goes on', () => {
    const dp = decisionPolicy(GUARD);
    const memory = new MemoryState(100, 100);
    const consume = (n: number, at: number) => memory.consume(NUMBERS[n]!.e164, inputFor(n, false), dp, at);
    expect(consume(0, 0).allowed).toBe(true);
    expect(consume(1, 10).allowed).toBe(true);
    expect(consume(2, 20)).toMatchObject({ allowed: false, rule: sweep.id, reason: 'sweep_rate_limit_exceeded' });
    // Blocked 150 ms (level 1): even the numbers already counted are denied.
    expect(consume(0, 30)).toMatchObject({ allowed: false, rule: AUTO_BLOCK_RULE, reason: 'sweep_rate_limit_exceeded', blockedBy: sweep.id });
    expect(consume(0, 30).aggregate?.retryAfterMs).toBe(140);
    // The safe number in the same range is not.
    expect(consume(3, 40).allowed).toBe(true);
    // After the block: a third distinct number trips it again, one step up (300 ms).
    expect(consume(2, 170)).toMatchObject({ rule: sweep.id });
    expect(consume(1, 180).aggregate?.resetTime).toBe(470);
  });

  it('takes a converted call back from its unconverted counters (removeCall), and keeps blocks it learns', () => {
    const dp = decisionPolicy(GUARD);
    const memory = new MemoryState(100, 100);
    const input = inputFor(0, false);
    const conv = input.counters.filter((c) => c.rule.group === 'conversion');
    expect(conv.map((c) => c.rule.id)).toEqual([unconverted.id, 'conversion:country:500ms']);
    expect(memory.consume(NUMBERS[0].e164, input, dp, 0).allowed).toBe(true);
    expect(memory.consume(NUMBERS[1].e164, inputFor(1, false), dp, 110).allowed).toBe(true);
    expect(memory.consume(NUMBERS[0].e164, input, dp, 120).allowed).toBe(true);
    // Three unconverted calls in the range: the fourth is denied...
    expect(memory.consume(NUMBERS[1].e164, inputFor(1, false), dp, 130)).toMatchObject({ rule: unconverted.id, reason: 'conversion_rate_limit_exceeded' });
    // ...and blocked; a converted outcome for the first call takes it back but the block stays.
    expect(memory.removeCall(conv, 0, 140)).toBe(2);
    expect(memory.removeCall(conv, 999_999, 140)).toBe(0); // no call that late: nothing to take back
    expect(memory.consume(NUMBERS[1].e164, inputFor(1, false), dp, 150)).toMatchObject({ rule: AUTO_BLOCK_RULE, reason: 'conversion_rate_limit_exceeded' });
    // What the database says of a counter replaces memory's, block included (`unlist` lifts blocks there).
    const c = conv[0]!;
    memory.learnCounter(c, { ts: [140], n: [3], block: { untilMs: 160, level: 1 } });
    expect(memory.check(NUMBERS[1].e164, inputFor(1, false), dp, 155)).toMatchObject({ rule: AUTO_BLOCK_RULE });
    expect(memory.check(NUMBERS[1].e164, inputFor(1, false), dp, 165)).toMatchObject({ rule: unconverted.id });
  });
});
