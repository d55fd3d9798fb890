// `g` in the live dashboard switches to the guard view (automatic blocks, worst ranges, conversion
// by country) and back, without a reload; the traffic view's keys do nothing there.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { stripVTControlCharacters } from 'node:util';
import { TopApp } from '../../src/cli/top/TopApp.js';
import { fixtureFrame } from './top-fixture.js';

afterEach(() => cleanup());

describe('top g key', () => {
  it('toggles the guard view at 80x24, and r asks nothing there', async () => {
    const frame = fixtureFrame(3);
    frame.guard = {
      conversionRules: true,
      conversionIdle: false,
      lastOutcomeAt: frame.nowMs - 60_000,
      countries: [
        {
          region: 'GB',
          outcomes1h: 40,
          converted1h: 4,
          rate1h: 0.1,
          outcomes24h: 400,
          converted24h: 280,
          rate24h: 0.7,
          unconverted: { ruleId: 'conversion:country:1h', used: 50, limit: 50 },
        },
      ],
      ranges: [
        {
          ruleId: 'sweep:prefix:1h',
          kind: 'distinct',
          range: '+447700900•••',
          used: 10,
          limit: 10,
          shadow: false,
          blocked: { level: 2, until: frame.nowMs + 3_000_000 },
        },
      ],
      blocks: [
        {
          targetType: 'prefix',
          target: '+447700900•••',
          hash: null,
          rule: 'sweep:prefix:1h',
          reason: 'sweep_rate_limit_exceeded',
          level: 2,
          until: frame.nowMs + 3_000_000,
        },
      ],
      blocksTotal: { ranges: 1, numbers: 0 },
    };
    let loads = 0;
    const ui = render(
      <TopApp
        load={async () => {
          loads++;
          return frame;
        }}
        onReset={async () => ({ previousCount: 0 })}
        intervalMs={3_600_000}
        inputActive
        columns={80}
        rows={23}
      />,
    );
    const text = () => stripVTControlCharacters(ui.lastFrame() ?? '');
    const until = (check: (t: string) => void) => vi.waitFor(() => check(text()), { timeout: 5_000, interval: 10 });
    await until((f) => expect(f).toMatch(/blocked +1 in force · sweep \+447700900••• L2 50m/));
    expect(text()).toContain('g guard');
    ui.stdin.write('g');
    await until((f) => expect(f).toContain('guard view'));
    const lines = text().split('\n');
    expect(lines.length).toBeLessThanOrEqual(23);
    for (const l of lines) expect([...l].length).toBeLessThanOrEqual(80);
    expect(text()).toMatch(/\+447700900••• +sweep:1h +L2 +50m/);
    expect(text()).toMatch(/GB +40 +10% +400 +70% +50\/50/);
    expect(text()).toContain('g back to traffic');
    ui.stdin.write('r');
    await new Promise((r) => setImmediate(r));
    expect(text()).not.toContain('y/n');
    ui.stdin.write('g');
    await until((f) => expect(f).toContain('HOTTEST NUMBER'));
    expect(loads).toBe(1);
  });
});
