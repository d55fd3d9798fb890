import type { Pool } from '../../db/pool.js';
import { migrate, migrationName } from '../../db/migrate.js';
import type { Policy } from '../../core/policy/types.js';
import { statsCommand, printStats, type StatsReport } from './stats.js';
import type { Command } from 'commander';
import { emit, withDatabase, type Io } from '../context.js';

export interface DbInitReport {
  database: string;
  applied: string[];
  alreadyApplied: number;
  schemaVersion: number;
  stats: StatsReport;
}

export async function dbInitCommand(pool: Pool, target: string, fallback: Policy): Promise<DbInitReport> {
  const report = await migrate(pool);
  return {
    database: target,
    applied: report.applied.map(migrationName),
    alreadyApplied: report.alreadyApplied,
    schemaVersion: report.latest,
    // stats reads the effective policy (the database's active one, else `fallback`) itself.
    stats: await statsCommand(pool, fallback),
  };
}

export function printDbInit(r: DbInitReport): string {
  const head =
    r.applied.length > 0
      ? `Applied ${r.applied.length} migration${r.applied.length === 1 ? '' : 's'} to ${r.database}: ${r.applied.join(', ')}`
      : `${r.database} is up to date (schema version ${r.schemaVersion}); nothing to apply.`;
  return `${head}\n${printStats(r.stats)}`;
}

export function register(program: Command, io: Io): void {
  const db = program.command('db').description('database administration');
  db.command('init')
    .description('apply pending migrations (idempotent, safe to run concurrently) and print a stats summary')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabase(cmd, io, ({ config, db }) => dbInitCommand(db.pool, db.target, config.defaultPolicy));
      emit(io, cmd, report, () => printDbInit(report));
    });
}
