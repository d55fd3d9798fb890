// `ratelimit top --once` fits the size it is given (--rows/--cols, LINES/COLUMNS, the terminal)
// and keeps the live view's panel order: the aggregate panel is not pushed below 50 numbers.
import { describe, expect, it } from 'vitest';
import { renderFrameText } from '../../src/cli/top/frame.js';
import { onceSize } from '../../src/cli/top/command.js';
import { fixtureFrame } from './top-fixture.js';

describe('top --once size', () => {
  it('takes --rows/--cols over LINES/COLUMNS over the terminal, and no height without any', () => {
    expect(onceSize({ rows: '30', cols: '100' }, { LINES: '24', COLUMNS: '80' }, { columns: 200, rows: 60 })).toEqual({ columns: 100, rows: 30 });
    expect(onceSize({}, { LINES: '24', COLUMNS: '90' }, { columns: 200, rows: 60 })).toEqual({ columns: 90, rows: 24 });
    expect(onceSize({}, {}, { columns: 132, rows: 43 })).toEqual({ columns: 132, rows: 43 });
    expect(onceSize({}, {}, undefined)).toEqual({ columns: 80, rows: undefined });
    // A LINES too small to use is ignored rather than producing a header alone.
    expect(onceSize({}, { LINES: '3', COLUMNS: 'wide' }, undefined)).toEqual({ columns: 80, rows: undefined });
    expect(() => onceSize({ rows: '2' }, {}, undefined)).toThrow(/--rows/);
    expect(() => onceSize({ cols: '80x' }, {}, undefined)).toThrow(/--cols/);
  });

  it('fits 80x24 with the aggregate panel still on screen, in the live order', () => {
    const text = renderFrameText(fixtureFrame(), { columns: 80, rows: 24, intervalMs: 2_000 });
    const lines = text.split('\n');
    expect(lines.length).toBeLessThanOrEqual(24);
    for (const l of lines) expect([...l].length).toBeLessThanOrEqual(80);
    const hot = lines.findIndex((l) => l.includes('HOTTEST NUMBER'));
    const agg = lines.findIndex((l) => l.includes('AGGREGATE'));
    expect(hot).toBeGreaterThan(0);
    expect(agg).toBeGreaterThan(hot);
  });

  it('without a height prints every row, still hottest before aggregates', () => {
    const lines = renderFrameText(fixtureFrame(), { columns: 80, intervalMs: 2_000 }).split('\n');
    expect(lines.length).toBeGreaterThan(50);
    expect(lines.findIndex((l) => l.includes('AGGREGATE'))).toBeGreaterThan(lines.findIndex((l) => l.includes('HOTTEST NUMBER')));
  });
});

describe('top movers panel', () => {
  it('puts the movers on the first screen at 80x24, with spend and blocked keys marked', () => {
    const f = fixtureFrame();
    f.hottest[0]!.blocked = true;
    f.movers = {
      windowMs: 600_000,
      baselineSpanMs: 86_400_000,
      baselineEpochs: 144,
      unranged: 0,
      spendPerMin: 2.4,
      prices: { currency: 'USD', unit: 'sms', isDefault: true },
      rows: [
        {
          kind: 'country',
          key: 'GB',
          country: 'GB',
          numbers: 480,
          calls: 480,
          denials: 0,
          share: 0.62,
          normalShare: 0.03,
          ratio: 20.7,
          excess: 457,
          spendPerMin: 2.4,
          blocked: false,
        },
        {
          kind: 'range',
          key: '+4477009•••',
          country: 'GB',
          numbers: 120,
          calls: 120,
          denials: 0,
          share: 0.15,
          normalShare: 0,
          ratio: Infinity,
          excess: 120,
          spendPerMin: 0.6,
          blocked: false,
        },
        {
          kind: 'range',
          key: '+4477008•••',
          country: 'GB',
          numbers: 120,
          calls: 120,
          denials: 0,
          share: 0.15,
          normalShare: 0,
          ratio: Infinity,
          excess: 120,
          spendPerMin: 0.6,
          blocked: true,
        },
      ],
    };
    const lines = renderFrameText(f, { columns: 80, rows: 24, intervalMs: 2_000 }).split('\n');
    expect(lines.length).toBeLessThanOrEqual(24);
    for (const l of lines) expect([...l].length).toBeLessThanOrEqual(80);
    const movers = lines.findIndex((l) => l.startsWith('movers'));
    expect(movers).toBeGreaterThan(0);
    expect(movers).toBeLessThan(lines.findIndex((l) => l.includes('INSTANCE')));
    expect(lines.find((l) => l.startsWith('GB '))).toMatch(/GB +480 +480 +62% +3\.0% +×21 +\$2\.40/);
    expect(lines.find((l) => l.includes('+4477009•••'))).toMatch(/new/);
    expect(lines.find((l) => l.includes('+4477008•••'))).toMatch(/BLOCKED/);
    expect(lines[movers]).toMatch(/spend \$2\.40\/min \(default prices/);
    expect(lines.filter((l) => /\bBLK\b/.test(l))).toHaveLength(1);
  });
});
