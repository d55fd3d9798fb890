// The baseline mode's pure parts (bench/lib/ab.ts): what the environment and the command line
// select, the order the two sides run in, and the A/B table and targets built from their rows.
// Timing is the bench's business (`npm run bench`), not this file's.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ISSUE22_SCENARIOS,
  abOrder,
  noSlowerTarget,
  pairRatios,
  parseBaseline,
  parseBenchArgs,
  ratio,
  renderAbTable,
  runsOurCode,
  selectScenarios,
  withBaselineFigures,
  type AbPair,
} from '../../bench/lib/ab.js';
import type { Row } from '../../bench/lib/report.js';

function row(over: Partial<Row> & Pick<Row, 'name'>): Row {
  return {
    kind: 'ws',
    ratePerS: NaN,
    rateMinPerS: NaN,
    rateMaxPerS: NaN,
    subjectUsPerDecision: NaN,
    pgUsPerDecision: NaN,
    genUsPerDecision: NaN,
    totalUsPerDecision: NaN,
    p50Ms: NaN,
    p99Ms: NaN,
    p999Ms: NaN,
    subjectCpuPercent: NaN,
    pgCpuPercent: NaN,
    genCpuPercent: NaN,
    machineBusyPercent: NaN,
    foreignCpuPercent: NaN,
    walBytesPerDecision: NaN,
    peakRssMb: NaN,
    ratioVsRlf: NaN,
    allowedPercent: NaN,
    errors: 0,
    ...over,
  };
}

/** A pair whose runs are given as [baseline, subject] figures of total µs per decision and rate. */
function pair(name: string, runs: Array<{ base: [number, number]; subj: [number, number] }>, kind: Row['kind'] = 'ws'): AbPair {
  const mk = (us: number, rate: number) =>
    row({ name, kind, totalUsPerDecision: us, subjectUsPerDecision: us / 2, pgUsPerDecision: us / 2, ratePerS: rate, p50Ms: 1 });
  const baselineRuns = runs.map((r) => mk(...r.base));
  const subjectRuns = runs.map((r) => mk(...r.subj));
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  return {
    name,
    baseline: mk(med(runs.map((r) => r.base[0])), med(runs.map((r) => r.base[1]))),
    subject: mk(med(runs.map((r) => r.subj[0])), med(runs.map((r) => r.subj[1]))),
    baselineRuns,
    subjectRuns,
  };
}

describe('parseBaseline', () => {
  it('is off unless one of the two variables is set (blank counts as unset)', () => {
    expect(parseBaseline({})).toBeUndefined();
    expect(parseBaseline({ BENCH_BASELINE: '  ', BENCH_BASELINE_DIR: '' })).toBeUndefined();
  });

  it('takes a git ref as given and a directory relative to the working directory', () => {
    expect(parseBaseline({ BENCH_BASELINE: ' 8062936 ' })).toEqual({ kind: 'ref', ref: '8062936' });
    expect(parseBaseline({ BENCH_BASELINE: 'origin/main' })).toEqual({ kind: 'ref', ref: 'origin/main' });
    expect(parseBaseline({ BENCH_BASELINE_DIR: '../main' }, '/work/h-bench')).toEqual({ kind: 'dir', dir: path.resolve('/work/main') });
  });

  it('refuses both at once, and a ref git would read as an option or a range', () => {
    expect(() => parseBaseline({ BENCH_BASELINE: 'main', BENCH_BASELINE_DIR: '/tmp/x' })).toThrow(/not both/);
    for (const bad of ['--upload-pack=x', 'main..bench', 'main bench']) expect(() => parseBaseline({ BENCH_BASELINE: bad })).toThrow(/one git ref/);
  });
});

describe('parseBenchArgs', () => {
  it('reads the two selections and refuses anything else', () => {
    expect(parseBenchArgs([])).toEqual({ quick: false, issue22: false });
    expect(parseBenchArgs(['--issue22'])).toEqual({ quick: false, issue22: true });
    expect(parseBenchArgs(['--quick'])).toEqual({ quick: true, issue22: false });
    expect(() => parseBenchArgs(['--quick', '--issue22'])).toThrow(/give one/);
    expect(() => parseBenchArgs(['--isue22'])).toThrow(/unknown argument --isue22/);
  });
});

describe('selectScenarios', () => {
  const all = ['store rlf uniform 256', 'ws uniform 64', 'ws uniform 256', 'ws single 512', 'idle cpu'].map((name) => ({ name }));

  it("keeps the preset's scenarios in the bench's order, narrowed by BENCH_ONLY", () => {
    const preset = ['idle cpu', 'ws uniform 256', 'store rlf uniform 256'];
    expect(selectScenarios(all, { preset }).map((s) => s.name)).toEqual(['store rlf uniform 256', 'ws uniform 256', 'idle cpu']);
    expect(selectScenarios(all, { preset, only: /^ws/ }).map((s) => s.name)).toEqual(['ws uniform 256']);
    expect(selectScenarios(all, { only: /uniform/ }).map((s) => s.name)).toEqual(['store rlf uniform 256', 'ws uniform 64', 'ws uniform 256']);
    expect(selectScenarios(all, {})).toHaveLength(all.length);
  });

  it('refuses a preset naming a scenario the bench does not have', () => {
    expect(() => selectScenarios(all, { preset: ['ws uniform 256', 'ws uniform 1024'] })).toThrow(/ws uniform 1024/);
  });

  it("issue 22's preset names each scenario once, the full-policy one included", () => {
    expect(new Set(ISSUE22_SCENARIOS).size).toBe(ISSUE22_SCENARIOS.length);
    expect(ISSUE22_SCENARIOS).toEqual(expect.arrayContaining(['ws uniform 256', 'ws single 512', 'ws open 500/s', 'idle cpu', 'policy ws zipf 256']));
  });
});

describe('runsOurCode', () => {
  it('is true for the daemon and our store paths, false for the comparisons and ceilings', () => {
    for (const s of [
      { kind: 'ws' },
      { kind: 'http' },
      { kind: 'idle' },
      { kind: 'idlecpu' },
      { kind: 'store', system: 'ours' },
      { kind: 'policy', system: 'ours' },
    ]) {
      expect(runsOurCode(s), JSON.stringify(s)).toBe(true);
    }
    for (const s of [{ kind: 'store', system: 'rlf' }, { kind: 'store', system: 'upsert' }, { kind: 'policy', system: 'union' }, { kind: 'echo' }]) {
      expect(runsOurCode(s), JSON.stringify(s)).toBe(false);
    }
  });
});

describe('abOrder', () => {
  it('alternates A B B A so each side runs as often and neither always first', () => {
    expect(abOrder(1, true)).toEqual(['baseline', 'subject']);
    expect(abOrder(2, true)).toEqual(['baseline', 'subject', 'subject', 'baseline']);
    expect(abOrder(3, true)).toEqual(['baseline', 'subject', 'subject', 'baseline', 'baseline', 'subject']);
    for (const n of [1, 2, 3, 4, 5]) {
      const order = abOrder(n, true);
      expect(order.filter((s) => s === 'baseline')).toHaveLength(n);
      expect(order.filter((s) => s === 'subject')).toHaveLength(n);
    }
  });

  it('is the subject alone without a baseline, and refuses a count that is not a positive integer', () => {
    expect(abOrder(3, false)).toEqual(['subject', 'subject', 'subject']);
    for (const bad of [0, -1, 1.5, NaN]) expect(() => abOrder(bad, true)).toThrow(RangeError);
  });
});

describe('ratios and the A/B table', () => {
  it('divides the subject by the baseline, NaN where that means nothing', () => {
    expect(ratio(50, 100)).toBe(0.5);
    expect(ratio(1, 0)).toBeNaN();
    expect(ratio(NaN, 1)).toBeNaN();
  });

  it("pairs each side's i-th run with the other's", () => {
    const p = pair('ws uniform 256', [
      { base: [100, 1000], subj: [95, 1050] },
      { base: [110, 900], subj: [121, 880] },
    ]);
    expect(pairRatios(p, (r) => r.totalUsPerDecision)).toEqual([0.95, 1.1]);
    expect(pairRatios({ ...p, subjectRuns: p.subjectRuns.slice(0, 1) }, (r) => r.totalUsPerDecision)).toEqual([0.95]);
  });

  it('shows both sides with the ratios of rate and CPU per decision, and the per-pair spread', () => {
    const p = pair('ws uniform 256', [
      { base: [160, 7500], subj: [80, 15000] },
      { base: [160, 7500], subj: [88, 15000] },
    ]);
    const text = renderAbTable([p]);
    const cells = text
      .split('\n')
      .find((l) => l.startsWith('| ws uniform 256'))!
      .split('|')
      .map((c) => c.trim())
      .filter(Boolean);
    expect(cells.slice(0, 8)).toEqual(['ws uniform 256', '7,500', '15,000', '2.00×', '160.0', '88.0', '0.55×', '0.50–0.55']);
  });

  it('lists the idle rows (no decisions) under the table by their own figures', () => {
    const idle: AbPair = {
      name: 'idle 10000 ws',
      baseline: row({ name: 'idle 10000 ws', kind: 'idle', peakRssMb: 150 }),
      subject: row({ name: 'idle 10000 ws', kind: 'idle', peakRssMb: 120 }),
      baselineRuns: [row({ name: 'x', kind: 'idle', peakRssMb: 150 })],
      subjectRuns: [row({ name: 'x', kind: 'idle', peakRssMb: 120 })],
    };
    const cpu: AbPair = {
      name: 'idle cpu',
      baseline: row({ name: 'idle cpu', kind: 'idlecpu', subjectCpuPercent: 0.4, pgCpuPercent: 0.1 }),
      subject: row({ name: 'idle cpu', kind: 'idlecpu', subjectCpuPercent: 0.2, pgCpuPercent: 0.1 }),
      baselineRuns: [],
      subjectRuns: [],
    };
    const text = renderAbTable([idle, cpu]);
    expect(text).not.toContain('| scenario');
    expect(text).toContain('- idle 10000 ws: daemon RSS with them open 150.0 MB baseline, 120.0 MB this (0.80×; per pair 0.80–0.80)');
    expect(text).toContain('- idle cpu: daemon 4.0 ms CPU/s baseline, 2.0 ms/s this (0.50×)');
  });
});

describe('targets against a baseline', () => {
  it("puts the baseline's figure beside each line that matches, and leaves the others alone", () => {
    const subject = [
      { what: 'ws single 512 (99.9 % allowed): ≤ 40 µs', value: '35.0 µs', met: true },
      { what: 'no sequential scan', value: '0 scans', met: true },
      { what: 'only here', value: '1', met: false },
    ];
    const baseline = [
      { what: 'ws single 512 (98.1 % allowed): ≤ 40 µs', value: '50.0 µs', met: false },
      { what: 'no sequential scan', value: '0 scans', met: true },
      { what: 'something else', value: '2', met: true },
    ];
    expect(withBaselineFigures(subject, baseline)).toEqual([
      { what: 'ws single 512 (99.9 % allowed): ≤ 40 µs', value: '35.0 µs; baseline 50.0 µs', met: true },
      { what: 'no sequential scan', value: '0 scans', met: true },
      { what: 'only here', value: '1', met: false },
    ]);
  });

  it('judges "no slower" on CPU per decision within the tolerance, and says when it cannot', () => {
    expect(noSlowerTarget('policy ws zipf 256', undefined, 0.05).met).toBeUndefined();
    const within = pair('policy ws zipf 256', [{ base: [100, 10000], subj: [104, 9000] }]);
    const beyond = pair('policy ws zipf 256', [{ base: [100, 10000], subj: [106, 11000] }]);
    expect(noSlowerTarget('policy ws zipf 256', within, 0.05)).toMatchObject({ met: true, value: expect.stringMatching(/^1\.04× .*rate 0\.90×/) });
    expect(noSlowerTarget('policy ws zipf 256', beyond, 0.05).met).toBe(false);
  });
});
