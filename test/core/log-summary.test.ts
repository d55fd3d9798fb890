// The log summary the database sends instead of a number's log (issue #12): exact when short,
// and otherwise never letting the in-memory fallback allow a call the real log would deny.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { appendCall, ruleState } from '../../src/core/policy/log.js';
import { decideCheck, decideConsume, decisionPolicy, EMPTY_NUMBER, type NumberState } from '../../src/core/policy/decide.js';
import { EXACT_LOG_ENTRIES, expandLog, summarizeLog, summaryRuleState } from '../../src/core/policy/log-summary.js';
import { policy, rule } from '../helpers/policy.js';

const ascending = (maxLength: number) =>
  fc.array(fc.integer({ min: 0, max: 40 }), { maxLength, size: 'max' }).map((gaps) => {
    let t = 1_000;
    return gaps.map((g) => (t += g));
  });

describe('summarizeLog', () => {
  it('is the log itself up to 16 calls, else at most 16 runs that expand to a log as long, in order, never earlier, ending alike', () => {
    fc.assert(
      fc.property(ascending(400), (log) => {
        const s = summarizeLog(log);
        if (log.length <= EXACT_LOG_ENTRIES) {
          expect(s).toEqual({ calls: log, counts: null });
          return;
        }
        expect(s.calls.length).toBeLessThanOrEqual(EXACT_LOG_ENTRIES);
        expect(s.counts!.length).toBe(s.calls.length);
        const expanded = expandLog(s);
        expect(expanded).toHaveLength(log.length);
        expect(expanded.at(-1)).toBe(log.at(-1));
        expanded.forEach((t, i) => {
          expect(t).toBeGreaterThanOrEqual(log[i]!);
          if (i > 0) expect(t).toBeGreaterThanOrEqual(expanded[i - 1]!);
        });
        // Runs are equal but for the last, so deciding from them denies early by less than 1/16 of the log.
        expect(Math.max(...s.counts!)).toBe(Math.ceil(log.length / EXACT_LOG_ENTRIES));
      }),
      { numRuns: 300 },
    );
  });
});

describe('the fallback deciding from a summary', () => {
  const rulesArb = fc.uniqueArray(
    fc.record({
      limit: fc.integer({ min: 1, max: 80 }),
      windowMs: fc.integer({ min: 5, max: 60 }).map((x) => x * 50),
      shadow: fc.integer({ min: 0, max: 9 }).map((x) => x < 2),
    }),
    { minLength: 1, maxLength: 3, selector: (r) => r.windowMs },
  );
  // size 'max': fast-check's default size keeps arrays near 10 elements, too short to be summarized.
  const stepsArb = fc.array(fc.integer({ min: 0, max: 60 }), { minLength: 1, maxLength: 300, size: 'max' });

  it('never allows a call the real log would deny, so never more than a limit in any window (property)', () => {
    fc.assert(
      fc.property(rulesArb, stepsArb, stepsArb, (specs, before, during) => {
        const p = policy({ number: specs.map((r) => rule('number', r.limit, r.windowMs, r.shadow)) });
        const dp = decisionPolicy(p);
        const input = { counters: [], allowlisted: false };
        // The database's history: the exact model deciding a stream of consumes.
        let real: NumberState = EMPTY_NUMBER;
        const history: number[] = [];
        let now = 10_000;
        for (const gap of before) {
          now += gap;
          const out = decideConsume({ number: real, buckets: [] }, input, dp, now);
          real = out.state.number;
          if (out.result.allowed) history.push(out.result.atMs);
        }
        // The outage: memory decides from the summary; `exact` is the real log with what memory allowed.
        let memory: NumberState = { ...real, log: expandLog(summarizeLog(real.log)) };
        let exact = real.log;
        for (const gap of during) {
          now += gap;
          const truth = decideCheck({ number: { ...real, log: exact }, buckets: [] }, input, dp, now);
          const out = decideConsume({ number: memory, buckets: [] }, input, dp, now);
          memory = out.state.number;
          if (!truth.allowed) expect(out.result.allowed, `at ${now}`).toBe(false);
          if (!out.result.allowed) continue;
          history.push(out.result.atMs);
          exact = appendCall(exact, out.result.atMs, dp.number.log);
          for (const r of p.number.filter((x) => !x.shadow)) {
            expect(history.filter((t) => t > out.result.atMs - r.windowMs).length, r.id).toBeLessThanOrEqual(r.limit);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('summaryRuleState', () => {
  // The deny cache reads a number's state from its summary at every cached denial; it must say
  // exactly what the expanded log (what memory decides from) says, for any rule and instant.
  it('equals ruleState over the expanded log, for any summary, rule and instant', () => {
    const summaries = fc.oneof(
      ascending(400).map((log) => summarizeLog(log)),
      // Summaries as the database might send them, runs of any length (0 included).
      fc.array(fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 70 })), { maxLength: EXACT_LOG_ENTRIES }).map((runs) => {
        let t = 1_000;
        return { calls: runs.map(([g]) => (t += g)), counts: runs.map(([, n]) => n) };
      }),
    );
    fc.assert(
      fc.property(
        summaries,
        fc.integer({ min: 1, max: 1_200 }),
        fc.integer({ min: 1, max: 2_000 }),
        fc.integer({ min: 0, max: 20_000 }),
        (s, limit, windowMs, later) => {
          const r = { id: 'n', limit, windowMs };
          const nowMs = 1_000 + later;
          expect(summaryRuleState(s, nowMs, r)).toEqual(ruleState(expandLog(s), nowMs, r));
        },
      ),
      { numRuns: 1_000 },
    );
  });
});
