// `ratelimit block <phone> | --prefix <+digits>`: every consume for the number (or the range) is
// denied with reason number_blocked, rule list:block, until --for runs out or it is unlisted.
// The data function also serves `allow` (allow.ts): one entry per target, either kind.
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Pool } from '../../db/pool.js';
import { ensureSchema } from '../../db/open.js';
import { setListEntry, type ListKind } from '../../db/lists.js';
import { emit, withDatabase, withDatabaseNoKey, type Io } from '../context.js';
import { operatorName } from '../operator.js';
import { humanizeMs } from '../../core/duration.js';
import {
  checkTarget,
  cleanReason,
  describeTarget,
  entryView,
  LIST_PROPAGATION_NOTE,
  parseFor,
  resolveTarget,
  untilText,
  type EntryView,
  type ResolvedTarget,
} from '../list-target.js';

export interface ListSetReport {
  entry: EntryView;
  /** The kind this target had before (a number is blocked or allowed, not both), or null. */
  replaced: ListKind | null;
}

export async function listSetCommand(
  pool: Pool,
  target: ResolvedTarget,
  kind: ListKind,
  forMs: number | undefined,
  by: string,
  reason: string | undefined,
): Promise<ListSetReport> {
  const out = await setListEntry(pool, { ...target, kind, forMs, by, reason: cleanReason(reason) });
  return { entry: entryView(out.entry), replaced: out.replaced?.kind ?? null };
}

export function printListSet(r: ListSetReport): string {
  const e = r.entry;
  const verb = e.kind === 'block' ? 'blocked' : 'allowed (exempt from every rule and destination control)';
  const lines = [`${describeTarget(e)}: ${verb} ${untilText(e.expiresAt, Date.parse(e.createdAt))}; ${LIST_PROPAGATION_NOTE}.`];
  if (r.replaced && r.replaced !== e.kind) lines.push(`(this replaces its ${r.replaced} entry)`);
  else if (r.replaced) lines.push('(this replaces its previous entry: new expiry, who and reason)');
  lines.push(`by ${e.createdBy}${e.reason ? `: ${e.reason}` : ''}`);
  return lines.join('\n');
}

export interface SetOptions {
  prefix?: string;
  for?: string;
  reason?: string;
}

/** The action of `block` and `allow`: validate everything before a key or connection. */
export async function runListSet(io: Io, cmd: Command, kind: ListKind, phone: string | undefined, opts: SetOptions): Promise<void> {
  const target = checkTarget(kind, { phone, prefix: opts.prefix });
  const forMs = parseFor(opts.for);
  const by = operatorName(io.env);
  const report =
    target.type === 'prefix'
      ? await withDatabaseNoKey(cmd, io, async ({ db }) => {
          await ensureSchema(db);
          return listSetCommand(db.pool, resolveTarget(target, undefined), kind, forMs, by, opts.reason);
        })
      : await withDatabase(cmd, io, async ({ key, db }) => {
          await ensureSchema(db);
          return listSetCommand(db.pool, resolveTarget(target, key), kind, forMs, by, opts.reason);
        });
  emit(io, cmd, report, () => printListSet(report));
}

export const FOR_HELP = `how long, e.g. 30m, 12h, 7d (at most ${humanizeMs(366 * 86_400_000)}); default: until unlisted`;

export function register(program: Command, io: Io): void {
  program
    .command('block')
    .description(`deny every consume for a number, or every number starting with a prefix; audited; ${LIST_PROPAGATION_NOTE}`)
    .argument('[phone]', 'number in international format, e.g. +14155552671')
    .addOption(new Option('--prefix <+digits>', 'block a range instead: every number starting with these digits, e.g. +4470'))
    .option('--for <duration>', FOR_HELP)
    .option('--reason <text>', 'why (kept with the entry and in the audit table)')
    .option('--json', 'print one JSON document')
    .action((phone: string | undefined, opts: SetOptions, cmd: Command) => runListSet(io, cmd, 'block', phone, opts));
}
