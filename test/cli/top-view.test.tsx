// Longer than 350 lines because every panel of the live view is rendered here from one fixture.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { stripVTControlCharacters } from 'node:util';
import { TopView } from '../../src/cli/top/TopView.js';
import type { TopViewProps } from '../../src/cli/top/props.js';
import { sparkline } from '../../src/cli/top/text.js';
import { TopApp, type TopAppProps } from '../../src/cli/top/TopApp.js';
import { fleetSeries, fleetTotals, flyRegionTotals, type HotRow, type TopFrame } from '../../src/cli/top/model.js';
import { renderFrameText } from '../../src/cli/top/frame.js';
import type { FleetInstance } from '../../src/db/fleet.js';
import type { ResetOutcome } from '../../src/db/phones.js';
import type { HotSort } from '../../src/db/stats.js';

afterEach(() => cleanup());

const KEY = { up: '\u001B[A', down: '\u001B[B' };

function instance(over: Partial<FleetInstance> & { instanceId: string }): FleetInstance {
  return {
    host: 'host-a',
    flyRegion: 'iad',
    version: '0.1.0',
    pid: 4242,
    startedAt: new Date(0),
    uptimeMs: 3_725_000,
    intervalMs: 2_000,
    lastSeenAgoMs: 800,
    down: false,
    state: 'up',
    connections: 12,
    allowedPerS: 42.5,
    deniedPerS: 3,
    allowedTotal: 1_000,
    deniedTotal: 50,
    fallback: false,
    dbLatencyMs: 1.8,
    allowedSeries: Array.from({ length: 60 }, (_, i) => (i * 7) % 40),
    deniedSeries: Array.from({ length: 60 }, (_, i) => (i % 10 === 0 ? 5 : 0)),
    policyVersion: 4,
    deniedByReason: {},
    deniedPerSByReason: {},
    shadowDenied: {},
    ...over,
  };
}

const INSTANCES = [
  instance({ instanceId: 'd8e4f7a1c2b3e9', host: 'd8e4f7a1c2b3e9.vm.ratelimit.internal' }),
  instance({ instanceId: '3287f01b99e458', flyRegion: 'lhr', fallback: true, dbLatencyMs: null }),
  instance({ instanceId: '91a0c3e7d5f210', flyRegion: 'lhr', state: 'down', down: true, lastSeenAgoMs: 47_000 }),
];

const HOTTEST: HotRow[] = [
  {
    hash: 'a'.repeat(64),
    hashPrefix: 'aaaaaaaaaaaa',
    masked: '+1415•••••71',
    region: 'US',
    used: 2,
    limit: 2,
    deniedInWindow: 17,
    resetInMs: 1_234_567,
    atLimit: true,
  },
  {
    hash: 'b'.repeat(64),
    hashPrefix: 'bbbbbbbbbbbb',
    masked: '+4479••••••56',
    region: 'GB',
    used: 2,
    limit: 2,
    deniedInWindow: 3,
    resetInMs: 60_000,
    atLimit: true,
  },
  { hash: 'c'.repeat(64), hashPrefix: 'cccccccccccc', masked: null, region: null, used: 1, limit: 2, deniedInWindow: 0, resetInMs: 3_000_000, atLimit: false },
];

function makeFrame(instances: FleetInstance[] = INSTANCES, hottest: HotRow[] = HOTTEST, sort: HotSort = 'denials'): TopFrame {
  return {
    nowMs: Date.UTC(2025, 0, 2, 3, 4, 5),
    sort,
    limit: 2,
    windowMs: 3_600_000,
    dbLatencyMs: 1.23,
    database: { serverVersion: '16.4 (Debian 16.4-1)', connections: 14, maxConnections: 100, sizeBytes: 8_123_456, readOnly: false },
    instances,
    policyVersion: 4,
    totals: fleetTotals(instances, 4),
    flyRegions: flyRegionTotals(instances),
    series: fleetSeries(instances),
    hottest,
    window: { tracked: 120, trackedEstimated: false, active: 110, atLimit: 2, calls: 230, denials: 20, resets: 1 },
    regions: [
      { region: 'US', active: 100, atLimit: 1, calls: 200, denials: 17 },
      { region: 'GB', active: 19, atLimit: 1, calls: 29, denials: 3 },
      { region: 'unknown', active: 1, atLimit: 0, calls: 1, denials: 0 },
    ],
    aggregates: [],
    windowDenials: { byReason: [], shadowByRule: [] },
  };
}

function view(over: Partial<TopViewProps> = {}) {
  const props: TopViewProps = {
    frame: makeFrame(),
    columns: 100,
    intervalMs: 2_000,
    sort: 'denials',
    paused: false,
    interactive: true,
    connection: { ok: true },
    ...over,
  };
  return stripVTControlCharacters(render(<TopView {...props} />).lastFrame() ?? '');
}

function linesOf(text: string): string[] {
  return text.split('\n');
}

describe('TopView', () => {
  it('shows one row per instance, a down one marked, the fleet totals and the database', () => {
    const out = view();
    const rows = linesOf(out);
    expect(rows.find((l) => l.includes('d8e4f7a1c2b3e9'))).toMatch(/iad .* 12 .* 43 +3 +1\.8 up\s*$/);
    expect(rows.find((l) => l.includes('3287f01b99e458'))).toMatch(/up FALLBACK/);
    expect(rows.find((l) => l.includes('91a0c3e7d5f210'))).toMatch(/DOWN 47s/);
    expect(out).toContain('2/3 up');
    // Totals count live instances only: 12 + 12 connections, 42.5 + 42.5 allowed/s.
    expect(out).toMatch(/24 conns · 85 allowed\/s · 6 denied\/s · 1 on FALLBACK · 1 down/);
    expect(out).toMatch(/2 per 1h · 120 numbers tracked · 110 active · 2 at limit · 230 calls · 20 denied · 1 reset\b/);
    expect(out).toMatch(/database up · 1\.2 ms · PostgreSQL 16\.4 · 14\/100 sessions · 8\.1 MB/);
    expect(out).toMatch(/fly +iad 1\/1 up 46\/s · lhr 1\/2 up 46\/s/);
  });

  it('draws the last minute of decisions per second as sparklines', () => {
    const out = view();
    const allowed = linesOf(out).find((l) => l.startsWith('allowed'))!;
    expect(allowed).toContain(sparkline(makeFrame().series.allowed, 60));
    expect(allowed).toMatch(/peak 78\/s$/);
    expect(linesOf(out).find((l) => l.startsWith('denied'))).toMatch(/^denied +█▁{9}█/);
    expect(sparkline([0, 1, 4, 8], 6)).toBe('  ▁▂▅█');
    expect(sparkline([], 3)).toBe('   ');
  });

  it('lists the hottest numbers masked, with hash prefix, region, used/limit, denials and time to reset', () => {
    const rows = linesOf(view());
    expect(rows.find((l) => l.includes('+1415•••••71'))).toMatch(/▶ \+1415•••••71 +aaaaaaaaaaaa US +2\/2 +17 +20m 35s/);
    expect(rows.find((l) => l.includes('+4479••••••56'))).toMatch(/bbbbbbbbbbbb GB +2\/2 +3 +1m/);
    expect(rows.find((l) => l.includes('cccccccccccc'))).toMatch(/\(not stored\) +cccccccccccc — +1\/2 +0 +50m/);
    // The region breakdown sits beside them.
    expect(rows.find((l) => l.includes('+1415•••••71'))).toMatch(/US +100 +1 +200 +17$/);
  });

  it('fits an 80x24 terminal with a large fleet, keeping down instances visible as a count', () => {
    const many = Array.from({ length: 30 }, (_, i) =>
      instance({
        instanceId: `instance-${String(i).padStart(2, '0')}-with-a-long-id`,
        host: 'a-rather-long-host-name.internal',
        ...(i >= 27 ? { state: 'down' as const, down: true } : {}),
      }),
    );
    const hottest = Array.from({ length: 40 }, (_, i) => ({ ...HOTTEST[0]!, hash: `${i}`.padEnd(64, 'f'), hashPrefix: `${i}`.padEnd(12, 'f') }));
    const out = view({ frame: makeFrame(many, hottest), columns: 80, rows: 24 });
    const rows = linesOf(out);
    expect(rows.length).toBeLessThanOrEqual(24);
    for (const row of rows) expect([...row].length).toBeLessThanOrEqual(80);
    expect(out).toMatch(/… \d+ more \(3 down\)/);
    expect(out).toContain('27/30 up');
    expect(out).toContain('HOTTEST NUMBER');
    expect(out).toContain('q quit');
  });

  it('never draws a line wider than the terminal, down to 60 columns', () => {
    for (const columns of [60, 72, 80, 100, 132, 200]) {
      for (const row of linesOf(view({ columns }))) expect([...row].length).toBeLessThanOrEqual(columns);
    }
  });

  it('uses a wide terminal for more instance columns', () => {
    const narrow = view({ columns: 80 });
    const wide = view({ columns: 160 });
    expect(narrow).not.toContain('VERSION');
    expect(wide).toMatch(/INSTANCE +HOST +RGN +VERSION +PID/);
    expect(wide).toContain('d8e4f7a1c2b3e9.vm.ratelimit.internal');
    // Cut in the middle: the ends tell instances apart.
    expect(narrow).toMatch(/ d8e4f…rnal /);
  });

  it('keeps the last good frame under a lost database, saying so', () => {
    const out = view({ connection: { ok: false, error: 'connect ECONNREFUSED 10.0.0.5:5432', failures: 3, downForMs: 12_000, retryEveryMs: 2_000 } });
    expect(out).toMatch(/database DOWN for 12s · 3 tries, retry every 2s · connect ECONNREFUSED 10\.0\.0\.5:5432/);
    expect(out).toMatch(/last good 03:04:05 UTC/);
    expect(out).toContain('d8e4f7a1c2b3e9');
  });

  it('renders before the first frame arrives, and with nothing to show yet', () => {
    expect(view({ frame: null })).toMatch(/database connecting…/);
    const empty = view({ frame: { ...makeFrame([], []), regions: [] } });
    expect(empty).toContain('no instance has sent a heartbeat');
    expect(empty).toContain('no calls in the last 1h');
  });

  it('prints a plain 80-column frame for --once: no colour, no selection marker, no key help', () => {
    const text = renderFrameText(makeFrame(), { columns: 80, intervalMs: 2_000 });
    expect(text).not.toMatch(/\u001B\[/);
    expect(text).not.toContain('▶');
    expect(text).not.toContain('q quit');
    expect(text).toContain('+1415•••••71');
    for (const row of linesOf(text)) expect([...row].length).toBeLessThanOrEqual(80);
  });

  it('prints for --once, without ink, exactly the text ink draws for the same frame', () => {
    for (const columns of [60, 80, 120]) {
      const frame = makeFrame();
      const drawn = view({ frame, columns, rows: undefined, interactive: false, sort: frame.sort })
        .split('\n')
        .map((l) => l.trimEnd())
        .join('\n')
        .replace(/\n+$/, '');
      expect(renderFrameText(frame, { columns, intervalMs: 2_000 })).toBe(drawn);
    }
  });
});

describe('TopApp keys', () => {
  function app(over: Partial<TopAppProps> = {}) {
    const sorts: HotSort[] = [];
    const resets: HotRow[] = [];
    const exits: number[] = [];
    const props: TopAppProps = {
      load: async (sort) => {
        sorts.push(sort);
        return makeFrame(INSTANCES, HOTTEST, sort);
      },
      onReset: async (row): Promise<ResetOutcome> => {
        resets.push(row);
        return { existed: true, previousCount: 2, resetAt: new Date() };
      },
      // Long enough that no refresh happens on its own during a test: every load is a key's doing.
      intervalMs: 3_600_000,
      inputActive: true,
      columns: 100,
      rows: 40,
      onExit: () => exits.push(1),
      ...over,
    };
    const ui = render(<TopApp {...props} />);
    const frame = () => stripVTControlCharacters(ui.lastFrame() ?? '');
    const until = (check: (text: string) => void) => vi.waitFor(() => check(frame()), { timeout: 5_000, interval: 10 });
    const selectedLine = () => linesOf(frame()).find((l) => l.startsWith('▶')) ?? '';
    return { ui, frame, until, selectedLine, sorts, resets, exits };
  }

  it('p pauses (no more loads) and p again resumes with a fresh load', async () => {
    const t = app();
    await t.until((f) => expect(f).toContain('+1415•••••71'));
    t.ui.stdin.write('p');
    await t.until((f) => expect(f).toContain('PAUSED'));
    const loads = t.sorts.length;
    t.ui.stdin.write('p');
    await t.until((f) => expect(f).not.toContain('PAUSED'));
    await vi.waitFor(() => expect(t.sorts.length).toBe(loads + 1));
  });

  it('s cycles the sort of the hottest numbers, reloading each time', async () => {
    const t = app();
    await t.until((f) => expect(f).toContain('sort denials'));
    for (const next of ['calls', 'recent', 'denials'] as const) {
      t.ui.stdin.write('s');
      await t.until((f) => expect(f).toContain(`sort ${next}`));
      await vi.waitFor(() => expect(t.sorts.at(-1)).toBe(next));
    }
    expect(t.sorts).toEqual(['denials', 'calls', 'recent', 'denials']);
  });

  it('up/down move the selection, stopping at the ends', async () => {
    const t = app();
    await t.until(() => expect(t.selectedLine()).toContain('+1415•••••71'));
    t.ui.stdin.write(KEY.down);
    await t.until(() => expect(t.selectedLine()).toContain('+4479••••••56'));
    t.ui.stdin.write(KEY.down);
    await t.until(() => expect(t.selectedLine()).toContain('cccccccccccc'));
    t.ui.stdin.write(KEY.down);
    t.ui.stdin.write(KEY.up);
    await t.until(() => expect(t.selectedLine()).toContain('+4479••••••56'));
    t.ui.stdin.write(KEY.up);
    t.ui.stdin.write(KEY.up);
    await t.until(() => expect(t.selectedLine()).toContain('+1415•••••71'));
  });

  it('r asks for confirmation; n cancels, y resets the selected number', async () => {
    const t = app();
    await t.until(() => expect(t.selectedLine()).toContain('+1415•••••71'));
    t.ui.stdin.write(KEY.down);
    await t.until(() => expect(t.selectedLine()).toContain('+4479••••••56'));
    t.ui.stdin.write('r');
    await t.until((f) => expect(f).toContain('Reset +4479••••••56 (bbbbbbbbbbbb)?'));
    t.ui.stdin.write('n');
    await t.until((f) => expect(f).toContain('reset cancelled'));
    expect(t.resets).toEqual([]);

    t.ui.stdin.write('r');
    await t.until((f) => expect(f).toContain('Reset +4479••••••56'));
    const loads = t.sorts.length;
    t.ui.stdin.write('y');
    await t.until((f) => expect(f).toContain('reset +4479••••••56: 2 calls cleared'));
    expect(t.resets.map((r) => r.hash)).toEqual(['b'.repeat(64)]);
    // The dashboard reloads to show the cleared number.
    await vi.waitFor(() => expect(t.sorts.length).toBe(loads + 1));
  });

  it('shows a failed reset instead of crashing', async () => {
    const t = app({ onReset: () => Promise.reject(new Error('cannot execute UPDATE in a read-only transaction')) });
    await t.until(() => expect(t.selectedLine()).toContain('+1415•••••71'));
    t.ui.stdin.write('r');
    await t.until((f) => expect(f).toContain('Reset +1415•••••71'));
    t.ui.stdin.write('y');
    await t.until((f) => expect(f).toContain('reset failed: cannot execute UPDATE in a read-only transaction'));
  });

  it('q quits', async () => {
    const t = app();
    await t.until((f) => expect(f).toContain('+1415•••••71'));
    t.ui.stdin.write('q');
    await vi.waitFor(() => expect(t.exits).toEqual([1]));
  });

  it('shows a lost database and keeps retrying until it is back, without crashing', async () => {
    let failures = 0;
    const t = app({
      intervalMs: 200,
      load: async (sort) => {
        if (failures < 2) {
          failures++;
          throw Object.assign(new AggregateError([Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })], ''), {
            code: 'ECONNREFUSED',
          });
        }
        return makeFrame(INSTANCES, HOTTEST, sort);
      },
    });
    await t.until((f) => expect(f).toMatch(/database DOWN · 1 try, retry every 1s · connect ECONNREFUSED 127\.0\.0\.1:5432/));
    await t.until((f) => expect(f).toMatch(/database up/));
    expect(t.frame()).toContain('+1415•••••71');
    expect(t.frame()).toMatch(/database back after/);
  });

  it('runs without a keyboard (stdin not a terminal) and draws no key help', async () => {
    const t = app({ inputActive: false });
    await t.until((f) => expect(f).toContain('+1415•••••71'));
    expect(t.frame()).not.toContain('q quit');
  });
});
