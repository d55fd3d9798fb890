// `ratelimit list`: the block and allow entries in force now (expired ones never match and are
// not shown; retention deletes them), newest first, then the automatic blocks in force (kind
// `auto`: ranges blocked by a sweep or conversion rule, numbers by block_after; docs/protocol.md
// *Policy*, `blocks`) with their level and end, longest to run first.
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
import type { Policy } from '../../core/policy/types.js';
import { readEffectivePolicy } from '../../db/policies.js';
import { readGuardBlocks, type GuardBlock } from '../guard-view.js';

/** An automatic block as `list` shows it, beside the entries (same field names where they mean the same). */
export interface AutoBlockView {
  targetType: 'prefix' | 'number';
  /** The range (`+4477009•••`) or the masked number. */
  target: string;
  hash: string | null;
  kind: 'auto';
  /** The rule that tripped it: `sweep:prefix:1h`, `conversion:prefix:1h`, `number:block_after`. */
  rule: string;
  /** Its step in blocks.escalate (1-based); 0 for block_after without a `blocks` group. */
  level: number;
  expiresAt: string;
  createdBy: 'auto';
  createdAt: null;
  /** The reason its denials give. */
  reason: string;
  deniedCalls: null;
}

function autoView(b: GuardBlock): AutoBlockView {
  return {
    targetType: b.targetType,
    target: b.target,
    hash: b.hash,
    kind: 'auto',
    rule: b.rule,
    level: b.level,
    expiresAt: new Date(b.until).toISOString(),
    createdBy: 'auto',
    createdAt: null,
    reason: b.reason,
    deniedCalls: null,
  };
}

export interface ListReport {
  /** The database clock, ms since epoch. */
  now: number;
  /** `deniedCalls`: consumes a block entry denied over the last `hitsWindowMs` (the daemons' per-minute rollup, a day); null for allow entries. */
  entries: Array<(EntryView & { deniedCalls: number | null }) | AutoBlockView>;
  hitsWindowMs: number;
  /** Automatic blocks in force in all (entries lists at most a few hundred numbers). */
  autoBlocks: { ranges: number; numbers: number };
}

/** `fallback`: the RATE_LIMIT_* default policy, used only while none has been applied (it names the ranges' widths). */
export async function listCommand(pool: Pool, fallback: Policy): Promise<ListReport> {
  const effective = await readEffectivePolicy(pool, fallback);
  const [{ nowMs, entries }, hits, guard] = await Promise.all([readListEntries(pool), readListHits(pool), readGuardBlocks(pool, effective.policy)]);
  return {
    now: nowMs,
    hitsWindowMs: DECISION_COUNTS_RETENTION_MS,
    entries: [
      ...entries.map((e) => ({ ...entryView(e), deniedCalls: e.kind === 'block' ? (hits.get(`${e.targetType}:${e.target}`) ?? 0) : null })),
      ...guard.blocks.map(autoView),
    ],
    autoBlocks: guard.blocksTotal,
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
      e.kind === 'auto' ? `auto L${e.level || '—'}` : e.kind,
      e.deniedCalls === null ? '—' : String(e.deniedCalls),
      until,
      e.createdBy,
      e.createdAt === null ? '—' : isoTime(Date.parse(e.createdAt)),
      e.kind === 'auto' ? `${e.rule} (${e.reason})` : (e.reason ?? '—'),
    ]);
  }
  const auto = r.entries.filter((e) => e.kind === 'auto').length;
  const n = r.entries.length - auto;
  const lines = [
    t.toString(),
    ...(n > 0
      ? [
          `${n} entr${n === 1 ? 'y' : 'ies'}. A number's own entry wins over a prefix entry; among prefixes the longest matches. Denied: consumes the entry refused, as the daemons' heartbeats report them.`,
        ]
      : []),
  ];
  if (auto > 0 || r.autoBlocks.numbers > 0) {
    const more = r.autoBlocks.numbers + r.autoBlocks.ranges - auto;
    lines.push(
      `${r.autoBlocks.ranges + r.autoBlocks.numbers} automatic block${r.autoBlocks.ranges + r.autoBlocks.numbers === 1 ? '' : 's'} (kind auto, level L1.. of blocks.escalate)${more > 0 ? `, ${more} not shown` : ''}: they end by themselves; \`ratelimit unlist --prefix <range>\` or \`unlist <number>\` lifts one now and keeps its level for decay.`,
    );
  }
  return lines.join('\n');
}

export function register(program: Command, io: Io): void {
  program
    .command('list')
    .description(
      'the block and allow entries in force (masked number or prefix, hash, kind, calls denied, until, who, when, reason) and the automatic blocks (kind auto, level, until)',
    )
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabaseNoKey(cmd, io, async ({ config, db }) => {
        await ensureSchema(db);
        return listCommand(db.pool, config.defaultPolicy);
      });
      emit(io, cmd, report, () => printList(report));
    });
}
