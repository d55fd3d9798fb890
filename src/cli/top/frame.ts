// One dashboard frame as lines of segments, a pure function of the view's props: the ink view
// (TopView) draws them in colour, and `--once` prints them as plain text without loading ink or
// react (about a second of start-up that a one-shot frame would otherwise pay). Laid out for
// 80x24 first; on a smaller terminal whole panels are dropped, least useful first, rather than
// anything being cut. The guard's summary (src/cli/top/guard.ts) goes above the movers while
// something is automatically blocked or at its conversion or sweep limit, below the denials
// otherwise; its own view (`g`, `--view guard`) replaces the movers, numbers and aggregates.
import type { TopViewProps } from './props.js';
import type { TopFrame, TopViewName } from './model.js';
import { clip, type Line } from './text.js';
import { databaseSection, denialsSection, fleetSection, flyRegionLine, footerSection, headerSection, policyWarning, sparkSection } from './summary.js';
import { hotAndRegionsSection, instancesSection } from './panels.js';
import { aggregatesSection, aggregatesWanted } from './aggregates.js';
import { moversSection, moversWanted } from './movers.js';
import { guardSummarySection, guardUrgent, guardViewSection } from './guard.js';

type PanelName = 'warning' | 'guard' | 'movers' | 'denials' | 'fly' | 'spark' | 'instances' | 'hot' | 'aggregates';

/** All the lines of one frame, each at most `columns` wide and, given `rows`, at most that many. */
export function frameLines(p: TopViewProps): Line[] {
  const f = p.frame;
  const footer = footerSection(p);
  if (!f) return [headerSection(p, f), ...databaseSection(p, f), ...footer].map((l) => clip(l, p.columns));
  const fixed: Line[] = [headerSection(p, f), ...databaseSection(p, f), ...fleetSection(f, p.columns)];
  if (p.view === 'guard') {
    const warning = policyWarning(f, p.columns);
    const left = p.rows === undefined ? undefined : Math.max(0, p.rows - fixed.length - footer.length - warning.length);
    return [fixed[0]!, ...warning, ...fixed.slice(1), ...guardViewSection(f, p.columns, left), ...footer].map((l) => clip(l, p.columns));
  }
  const guard = guardSummarySection(f, p.columns);
  const urgent = guardUrgent(f.guard);
  const fly = flyRegionLine(f);
  const small: Record<'warning' | 'guard' | 'denials' | 'fly' | 'spark', Line[]> = {
    warning: policyWarning(f, p.columns),
    guard,
    denials: denialsSection(f, p.columns),
    fly: fly ? [fly] : [],
    spark: sparkSection(f, p.columns),
  };
  const wanted = {
    movers: moversWanted(f),
    instances: 1 + Math.max(1, f.instances.length),
    hot: 1 + Math.max(1, f.hottest.length, f.regions.length + 1) + 1,
    aggregates: aggregatesWanted(f),
  };
  const rows: Record<PanelName, number> = { warning: 0, guard: 0, movers: 0, denials: 0, fly: 0, spark: 0, instances: 0, hot: 0, aggregates: 0 };
  if (p.rows === undefined) {
    for (const k of ['warning', 'guard', 'denials', 'fly', 'spark'] as const) rows[k] = small[k].length;
    Object.assign(rows, wanted);
  } else {
    let left = p.rows - fixed.length - footer.length;
    // Most useful first; a panel that does not fit whole (at its minimum) is left out.
    const order: Array<[PanelName, number]> = [
      ['warning', small.warning.length],
      // A block in force or a range at its limit: what the guard did is the first thing to see.
      ...(urgent ? [['guard', small.guard.length] as [PanelName, number]] : []),
      // What is above normal names what to block: on the first screen, before the fleet's rows.
      ['movers', Math.min(wanted.movers, 6)],
      ['instances', Math.min(wanted.instances, 3)],
      ['hot', Math.min(wanted.hot, 4)],
      ['denials', small.denials.length],
      ...(urgent ? [] : [['guard', small.guard.length] as [PanelName, number]]),
      ['aggregates', Math.min(wanted.aggregates, 3)],
      ['spark', small.spark.length],
      ['fly', small.fly.length],
    ];
    for (const [name, min] of order) {
      if (min > 0 && min <= left) {
        rows[name] = min;
        left -= min;
      }
    }
    // What is left grows the tables, movers then instances (down ones come first, see loadTopFrame).
    for (const name of ['movers', 'instances', 'hot', 'aggregates'] as const) {
      if (rows[name] === 0) continue;
      const more = Math.min(left, wanted[name] - rows[name]);
      rows[name] += more;
      left -= more;
    }
  }
  const lines = [
    fixed[0]!,
    ...(rows.warning ? small.warning : []),
    ...fixed.slice(1),
    ...(rows.guard && urgent ? small.guard : []),
    ...(rows.denials ? small.denials : []),
    ...(rows.guard && !urgent ? small.guard : []),
    ...(rows.fly ? small.fly : []),
    ...(rows.spark ? small.spark : []),
    ...(rows.movers ? moversSection(f, p.columns, rows.movers) : []),
    ...(rows.instances ? instancesSection(f, p.columns, rows.instances) : []),
    ...(rows.hot ? hotAndRegionsSection(p, f, rows.hot) : []),
    ...(rows.aggregates ? aggregatesSection(f, p.columns, rows.aggregates) : []),
    ...footer,
  ];
  return lines.map((l) => clip(l, p.columns));
}

/** One frame as plain text (no colour, no trailing spaces): for `--once`, pipes and tickets. */
export function renderFrameText(frame: TopFrame, opts: { columns: number; rows?: number | undefined; intervalMs: number; view?: TopViewName }): string {
  const lines = frameLines({
    frame,
    columns: opts.columns,
    ...(opts.rows === undefined ? {} : { rows: opts.rows }),
    intervalMs: opts.intervalMs,
    sort: frame.sort,
    paused: false,
    interactive: false,
    connection: { ok: true },
    ...(opts.view ? { view: opts.view } : {}),
  });
  return lines
    .map((line) =>
      line
        .map((s) => s.text)
        .join('')
        .trimEnd(),
    )
    .join('\n')
    .replace(/\n+$/, '');
}
