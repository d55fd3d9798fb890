// `ratelimit stats`: totals against the effective policy (the one the daemons enforce): numbers
// tracked and at their limit, calls and denials in the last window, denials by reason (every
// reason, IP included, from the heartbeats' per-minute rollup), shadow denials by rule, the
// busiest keys of the aggregate rules, and the breakdown by region; and the guard that learns
// from outcomes (src/cli/guard-view.ts): conversion by country, the ranges closest to their
// conversion and sweep limits, automatic blocks, and whether conversion rules are idle. Numbers
// only ever masked.
import type { Command } from 'commander';
import type { Pool } from '../../db/pool.js';
import { readStats, type Stats } from '../../db/stats.js';
import type { Policy } from '../../core/policy/types.js';
import { formatDurationMs } from '../../core/duration.js';
import { isoTime, table, when } from '../format.js';
import { ensureSchema } from '../../db/open.js';
import { emit, withDatabaseNoKey, type Io } from '../context.js';
import { readPolicyUsage, shortReason, type AggregateUsage, type PolicyUsage } from '../policy-usage.js';
import { readListEntries } from '../../db/lists.js';
import { DEFAULT_PRICES, formatMoney, type PriceTable } from '../../core/prices.js';
import { TrafficReader, type MoversView } from '../traffic-view.js';
import { pct, ratioText } from '../top/movers.js';
import { CONVERSION_IDLE_TEXT, GuardReader, pctText, type GuardView } from '../guard-view.js';

// Busiest keys shown per aggregate rule.
const KEYS_PER_RULE = 5;

export interface StatsReport {
  /** The active policy's version; 0 while the RATE_LIMIT_* default applies. */
  policyVersion: number;
  /** The primary number rule's limit; null when the policy has no number rule. */
  limit: number | null;
  windowMs: number;
  /** Numbers with a row; PostgreSQL's estimate on a big table (numbersTrackedEstimated). */
  numbersTracked: number;
  numbersTrackedEstimated: boolean;
  /** Numbers with a call or a denial in the window. */
  numbersActive: number;
  numbersAtLimit: number;
  callsInWindow: number;
  /** Denials recorded against numbers in the window (what a number's own row holds). */
  denialsInWindow: number;
  resetsInWindow: number;
  /** Every daemon's denials in the window by docs/protocol.md reason, IP denials included. */
  denialsByReason: Record<string, number>;
  /** Consumes each shadow rule would have denied in the window. */
  shadowDenialsByRule: Record<string, number>;
  aggregates: AggregateUsage[];
  regions: Array<{ region: string; numbersActive: number; numbersAtLimit: number; callsInWindow: number; denialsInWindow: number }>;
  /**
   * Countries and 1,000-number ranges by how far above their normal share of active numbers they
   * are (the last 10 minutes against the day before), with spend per minute; no rule needed.
   */
  movers?: MoversView;
  /** Conversion by country, the worst ranges, automatic blocks, idle conversion rules (README, "stats --json"). */
  guard?: GuardView;
  now: number;
}

// Countries and ranges listed under "above normal".
const MOVERS_SHOWN = 15;

export function toStatsReport(s: Stats, usage: PolicyUsage): StatsReport {
  return {
    policyVersion: usage.version,
    limit: usage.policy.number[0]?.limit ?? null,
    windowMs: s.windowMs,
    numbersTracked: s.tracked,
    numbersTrackedEstimated: s.trackedEstimated,
    numbersActive: s.active,
    numbersAtLimit: s.atLimit,
    callsInWindow: s.calls,
    denialsInWindow: s.denials,
    resetsInWindow: s.resets,
    denialsByReason: usage.decisions.deniedByReason,
    shadowDenialsByRule: usage.decisions.shadowByRule,
    aggregates: usage.aggregates,
    regions: s.regions.map((r) => ({
      region: r.region,
      numbersActive: r.active,
      numbersAtLimit: r.atLimit,
      callsInWindow: r.calls,
      denialsInWindow: r.denials,
    })),
    now: s.nowMs,
  };
}

/** `fallback`: the RATE_LIMIT_* default policy, used only while none has been applied. */
export async function statsCommand(pool: Pool, fallback: Policy, prices: PriceTable = DEFAULT_PRICES): Promise<StatsReport> {
  const usage = await readPolicyUsage(pool, fallback, KEYS_PER_RULE);
  const stats = await readStats(pool, { rules: usage.numberPolicy?.rules ?? [] }, usage.windowMs);
  const lists = await readListEntries(pool);
  const blocked = lists.entries.filter((e) => e.kind === 'block' && e.targetType === 'prefix').map((e) => e.target);
  const [movers, guard] = await Promise.all([new TrafficReader(prices).read(pool, blocked), new GuardReader(KEYS_PER_RULE).read(pool, usage.policy)]);
  return { ...toStatsReport(stats, usage), movers, guard };
}

function printMovers(v: MoversView): string {
  const base = v.baselineEpochs === 0 ? 'no history yet to compare with' : `share of active numbers vs the ${formatDurationMs(v.baselineSpanMs)} before`;
  const head = `Above normal (last ${formatDurationMs(v.windowMs)}, ${base}); spend ${formatMoney(v.prices, v.spendPerMin)}/min${v.prices.isDefault ? ' at the default flat price (prices vary: set RATELIMIT_PRICES)' : ''}`;
  const t = table(['country or range', 'numbers', 'calls', 'share', 'normal', 'vs normal', 'spend/min', '']);
  for (const m of v.rows.slice(0, MOVERS_SHOWN)) {
    t.push([
      m.kind === 'country' ? m.key : `${m.key} ${m.country}`,
      String(m.numbers),
      String(m.calls),
      pct(m.share),
      pct(m.normalShare),
      ratioText(m),
      formatMoney(v.prices, m.spendPerMin),
      m.blocked ? 'blocked' : '',
    ]);
  }
  const more = v.rows.length > MOVERS_SHOWN ? `\n… ${v.rows.length - MOVERS_SHOWN} more (--json lists them all)` : '';
  const old = v.unranged > 0 ? `\n${v.unranged} active numbers have older masks that name no range: counted by country only.` : '';
  return `${head}\n${t.toString()}${more}${old}`;
}

// Countries, ranges and blocks listed in the text form (--json has them all).
const GUARD_SHOWN = 15;

function printGuard(g: GuardView, now: number): string[] {
  const lines: string[] = [];
  if (g.conversionIdle) lines.push(CONVERSION_IDLE_TEXT);
  if (g.countries.length > 0) {
    const t = table(['country', 'outcomes (1h)', 'converted (1h)', 'outcomes (24h)', 'converted (24h)', 'unconverted / limit']);
    for (const c of g.countries.slice(0, GUARD_SHOWN)) {
      t.push([
        c.region,
        String(c.outcomes1h),
        pctText(c.rate1h),
        String(c.outcomes24h),
        pctText(c.rate24h),
        c.unconverted ? `${c.unconverted.used}/${c.unconverted.limit} ${c.unconverted.ruleId}` : '—',
      ]);
    }
    lines.push(`Conversion by country (verified, or answered long enough; of the outcomes reported)\n${t.toString()}`);
  }
  if (g.ranges.length > 0) {
    const t = table(['range', 'rule', 'counts', 'used / limit', 'blocked']);
    for (const x of g.ranges.slice(0, GUARD_SHOWN)) {
      t.push([
        x.range,
        x.shadow ? `${x.ruleId} (shadow)` : x.ruleId,
        x.kind === 'distinct' ? 'distinct numbers' : 'unconverted calls',
        `${x.used}/${x.limit}`,
        x.blocked ? `level ${x.blocked.level} until ${isoTime(x.blocked.until)}` : '—',
      ]);
    }
    lines.push(`Worst ranges (conversion and sweep rules)\n${t.toString()}`);
  }
  if (g.blocks.length > 0) {
    const t = table(['automatic block', 'rule', 'level', 'until']);
    for (const b of g.blocks.slice(0, GUARD_SHOWN)) t.push([b.target, b.rule, b.level > 0 ? String(b.level) : '—', when(b.until, now)]);
    const total = g.blocksTotal.ranges + g.blocksTotal.numbers;
    const more = total > GUARD_SHOWN ? `\n… ${total - Math.min(GUARD_SHOWN, g.blocks.length)} more (ratelimit list shows them all)` : '';
    lines.push(`${t.toString()}${more}`);
  }
  return lines;
}

export function printStats(r: StatsReport): string {
  const w = formatDurationMs(r.windowMs);
  const policy = r.policyVersion === 0 ? 'default policy (RATE_LIMIT_*)' : `policy v${r.policyVersion}`;
  const limit = r.limit === null ? 'no number rule' : `${r.limit} calls per ${w} per number`;
  const totals = table([
    r.numbersTrackedEstimated ? 'numbers tracked (estimate)' : 'numbers tracked',
    `active (last ${w})`,
    'at limit now',
    `calls (last ${w})`,
    `denials (last ${w})`,
    `resets (last ${w})`,
  ]);
  totals.push([
    r.numbersTrackedEstimated ? `~${r.numbersTracked}` : String(r.numbersTracked),
    ...[r.numbersActive, r.numbersAtLimit, r.callsInWindow, r.denialsInWindow, r.resetsInWindow].map(String),
  ]);
  const lines = [`Limit: ${limit} · ${policy}`, totals.toString()];
  const reasons = Object.entries(r.denialsByReason);
  if (reasons.length > 0) {
    const t = table(['reason', `denials (last ${w}, every daemon)`]);
    for (const [reason, n] of reasons) t.push([shortReason(reason), String(n)]);
    lines.push(t.toString());
  }
  const shadow = Object.entries(r.shadowDenialsByRule);
  if (shadow.length > 0) {
    const t = table(['shadow rule', `would have denied (last ${w})`]);
    for (const [rule, n] of shadow) t.push([rule, String(n)]);
    lines.push(t.toString());
  }
  if (r.aggregates.length > 0) {
    const t = table(['rule', 'key', 'used / limit']);
    for (const a of r.aggregates) t.push([a.shadow ? `${a.ruleId} (shadow)` : a.ruleId, a.label, `${a.used}/${a.limit}`]);
    lines.push(t.toString());
  }
  if (r.regions.length > 0) {
    const regions = table(['region', 'active numbers', 'at limit', 'calls', 'denials']);
    for (const g of r.regions) {
      regions.push([g.region, g.numbersActive, g.numbersAtLimit, g.callsInWindow, g.denialsInWindow].map(String));
    }
    lines.push(regions.toString());
  }
  if (r.movers && r.movers.rows.length > 0) lines.push(printMovers(r.movers));
  if (r.guard) lines.push(...printGuard(r.guard, r.now));
  return lines.join('\n');
}

export function register(program: Command, io: Io): void {
  program
    .command('stats')
    .description(
      'totals against the active policy: numbers tracked and at their limit, calls and denials by reason in the last window, aggregate rules, regions',
    )
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabaseNoKey(
        cmd,
        io,
        async ({ config, db }) => {
          await ensureSchema(db);
          return statsCommand(db.pool, config.defaultPolicy, config.prices);
        },
        { readTimeout: true },
      );
      emit(io, cmd, report, () => printStats(report));
    });
}
