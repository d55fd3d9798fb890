// `ratelimit list`: the block and allow entries in force now (expired ones never match and are
// not shown; retention deletes them), newest first.
import type { Command } from 'commander';
import type { Pool } from '../../db/pool.js';
import { ensureSchema } from '../../db/open.js';
import { readListEntries } from '../../db/lists.js';
import { readListHits, DECISION_COUNTS_RETENTION_MS } from '../../db/decision-counts.js';
import { humanizeMs } from '../../core/duration.js';
import { hashPrefix } from '../../core/phone.js';
import { emit, withDatabaseNoKey, type Io } from '../context.js';
import { isoTime, table, when } from '../format.js';
import { entryView, type EntryView } from '../list-target.js';

export interface ListReport {
  /** The database clock, ms since epoch. */
  now: number;
  /** `deniedCalls`: consumes a block entry denied over the last `hitsWindowMs` (the daemons' per-minute rollup, a day); null for allow entries. */
  entries: Array<EntryView & { deniedCalls: number | null }>;
  hitsWindowMs: number;
}

export async function listCommand(pool: Pool): Promise<ListReport> {
  const [{ nowMs, entries }, hits] = await Promise.all([readListEntries(pool), readListHits(pool)]);
  return {
    now: nowMs,
    hitsWindowMs: DECISION_COUNTS_RETENTION_MS,
    entries: entries.map((e) => ({ ...entryView(e), deniedCalls: e.kind === 'block' ? (hits.get(`${e.targetType}:${e.target}`) ?? 0) : null })),
  };
}

export function printList(r: ListReport): string {
  if (r.entries.length === 0) return 'No block or allow entries.';
  const t = table(['number or prefix', 'hash', 'kind', `denied (${humanizeMs(r.hitsWindowMs)})`, 'until', 'by', 'when', 'reason']);
  for (const e of r.entries) {
    const until = e.expiresAt === null ? 'unlisted' : when(Date.parse(e.expiresAt), r.now);
    t.push([
      e.target,
      e.hash ? `${hashPrefix(e.hash)}…` : '—',
      e.kind,
      e.deniedCalls === null ? '—' : String(e.deniedCalls),
      until,
      e.createdBy,
      isoTime(Date.parse(e.createdAt)),
      e.reason ?? '—',
    ]);
  }
  const n = r.entries.length;
  return `${t.toString()}\n${n} entr${n === 1 ? 'y' : 'ies'}. A number's own entry wins over a prefix entry; among prefixes the longest matches. Denied: consumes the entry refused, as the daemons' heartbeats report them.`;
}

export function register(program: Command, io: Io): void {
  program
    .command('list')
    .description('the block and allow entries in force: masked number or prefix, hash, kind, calls denied, until, who, when, reason')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabaseNoKey(cmd, io, async ({ db }) => {
        await ensureSchema(db);
        return listCommand(db.pool);
      });
      emit(io, cmd, report, () => printList(report));
    });
}
