// `ratelimit block <phone> | --prefix <+digits>`: every consume for the number (or the range) is
// denied with reason number_blocked, rule list:block, until --for runs out or it is unlisted.
// The data function also serves `allow` (allow.ts): one entry per target, either kind.
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Pool } from '../../db/pool.js';
import { ensureSchema } from '../../db/open.js';
import { setListEntries, setListEntry, readListEntries, type ListKind } from '../../db/lists.js';
import { readPolicyUsage } from '../policy-usage.js';
import { TrafficReader } from '../traffic-view.js';
import { countryPrefix, rangePrefix } from '../../core/traffic.js';
import type { Policy } from '../../core/policy/types.js';
import type { PriceTable } from '../../core/prices.js';
import { parsePrefix } from '../../core/lists.js';
import { UsageError } from '../usage.js';
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
  /** `block` takes several (one transaction); `allow` one. */
  prefix?: string | string[];
  for?: string;
  reason?: string;
}

interface BlockOptions extends SetOptions {
  top?: string[];
  dryRun?: boolean;
}

export interface BlockManyReport {
  /** What was picked by --top, and why; empty for --prefix A B C. */
  picked: Array<{ prefix: string; why: string }>;
  /** Keys --top could not turn into a prefix (a country sharing its calling code). */
  skipped: Array<{ key: string; why: string }>;
  entries: EntryView[];
  dryRun: boolean;
}

const MAX_TOP = 100;
// Keys read per aggregate rule for `--top <rule> N`.
const TOP_RULE_KEYS = MAX_TOP;

/** `--top <range|country|rule id> N`: checked before any connection. */
export function parseTop(values: readonly string[]): { what: string; n: number } {
  const [what, nText, ...rest] = values;
  const n = Number(nText);
  if (what === undefined || nText === undefined || rest.length > 0 || !/^\d+$/.test(nText) || n < 1 || n > MAX_TOP) {
    throw new UsageError(`--top takes what and how many, e.g. --top range 3 (range, country, or an aggregate rule id like prefix:1h; 1 to ${MAX_TOP})`);
  }
  if (what !== 'range' && what !== 'country' && !/^(prefix|country)(:[A-Z]{2})?:[0-9a-z]+$/.test(what)) {
    throw new UsageError(`--top ${what}: say range, country, or an aggregate rule id (prefix:1h, country:1h, country:GB:1h)`);
  }
  return { what, n };
}

/**
 * The N hottest keys as prefixes: ranges and countries furthest above their normal share now (what
 * `top` lists first), or an aggregate rule's keys closest to their limit. Already-blocked keys are
 * skipped, so running it again blocks the next ones.
 */
export async function pickTop(pool: Pool, what: string, n: number, fallback: Policy, prices: PriceTable): Promise<Pick<BlockManyReport, 'picked' | 'skipped'>> {
  const lists = await readListEntries(pool);
  const blocked = lists.entries.filter((e) => e.kind === 'block' && e.targetType === 'prefix').map((e) => e.target);
  const isBlocked = (prefix: string) => blocked.some((b) => prefix.startsWith(b));
  const picked: BlockManyReport['picked'] = [];
  const skipped: BlockManyReport['skipped'] = [];
  const take = (prefix: string, why: string) => {
    if (picked.length < n && !isBlocked(prefix) && !picked.some((p) => p.prefix === prefix)) picked.push({ prefix, why });
  };
  const country = (region: string, why: string) => {
    const c = countryPrefix(region);
    if (c.prefix !== undefined) take(c.prefix, `${region} ${why}`);
    else if (picked.length < n) skipped.push({ key: region, why: c.why });
  };
  if (what === 'range' || what === 'country') {
    const view = await new TrafficReader(prices).read(pool, blocked);
    for (const m of view.rows) {
      if (m.kind !== what || m.blocked || m.numbers === 0 || m.excess <= 0) continue;
      const why = `${m.numbers} numbers, ${m.calls} calls in ${humanizeMs(view.windowMs)}${m.ratio === null ? '' : m.ratio === Infinity ? ', new' : `, ×${m.ratio.toFixed(1)} its normal share`}`;
      if (m.kind === 'range') take(rangePrefix(m.key), `${m.key} (${m.country}) ${why}`);
      else country(m.key, why);
    }
    return { picked, skipped };
  }
  const usage = await readPolicyUsage(pool, fallback, TOP_RULE_KEYS);
  const rows = usage.aggregates.filter((a) => a.ruleId === what);
  if (!usage.aggregates.some((a) => a.ruleId === what) && !rows.length) {
    const ids = [...new Set(usage.aggregates.map((a) => a.ruleId))];
    if (ids.length === 0) throw new UsageError(`--top ${what}: no aggregate rule counts anything now (the active policy's prefix and country rules)`);
    if (!ids.includes(what)) throw new UsageError(`--top ${what}: not an aggregate rule counting anything now; try ${ids.join(', ')}`);
  }
  for (const a of rows) {
    const why = `${a.used}/${a.limit} on ${a.ruleId}`;
    if (a.group === 'prefix') take(a.label.replace(/•+$/, ''), `${a.label} ${why}`);
    else if (a.group === 'country') country(a.label, why);
  }
  return { picked, skipped };
}

export function printBlockMany(r: BlockManyReport): string {
  const lines: string[] = [];
  for (const p of r.picked) lines.push(`${p.prefix}  ${p.why}`);
  for (const s of r.skipped) lines.push(`skipped ${s.key}: ${s.why}`);
  if (r.dryRun) {
    lines.push(
      r.picked.length === 0 ? 'Nothing to block.' : `Would block ${r.picked.length} prefix${r.picked.length === 1 ? '' : 'es'} (--dry-run: nothing changed).`,
    );
    return lines.join('\n');
  }
  if (r.entries.length === 0) return [...lines, 'Nothing blocked.'].join('\n');
  const e0 = r.entries[0]!;
  lines.push(
    `${r.entries.length} prefix${r.entries.length === 1 ? '' : 'es'} blocked ${untilText(e0.expiresAt, Date.parse(e0.createdAt))}, in one change; ${LIST_PROPAGATION_NOTE}:`,
  );
  for (const e of r.entries) lines.push(`  ${e.target}`);
  lines.push(`by ${e0.createdBy}${e0.reason ? `: ${e0.reason}` : ''}`);
  return lines.join('\n');
}

/** `block --prefix A B C` and `block --top ...`: every prefix in one transaction and one notification. */
async function runBlockMany(io: Io, cmd: Command, phone: string | undefined, opts: BlockOptions, prefixes: string[]): Promise<void> {
  if (phone !== undefined) throw new UsageError('block takes a number, --prefix or --top, one of them');
  if (opts.top && prefixes.length > 0) throw new UsageError('block takes --prefix or --top, not both');
  const top = opts.top ? parseTop(opts.top) : undefined;
  const parsed = prefixes.map((text) => {
    const p = parsePrefix(text);
    if (!p) throw new UsageError(`--prefix must be "+" and 1 to 15 digits, e.g. +4470, got "${text}"`);
    return p;
  });
  const forMs = parseFor(opts.for);
  const by = operatorName(io.env);
  const reason = cleanReason(opts.reason ?? (top ? `block --top ${top.what} ${top.n}` : undefined));
  const report = await withDatabaseNoKey(cmd, io, async ({ db, config }) => {
    await ensureSchema(db);
    const chosen = top
      ? await pickTop(db.pool, top.what, top.n, config.defaultPolicy, config.prices)
      : { picked: parsed.map((prefix) => ({ prefix, why: 'given' })), skipped: [] };
    const dryRun = opts.dryRun === true;
    const unique = [...new Set(chosen.picked.map((p) => p.prefix))];
    const entries =
      dryRun || unique.length === 0
        ? []
        : await setListEntries(
            db.pool,
            unique.map((target) => ({ targetType: 'prefix' as const, target, masked: target, kind: 'block' as const, forMs, by, reason })),
          );
    const out: BlockManyReport = { picked: top ? chosen.picked : [], skipped: chosen.skipped, entries: entries.map((e) => entryView(e.entry)), dryRun };
    return out;
  });
  emit(io, cmd, report, () => printBlockMany(report));
}

/** The action of `block` and `allow`: validate everything before a key or connection. */
export async function runListSet(io: Io, cmd: Command, kind: ListKind, phone: string | undefined, opts: SetOptions): Promise<void> {
  const prefixes = opts.prefix === undefined ? [] : Array.isArray(opts.prefix) ? opts.prefix : [opts.prefix];
  if (kind === 'block' && (prefixes.length > 1 || (opts as BlockOptions).top || (opts as BlockOptions).dryRun)) {
    return runBlockMany(io, cmd, phone, opts as BlockOptions, prefixes);
  }
  const target = checkTarget(kind, { phone, prefix: prefixes[0] });
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
    .addOption(new Option('--prefix <+digits...>', 'block ranges instead: every number starting with these digits, e.g. +4470 (several: one change)'))
    .addOption(
      new Option(
        '--top <what-and-n...>',
        "block the N hottest: `range N` / `country N` (furthest above normal now, as top shows) or `<rule id> N` (an aggregate rule's keys closest to their limit, e.g. prefix:1h)",
      ),
    )
    .option('--dry-run', 'with --top or several --prefix: print what would be blocked, change nothing')
    .option('--for <duration>', FOR_HELP)
    .option('--reason <text>', 'why (kept with the entry and in the audit table)')
    .option('--json', 'print one JSON document')
    .action((phone: string | undefined, opts: BlockOptions, cmd: Command) => runListSet(io, cmd, 'block', phone, opts));
}
