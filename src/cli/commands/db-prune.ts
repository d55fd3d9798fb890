// `ratelimit db prune`: one retention pass now (src/db/retention.ts), under the effective
// policy's horizon, printing what it deleted per table. Waits for a daemon's pass in progress
// rather than skipping, so what it prints is what this run did. Needs no hashing key.
import type { Command } from 'commander';
import { DECISION_ID_HORIZON_MS } from '../../core/decision-id.js';
import { RateLimitError } from '../../core/errors.js';
import { formatDurationMs } from '../../core/duration.js';
import { outcomeRetentionMs } from '../../core/policy/conversion.js';
import { retentionHorizonMs } from '../../core/policy/horizon.js';
import { SQLSTATE } from '../../db/errors.js';
import { openDatabase } from '../../db/open.js';
import { readEffectivePolicy } from '../../db/policies.js';
import type { Pool } from '../../db/pool.js';
import { pruneOnce, type PruneCounts } from '../../db/retention.js';
import type { Config } from '../../core/config.js';
import { configFrom, emit, type Io } from '../context.js';

export interface DbPruneReport {
  database: string;
  policyVersion: number;
  horizonMs: number;
  /** Outcomes are kept this long after their decision (the id horizon, the policy's horizon, the baseline's history). */
  outcomeRetentionMs: number;
  auditRetentionMs: number;
  deleted: PruneCounts;
}

export async function dbPruneCommand(pool: Pool, target: string, config: Pick<Config, 'defaultPolicy' | 'auditRetentionMs'>): Promise<DbPruneReport> {
  try {
    const { policy, version } = await readEffectivePolicy(pool, config.defaultPolicy);
    const horizonMs = retentionHorizonMs(policy);
    const outcomesMs = Math.max(horizonMs, DECISION_ID_HORIZON_MS, outcomeRetentionMs(policy));
    const { counts } = await pruneOnce(pool, {
      horizonMs,
      outcomeRetentionMs: outcomesMs,
      blockDecayMs: policy.blocks?.decayMs ?? 0,
      auditRetentionMs: config.auditRetentionMs,
      wait: true,
    });
    return { database: target, policyVersion: version, horizonMs, outcomeRetentionMs: outcomesMs, auditRetentionMs: config.auditRetentionMs, deleted: counts };
  } catch (err) {
    if ((err as { code?: string }).code === SQLSTATE.UNDEFINED_TABLE) {
      throw new RateLimitError('database_error', `${target} has no ratelimit schema yet; run \`ratelimit db init\` first`, { cause: err });
    }
    throw err;
  }
}

export function printDbPrune(r: DbPruneReport): string {
  const width = Math.max(...Object.keys(r.deleted).map((t) => t.length));
  const lines = Object.entries(r.deleted).map(([table, n]) => `  ${table.padEnd(width)}  ${n}`);
  return [
    `Pruned ${r.database} (rows idle for ${formatDurationMs(r.horizonMs)}, the policy's longest window; ` +
      `audit rows older than ${formatDurationMs(r.auditRetentionMs)}; outcomes of decisions older than ${formatDurationMs(r.outcomeRetentionMs)}). Rows deleted:`,
    ...lines,
  ].join('\n');
}

export function register(program: Command, io: Io): void {
  // `db` is created by db-init.ts, registered first.
  const db = program.commands.find((c) => c.name() === 'db') ?? program.command('db').description('database administration');
  db.command('prune')
    .description('delete now what retention would delete: rows that can no longer affect any decision, audit rows past RATELIMIT_AUDIT_RETENTION')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const config = configFrom(cmd, io);
      const database = await openDatabase(config, { applicationName: 'ratelimit db prune', createEmbedded: false });
      let report: DbPruneReport;
      try {
        report = await dbPruneCommand(database.pool, database.target, config);
      } finally {
        await database.close();
      }
      emit(io, cmd, report, () => printDbPrune(report));
    });
}
