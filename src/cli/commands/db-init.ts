import type { Pool } from '../../db/pool.js';
import { migrate, migrationName } from '../../db/migrate.js';
import type { Policy } from '../../core/policy/types.js';
import { statsCommand, printStats, type StatsReport } from './stats.js';
import type { Command } from 'commander';
import { emit, withDatabaseInit, type Io } from '../context.js';
import type { KeyCheck } from '../../db/keys.js';

export interface DbInitReport {
  database: string;
  applied: string[];
  alreadyApplied: number;
  schemaVersion: number;
  /** The hashing key: recorded on first use, matched, or a rotation started; null when no key was given (DATABASE_URL without PHONE_ENCRYPTION_KEY). */
  key: { outcome: KeyCheck['outcome']; fingerprint: string; previousFingerprint: string | null } | null;
  stats: StatsReport;
}

/** `recordKey` runs after the migrations (the key record is one of them) and before the stats. */
export async function dbInitCommand(
  pool: Pool,
  target: string,
  fallback: Policy,
  recordKey: () => Promise<KeyCheck | undefined> = async () => undefined,
): Promise<DbInitReport> {
  const report = await migrate(pool);
  const key = await recordKey();
  return {
    database: target,
    applied: report.applied.map(migrationName),
    alreadyApplied: report.alreadyApplied,
    schemaVersion: report.latest,
    key: key ? { outcome: key.outcome, fingerprint: key.fingerprint, previousFingerprint: key.previousFingerprint ?? null } : null,
    // stats reads the effective policy (the database's active one, else `fallback`) itself.
    stats: await statsCommand(pool, fallback),
  };
}

export function printDbInit(r: DbInitReport): string {
  const head =
    r.applied.length > 0
      ? `Applied ${r.applied.length} migration${r.applied.length === 1 ? '' : 's'} to ${r.database}: ${r.applied.join(', ')}`
      : `${r.database} is up to date (schema version ${r.schemaVersion}); nothing to apply.`;
  return `${head}\n${keyLine(r.key)}\n${printStats(r.stats)}`;
}

function keyLine(k: DbInitReport['key']): string {
  if (k === null) return 'Hashing key: PHONE_ENCRYPTION_KEY is not set; the first daemon records its key.';
  if (k.outcome === 'recorded') return `Hashing key: recorded ${k.fingerprint} (first use of this database).`;
  if (k.outcome === 'rotated') return `Hashing key: rotation started from ${k.previousFingerprint} to ${k.fingerprint}; see ratelimit key status.`;
  return `Hashing key: ${k.fingerprint} matches the database's.`;
}

export function register(program: Command, io: Io): void {
  const db = program.command('db').description('database administration');
  db.command('init')
    .description(
      'apply pending migrations (idempotent, safe to run concurrently), record the hashing key on first use, print a stats summary; creates the embedded database when there is none',
    )
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabaseInit(cmd, io, ({ config, db, recordKey }) => dbInitCommand(db.pool, db.target, config.defaultPolicy, recordKey));
      emit(io, cmd, report, () => printDbInit(report));
    });
}
