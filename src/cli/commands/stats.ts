import type { Pool } from '../../db/pool.js';
import { readStats, type Stats } from '../../db/queries.js';
import type { Policy } from '../../core/policy.js';
import { formatDurationMs } from '../../core/duration.js';
import { table } from '../format.js';
import type { Command } from 'commander';
import { ensureSchema } from '../../db/open.js';
import { emit, withDatabase, type Io } from '../context.js';

export interface StatsReport {
  limit: number;
  windowMs: number;
  numbersTracked: number;
  numbersAtLimit: number;
  callsInWindow: number;
  denialsInWindow: number;
  resetsInWindow: number;
  regions: Array<{ region: string; numbersTracked: number; numbersAtLimit: number; callsInWindow: number; denialsInWindow: number }>;
  now: number;
}

export function toStatsReport(s: Stats, policy: Policy): StatsReport {
  return {
    limit: policy.rules[0]!.max,
    windowMs: s.windowMs,
    numbersTracked: s.tracked,
    numbersAtLimit: s.atLimit,
    callsInWindow: s.calls,
    denialsInWindow: s.denials,
    resetsInWindow: s.resets,
    regions: s.regions.map((r) => ({
      region: r.region,
      numbersTracked: r.tracked,
      numbersAtLimit: r.atLimit,
      callsInWindow: r.calls,
      denialsInWindow: r.denials,
    })),
    now: s.nowMs,
  };
}

export async function statsCommand(pool: Pool, policy: Policy): Promise<StatsReport> {
  return toStatsReport(await readStats(pool, policy), policy);
}

export function printStats(r: StatsReport): string {
  const w = formatDurationMs(r.windowMs);
  const totals = table(['numbers tracked', 'at limit now', `calls (last ${w})`, `denials (last ${w})`, `resets (last ${w})`]);
  totals.push([r.numbersTracked, r.numbersAtLimit, r.callsInWindow, r.denialsInWindow, r.resetsInWindow].map(String));
  const lines = [`Limit: ${r.limit} calls per ${w} per number`, totals.toString()];
  if (r.regions.length > 0) {
    const regions = table(['region', 'numbers', 'at limit', 'calls', 'denials']);
    for (const g of r.regions) {
      regions.push([g.region, g.numbersTracked, g.numbersAtLimit, g.callsInWindow, g.denialsInWindow].map(String));
    }
    lines.push(regions.toString());
  }
  return lines.join('\n');
}

export function register(program: Command, io: Io): void {
  program
    .command('stats')
    .description('totals: numbers tracked, at their limit now, calls and denials in the last window, by region')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabase(cmd, io, async ({ config, db }) => {
        await ensureSchema(db);
        return statsCommand(db.pool, config.phonePolicy);
      });
      emit(io, cmd, report, () => printStats(report));
    });
}
