// `ratelimit unlist <phone> | --prefix <+digits>`: removes the block or allow entry of a target,
// and lifts its automatic blocks (a number's own; for a prefix, every range block at or under
// it): they end now and keep their level, so decay still applies (docs/protocol.md, `blocks`).
// Removing what is not listed is not an error (exit 0, says so): scripts may unlist twice.
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Pool } from '../../db/pool.js';
import { ensureSchema } from '../../db/open.js';
import { liftAutoBlocks, removeListEntry } from '../../db/lists.js';
import { readEffectivePolicy } from '../../db/policies.js';
import type { Policy } from '../../core/policy/types.js';
import { hashPhone, normalizePhone } from '../../core/phone.js';
import { isoTime } from '../format.js';
import { rangeLabel, reasonOfRule } from '../guard-view.js';
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
  /** Automatic blocks ended now (their level is kept: the next block escalates from it unless quiet for `decay`). */
  lifted: Array<{ targetType: 'prefix' | 'number'; target: string; rule: string; reason: string; level: number; wasUntil: string }>;
}

export interface UnlistOptions {
  /** The policy in force: it names the lifted ranges' widths. */
  policy: Policy;
  /** Every hash of the number (during a key rotation, under the previous key too). */
  hashes?: readonly string[];
}

export async function unlistCommand(pool: Pool, target: ResolvedTarget, by: string, reason: string | undefined, opts?: UnlistOptions): Promise<UnlistReport> {
  const why = cleanReason(reason);
  const removed = await removeListEntry(pool, target.targetType, target.target, by, why);
  const lifted = opts
    ? await liftAutoBlocks(pool, { targetType: target.targetType, targets: opts.hashes ?? [target.target], masked: target.masked }, by, why)
    : { lifted: [] };
  return {
    targetType: target.targetType,
    target: target.masked,
    hash: target.targetType === 'number' ? target.target : null,
    removed: removed ? entryView(removed) : null,
    lifted: lifted.lifted.map((l) => ({
      targetType: l.targetType,
      target: l.targetType === 'prefix' ? rangeLabel(opts!.policy, l.ruleId, l.key) : target.masked,
      rule: l.ruleId,
      reason: reasonOfRule(l.ruleId),
      level: l.level,
      wasUntil: new Date(l.untilMs).toISOString(),
    })),
  };
}

export function printUnlist(r: UnlistReport): string {
  const who = describeTarget(r);
  const lifted = r.lifted.map(
    (l) =>
      `lifted the automatic block on ${l.target} (${l.rule}, level ${l.level || '—'}, was until ${isoTime(Date.parse(l.wasUntil))}; its level is kept for decay)`,
  );
  if (!r.removed && lifted.length === 0) return `${who} was not listed; nothing to remove.`;
  const parts = [...(r.removed ? [`removed its ${r.removed.kind} entry (set by ${r.removed.createdBy})`] : []), ...lifted];
  return `${who}: ${parts.join('; ')}; ${LIST_PROPAGATION_NOTE}.`;
}

export function register(program: Command, io: Io): void {
  program
    .command('unlist')
    .description(
      `remove the block or allow entry of a number or a prefix, and lift its automatic blocks (a prefix: every range block at or under it); audited; ${LIST_PROPAGATION_NOTE}`,
    )
    .argument('[phone]', 'number in international format, e.g. +14155552671')
    .addOption(new Option('--prefix <+digits>', 'the prefix entry to remove, e.g. +4470'))
    .option('--reason <text>', 'why (kept in the audit table)')
    .option('--json', 'print one JSON document')
    .action(async (phone: string | undefined, opts: { prefix?: string; reason?: string }, cmd: Command) => {
      const target = checkTarget('unlist', { phone, prefix: opts.prefix });
      const by = operatorName(io.env);
      const report =
        target.type === 'prefix'
          ? await withDatabaseNoKey(cmd, io, async ({ config, db }) => {
              await ensureSchema(db);
              const { policy } = await readEffectivePolicy(db.pool, config.defaultPolicy);
              return unlistCommand(db.pool, resolveTarget(target, undefined), by, opts.reason, { policy });
            })
          : await withDatabase(cmd, io, async ({ config, keys, db }) => {
              await ensureSchema(db);
              const { policy } = await readEffectivePolicy(db.pool, config.defaultPolicy);
              const { e164 } = normalizePhone(target.text);
              // During a key rotation the entry and the block may still be under the number's previous hash.
              const hashes = [keys.current, ...(keys.previous === undefined ? [] : [keys.previous])].map((k) => hashPhone(e164, k));
              const report = await unlistCommand(db.pool, resolveTarget(target, keys.current), by, opts.reason, { policy, hashes });
              if (report.removed || keys.previous === undefined) return report;
              const old = await unlistCommand(db.pool, resolveTarget(target, keys.previous), by, opts.reason);
              return old.removed ? { ...old, lifted: report.lifted } : report;
            });
      emit(io, cmd, report, () => printUnlist(report));
    });
}
