// `ratelimit list`: the block and allow entries in force now (expired ones never match and are
// not shown; retention deletes them), newest first.
import type { Command } from 'commander';
import type { Pool } from '../../db/pool.js';
import { ensureSchema } from '../../db/open.js';
import { readListEntries } from '../../db/lists.js';
import { hashPrefix } from '../../core/phone.js';
import { emit, withDatabaseNoKey, type Io } from '../context.js';
import { isoTime, table, when } from '../format.js';
import { entryView, type EntryView } from '../list-target.js';

export interface ListReport {
  /** The database clock, ms since epoch. */
  now: number;
  entries: EntryView[];
}

export async function listCommand(pool: Pool): Promise<ListReport> {
  const { nowMs, entries } = await readListEntries(pool);
  return { now: nowMs, entries: entries.map(entryView) };
}

export function printList(r: ListReport): string {
  if (r.entries.length === 0) return 'No block or allow entries.';
  const t = table(['number or prefix', 'hash', 'kind', 'until', 'by', 'when', 'reason']);
  for (const e of r.entries) {
    const until = e.expiresAt === null ? 'unlisted' : when(Date.parse(e.expiresAt), r.now);
    t.push([e.target, e.hash ? `${hashPrefix(e.hash)}…` : '—', e.kind, until, e.createdBy, isoTime(Date.parse(e.createdAt)), e.reason ?? '—']);
  }
  const n = r.entries.length;
  return `${t.toString()}\n${n} entr${n === 1 ? 'y' : 'ies'}. A number's own entry wins over a prefix entry; among prefixes the longest matches.`;
}

export function register(program: Command, io: Io): void {
  program
    .command('list')
    .description('the block and allow entries in force: masked number or prefix, hash, kind, until, who, when, reason')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabaseNoKey(cmd, io, async ({ db }) => {
        await ensureSchema(db);
        return listCommand(db.pool);
      });
      emit(io, cmd, report, () => printList(report));
    });
}
