// bench/lib/profile.ts: how a daemon CPU profile's samples become µs per decision by category,
// baseline against this checkout (the "where the microseconds went" table).
import { describe, expect, it } from 'vitest';
import { categorize, categoryShares, compareProfiles, renderProfileComparison, type CpuProfile } from '../../bench/lib/profile.js';

const frame = (functionName: string, url = '') => ({ functionName, url });

describe('categorize', () => {
  it('puts a function where its code lives', () => {
    expect(categorize(frame('(garbage collector)'))).toBe('GC');
    expect(categorize(frame('(idle)'))).toBe('idle');
    expect(categorize(frame('parse', 'file:///w/node_modules/libphonenumber-js/build/parse.js'))).toBe('libphonenumber');
    expect(categorize(frame('sendFrame', 'file:///w/node_modules/ws/lib/sender.js'))).toBe('ws (frames)');
    expect(categorize(frame('parse', 'file:///w/node_modules/pg-protocol/dist/parser.js'))).toBe('pg driver');
    expect(categorize(frame('x', 'file:///w/node_modules/@scope/thing/index.js'))).toBe('other packages (@scope/thing)');
    expect(categorize(frame('flush', 'file:///w/dist/src/daemon/engine/batcher.js'))).toBe('engine and batcher');
    expect(categorize(frame('onMessage', 'file:///w/dist/src/daemon/transport/ws.js'))).toBe('daemon (transport, decider)');
    expect(categorize(frame('hashPhone', 'file:///w/dist/src/core/hash.js'))).toBe('core (phone, hash, policy)');
    expect(categorize(frame('writev'))).toBe('socket I/O');
    expect(categorize(frame('stringify'))).toBe('JSON');
    expect(categorize(frame('processTicksAndRejections', 'node:internal/process/task_queues'))).toBe('timers, ticks and promises');
    expect(categorize(frame('x', 'node:internal/url'))).toBe('other node internals');
  });
});

describe('categoryShares', () => {
  const profile: CpuProfile = {
    nodes: [
      { id: 1, callFrame: frame('(root)') },
      { id: 2, callFrame: frame('(idle)') },
      { id: 3, callFrame: frame('(garbage collector)') },
      { id: 4, callFrame: frame('parse', 'file:///w/node_modules/libphonenumber-js/a.js') },
    ],
    samples: [2, 3, 4, 4, 2, 4],
    timeDeltas: [1000, 100, 100, 100, 100, 200],
  };

  it('shares busy time (idle left out) by the time each sample stands for', () => {
    const shares = categoryShares(profile);
    expect([...shares.keys()].sort()).toEqual(['GC', 'libphonenumber']);
    expect(shares.get('GC')).toBeCloseTo(100 / 500);
    expect(shares.get('libphonenumber')).toBeCloseTo(400 / 500);
  });

  it('keeps only the samples inside the measured window when given one', () => {
    // Sample times: 1000 (idle), 1100 (GC), 1200, 1300 (libphonenumber), 1400 (idle), 1600 (libphonenumber).
    const timed = { ...profile, startTime: 0 };
    const shares = categoryShares(timed, { startUs: 1050, endUs: 1250 });
    expect(shares.get('GC')).toBeCloseTo(0.5);
    expect(shares.get('libphonenumber')).toBeCloseTo(0.5);
    expect(categoryShares(timed, { startUs: 1500, endUs: 2000 })).toEqual(new Map([['libphonenumber', 1]]));
  });

  it('counts samples when the profile has no time deltas', () => {
    const shares = categoryShares({ ...profile, timeDeltas: undefined });
    expect(shares.get('GC')).toBeCloseTo(1 / 4);
    expect(shares.get('libphonenumber')).toBeCloseTo(3 / 4);
  });
});

describe('compareProfiles', () => {
  const run = (side: 'baseline' | 'subject', n: number, us: number, shares: Record<string, number>) => ({
    meta: { scenario: 'ws uniform 256', side, run: n, daemonUsPerDecision: us },
    shares: new Map(Object.entries(shares)),
  });

  it("turns each run's shares into µs per decision and takes the median per side", () => {
    const [c] = compareProfiles(
      [
        run('baseline', 1, 100, { GC: 0.2, libphonenumber: 0.3, other: 0.5 }),
        run('baseline', 2, 80, { GC: 0.25, libphonenumber: 0.25, other: 0.5 }),
        run('subject', 1, 60, { GC: 0.1, libphonenumber: 0.05, other: 0.85 }),
        run('subject', 2, 50, { GC: 0.1, libphonenumber: 0.1, other: 0.8 }),
      ],
      3,
    );
    expect(c!.daemonUs).toEqual({ baseline: 90, subject: 55 });
    const row = (name: string) => c!.rows.find((r) => r.category === name)!;
    expect(row('GC').baseline).toBeCloseTo(20);
    expect(row('GC').subject).toBeCloseTo(5.5);
    expect(row('libphonenumber').baseline).toBeCloseTo(25);
    expect(row('libphonenumber').subject).toBeCloseTo(4);
    const text = renderProfileComparison(c!);
    expect(text).toContain('| GC | 20.0 | 5.5 | -14.5 |');
    expect(text).toContain('| **daemon total** | 90.0 | 55.0 | -35.0 |');
  });

  it('folds categories under the threshold on both sides into one line', () => {
    const [c] = compareProfiles([run('baseline', 1, 100, { GC: 0.5, tiny: 0.004, small: 0.003 }), run('subject', 1, 100, { GC: 0.5, tiny: 0.002 })], 1);
    expect(c!.rows.map((r) => r.category)).toEqual(['GC', 'everything else (2 categories)']);
    expect(c!.rows[1]!.baseline).toBeCloseTo(0.7);
    expect(c!.rows[1]!.subject).toBeCloseTo(0.2);
  });
});
