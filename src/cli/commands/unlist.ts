// `ratelimit unlist <phone> | --prefix <+digits>`: removes the block or allow entry of a target.
// Removing what is not listed is not an error (exit 0, says so): scripts may unlist twice.
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Pool } from '../../db/pool.js';
import { ensureSchema } from '../../db/open.js';
import { removeListEntry } from '../../db/lists.js';
import { emit, withDatabase, withDatabaseNoKey, type Io } from '../context.js';
import { operatorName } from '../operator.js';
import {
  checkTarget,
  cleanReason,
  describeTarget,
  entryView,
  LIST_PROPAGATION_NOTE,
  resolveTarget,
  type EntryView,
  type ResolvedTarget,
} from '../list-target.js';

export interface UnlistReport {
  targetType: ResolvedTarget['targetType'];
  target: string;
  hash: string | null;
  /** The entry removed, or null when the target was not listed. */
  removed: EntryView | null;
}

export async function unlistCommand(pool: Pool, target: ResolvedTarget, by: string, reason: string | undefined): Promise<UnlistReport> {
  const removed = await removeListEntry(pool, target.targetType, target.target, by, cleanReason(reason));
  return {
    targetType: target.targetType,
    target: target.masked,
    hash: target.targetType === 'number' ? target.target : null,
    removed: removed ? entryView(removed) : null,
  };
}

export function printUnlist(r: UnlistReport): string {
  const who = describeTarget(r);
  if (!r.removed) return `${who} was not listed; nothing to remove.`;
  return `${who}: removed its ${r.removed.kind} entry (set by ${r.removed.createdBy}); ${LIST_PROPAGATION_NOTE}.`;
}

export function register(program: Command, io: Io): void {
  program
    .command('unlist')
    .description(`remove the block or allow entry of a number or a prefix; audited; ${LIST_PROPAGATION_NOTE}`)
    .argument('[phone]', 'number in international format, e.g. +14155552671')
    .addOption(new Option('--prefix <+digits>', 'the prefix entry to remove, e.g. +4470'))
    .option('--reason <text>', 'why (kept in the audit table)')
    .option('--json', 'print one JSON document')
    .action(async (phone: string | undefined, opts: { prefix?: string; reason?: string }, cmd: Command) => {
      const target = checkTarget('unlist', { phone, prefix: opts.prefix });
      const by = operatorName(io.env);
      const report =
        target.type === 'prefix'
          ? await withDatabaseNoKey(cmd, io, async ({ db }) => {
              await ensureSchema(db);
              return unlistCommand(db.pool, resolveTarget(target, undefined), by, opts.reason);
            })
          : await withDatabase(cmd, io, async ({ keys, db }) => {
              await ensureSchema(db);
              const report = await unlistCommand(db.pool, resolveTarget(target, keys.current), by, opts.reason);
              // During a key rotation the entry may still be under the number's previous hash.
              if (report.removed || keys.previous === undefined) return report;
              const old = await unlistCommand(db.pool, resolveTarget(target, keys.previous), by, opts.reason);
              return old.removed ? old : report;
            });
      emit(io, cmd, report, () => printUnlist(report));
    });
}
