import type { Pool } from '../../db/pool.js';
import { migrate } from '../../db/migrate.js';
import { makePolicy, type Policy as LogPolicy } from '../../core/policy.js';
import type { Policy } from '../../core/policy/types.js';
import { readEffectivePolicy } from '../../db/policies.js';
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

/**
 * The stats summary reads the number windows of the effective policy (the database's active one,
 * else `fallback`, the RATE_LIMIT_* default). A policy without number rules has no per-number
 * window to summarise over; the default's number rules stand in so the summary still prints.
 */
function statsPolicy(policy: Policy, fallback: Policy): LogPolicy {
  const rules = (policy.number.length > 0 ? policy.number : fallback.number).map((r) => ({ id: r.id, max: r.limit, windowMs: r.windowMs }));
  return makePolicy(rules);
}

export async function dbInitCommand(pool: Pool, target: string, fallback: Policy): Promise<DbInitReport> {
  const report = await migrate(pool);
  const { policy } = await readEffectivePolicy(pool, fallback);
  return {
    database: target,
    applied: report.applied.map((m) => `${String(m.id).padStart(3, '0')}_${m.name}`),
    alreadyApplied: report.alreadyApplied,
    schemaVersion: report.latest,
    stats: await statsCommand(pool, statsPolicy(policy, fallback)),
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
