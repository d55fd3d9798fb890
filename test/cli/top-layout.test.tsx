// `ratelimit top` at small terminals (issue #13 part 3) and with the policy engine's data (#10):
// frames at 60x20, 80x24 and 120x40 never draw a line wider than the terminal, keep masks whole
// and distinct, keep a prompt's y/n, keep panels apart, and flag a daemon on an older policy.
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { stripVTControlCharacters } from 'node:util';
import { TopView } from '../../src/cli/top/TopView.js';
import type { TopViewProps } from '../../src/cli/top/props.js';
import { fleetSeries, fleetTotals, flyRegionTotals, type HotRow, type TopFrame, type TopInstance } from '../../src/cli/top/model.js';
import { renderFrameText } from '../../src/cli/top/frame.js';

afterEach(() => cleanup());

function instance(id: string, over: Partial<TopInstance> = {}): TopInstance {
  return {
    instanceId: id,
    host: `${id}.vm.internal`,
    flyRegion: 'iad',
    version: '0.1.0',
    pid: 7,
    uptimeMs: 60_000,
    lastSeenAgoMs: 500,
    state: 'up',
    connections: 3,
    allowedPerS: 10,
    deniedPerS: 203,
    fallback: false,
    dbLatencyMs: 1.2,
    allowedSeries: [1, 2, 3],
    deniedSeries: [200, 203, 210],
    policyVersion: 4,
    deniedPerSByReason: { ip_rate_limit_exceeded: 200, phone_rate_limit_exceeded: 3 },
    ...over,
  };
}

// Masks that differ only in their last digits: a cut mask would make them read as one number.
const MASKS = ['+1415•••••71', '+1415•••••72', '+4479••••••56', '+86138•••••0001'];
const HOTTEST: HotRow[] = MASKS.map((masked, i) => ({
  hash: `${i}`.repeat(64),
  hashPrefix: `${i}`.repeat(12),
  masked,
  region: 'US',
  used: 2,
  limit: 2,
  deniedInWindow: 40 + i,
  resetInMs: 600_000,
  atLimit: true,
}));

function frame(instances: TopInstance[] = [instance('machine-a'), instance('machine-b', { policyVersion: 3 })]): TopFrame {
  return {
    nowMs: Date.UTC(2026, 0, 1),
    sort: 'denials',
    limit: 2,
    windowMs: 3_600_000,
    policyVersion: 4,
    dbLatencyMs: 1,
    database: { serverVersion: '16.4', connections: 5, maxConnections: 100, sizeBytes: 9_000_000, readOnly: false },
    instances,
    totals: fleetTotals(instances, 4),
    flyRegions: flyRegionTotals(instances),
    series: fleetSeries(instances),
    hottest: HOTTEST,
    window: { tracked: 123_456, trackedEstimated: false, active: 23_456, atLimit: 9_876, calls: 2_345_678, denials: 765_432, resets: 12 },
    regions: [
      { region: 'US', active: 100, atLimit: 3, calls: 1000, denials: 40 },
      { region: 'GB', active: 5, atLimit: 0, calls: 9, denials: 0 },
    ],
    aggregates: [
      { ruleId: 'prefix:1h', group: 'prefix', label: '+1415555•••', used: 10, limit: 10, shadow: false },
      { ruleId: 'country:GB:1h', group: 'country', label: 'GB', used: 400, limit: 500, shadow: false },
      { ruleId: 'global:1d', group: 'global', label: '*', used: 1234, limit: 10_000, shadow: true },
    ],
    windowDenials: {
      byReason: [
        ['ip_rate_limit_exceeded', 12_000],
        ['phone_rate_limit_exceeded', 300],
      ],
      shadowByRule: [['global:1d', 17]],
    },
  };
}

export function view(columns: number, rows: number, over: Partial<TopViewProps> = {}): string[] {
  const props: TopViewProps = {
    frame: frame(),
    columns,
    rows,
    intervalMs: 2_000,
    sort: 'denials',
    paused: false,
    interactive: true,
    connection: { ok: true },
    ...over,
  };
  return stripVTControlCharacters(render(<TopView {...props} />).lastFrame() ?? '').split('\n');
}

const SIZES: Array<[number, number]> = [
  [60, 20],
  [80, 24],
  [120, 40],
];

describe('top layout at small and large terminals', () => {
  for (const [columns, rows] of SIZES) {
    it(`${columns}x${rows}: fits, masks whole and distinct, panels apart`, () => {
      const lines = view(columns, rows);
      expect(lines.length).toBeLessThanOrEqual(rows);
      for (const l of lines) expect([...l].length).toBeLessThanOrEqual(columns);
      // Each hottest number shown appears whole, on its own row, never as a cut prefix.
      const shown = MASKS.filter((m) => lines.some((l) => l.includes(m)));
      expect(shown.length).toBeGreaterThanOrEqual(2);
      for (const m of shown) expect(lines.filter((l) => l.includes(m))).toHaveLength(1);
      expect(lines.join('\n')).not.toMatch(/•…|\d…/);
      // The regions never share a line with a number unless a rule divides them.
      for (const l of lines.filter((x) => MASKS.some((m) => x.includes(m)))) if (/ US +\d+ +\d+ +\d+/.test(l.slice(30))) expect(l).toContain('│');
      const header = lines.find((l) => l.includes('HOTTEST NUMBER'))!;
      if (header.includes('REGION')) expect(header.indexOf('│')).toBeGreaterThan(0);
      if (header.includes('REGION')) expect(header.indexOf('│')).toBeLessThan(header.indexOf('REGION'));
    });

    it(`${columns}x${rows}: a reset prompt keeps its y/n`, () => {
      const prompt = 'Reset +4479••••••56 (bbbbbbbbbbbb)? Usage is cleared, audited as "top". y/n';
      const lines = view(columns, rows, { prompt });
      expect(lines.length).toBeLessThanOrEqual(rows);
      expect(lines.join('\n')).toMatch(/y\/n/);
      expect(lines.join('\n')).toContain('+4479••••••56');
      for (const l of lines) expect([...l].length).toBeLessThanOrEqual(columns);
    });
  }

  it('shows the policy version in the header and flags a daemon on an older one', () => {
    const lines = view(120, 40);
    expect(lines[0]).toMatch(/policy v4/);
    expect(lines.join('\n')).toMatch(/1 daemon not on policy v4/);
    expect(lines.find((l) => l.includes('machine-b'))).toMatch(/v3 \(fleet on v4\)/);
    expect(lines.find((l) => l.includes('machine-a') && !l.includes('machine-b'))).not.toMatch(/fleet on/);
  });

  it('counts every denial by reason: IP denials are not "0 denied/s"', () => {
    const text = view(120, 40).join('\n');
    expect(text).toMatch(/406 denied\/s · ip 400\/s · phone 6\/s/);
    expect(text).toMatch(/denials +ip 12000 · phone 300/);
    expect(text).toMatch(/shadow +global:1d 17/);
    expect(text).toMatch(/prefix:1h +\+1415555••• +10\/10/);
    expect(text).toMatch(/global:1d +\* +1234\/10000 .*shadow/);
  });

  it('a piped --once frame at 80 columns wraps its totals instead of cutting them', () => {
    const text = renderFrameText(frame(), { columns: 80, intervalMs: 2_000 });
    for (const l of text.split('\n')) expect([...l].length).toBeLessThanOrEqual(80);
    for (const part of ['2 per 1h', '123k numbers tracked', '23456 active', '9876 at limit', '2.3M calls', '765k denied', '12 resets'])
      expect(text).toContain(part);
    for (const m of MASKS) expect(text).toContain(m);
  });
});
