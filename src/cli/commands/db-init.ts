import type { Pool } from '../../db/pool.js';
import { migrate } from '../../db/migrate.js';
import type { Policy } from '../../core/policy.js';
import { statsCommand, printStats, type StatsReport } from './stats.js';

export interface DbInitReport {
  database: string;
  applied: string[];
  alreadyApplied: number;
  schemaVersion: number;
  stats: StatsReport;
}

export async function dbInitCommand(pool: Pool, target: string, policy: Policy): Promise<DbInitReport> {
  const report = await migrate(pool);
  return {
    database: target,
    applied: report.applied.map((m) => `${String(m.id).padStart(3, '0')}_${m.name}`),
    alreadyApplied: report.alreadyApplied,
    schemaVersion: report.latest,
    stats: await statsCommand(pool, policy),
  };
}

export function printDbInit(r: DbInitReport): string {
  const head =
    r.applied.length > 0
      ? `Applied ${r.applied.length} migration${r.applied.length === 1 ? '' : 's'} to ${r.database}: ${r.applied.join(', ')}`
      : `${r.database} is up to date (schema version ${r.schemaVersion}); nothing to apply.`;
  return `${head}\n${printStats(r.stats)}`;
}
