// `ratelimit policy check|apply|show`: the fleet's one policy, validated before anything is
// stored, stored as a new version only when it differs from the active one, and shown with who
// applied it. Parsing, printing and diffing live in src/core/policy/file.ts; storage in
// src/db/policies.ts.
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import type { Pool } from '../../db/pool.js';
import { ensureSchema } from '../../db/open.js';
import { applyPolicy, parseStoredPolicy, readActivePolicy, readEffectivePolicy, type StoredPolicy } from '../../db/policies.js';
import { describePolicyChanges, formatPolicy, parsePolicyFile, policyToJson, policyToYaml } from '../../core/policy/file.js';
import { ruleIds } from '../../core/policy/subject.js';
import type { Policy } from '../../core/policy/types.js';
import { emit, withDatabaseNoKey, type Io } from '../context.js';
import { operatorName } from '../operator.js';
import { UsageError } from '../usage.js';
import { isoTime } from '../format.js';
import { countryListShare, replayPolicy, type WhatIf } from '../../core/policy/whatif.js';
import { readRecentCalls, readTrafficBaseline } from '../../db/traffic.js';
import { parseDurationMs, formatDurationMs } from '../../core/duration.js';
import { table } from '../format.js';
import { mergePolicyText, parseAssignment, setPolicyText, type Assignment } from '../../core/policy/merge.js';

const MAX_REASON_LENGTH = 500;
/** What `policy apply` promises: daemons poll rate_limit_changes every second (NOTIFY is faster). */
export const PROPAGATION_NOTE = 'every daemon switches to it within 2 s';

export interface CheckedFile {
  policy: Policy;
  yaml: string;
  warnings: string[];
}

/**
 * Reads and validates a policy file. Invalid: every problem on stderr as `file:line:column:
 * message` (the form editors and CI annotate), then a UsageError (exit 2).
 */
export async function readPolicyFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new UsageError(`cannot read policy file ${file}: ${why}`, { cause: err });
  }
}

export async function checkPolicyFile(file: string, io: Io, applying = false): Promise<CheckedFile> {
  return checkPolicyText(await readPolicyFile(file), file, io, applying);
}

/** Validates policy text (a file, or a merge's result named `file` in messages). */
export function checkPolicyText(text: string, file: string, io: Io, applying = false): CheckedFile {
  const parsed = parsePolicyFile(text);
  if (!parsed.ok) {
    for (const p of parsed.problems) io.err(`${file}:${p.line}:${p.column}: ${p.message}`);
    const n = parsed.problems.length;
    throw new UsageError(`${file} is not a valid policy (${n} problem${n === 1 ? '' : 's'})${applying ? '; nothing was applied' : ''}`);
  }
  for (const w of parsed.warnings) io.err(`warning: ${w}`);
  return { policy: parsed.policy, yaml: text, warnings: parsed.warnings };
}

// The longest --against: the active set's reach (about a day).
const MAX_AGAINST_MS = 24 * 3_600_000;
/** `policy apply` warns when the country list would have denied more than this share of the last day. */
export const COUNTRY_LIST_WARN_SHARE = 0.03;

export interface WhatIfReport extends WhatIf {
  windowMs: number;
  /** The active policy's longest number window: a row keeps its calls that long. */
  keptMs: number | null;
}

export async function whatIfCommand(pool: Pool, candidate: Policy, fallback: Policy, windowMs: number): Promise<WhatIfReport> {
  const [recent, effective] = await Promise.all([readRecentCalls(pool, windowMs), readEffectivePolicy(pool, fallback)]);
  const calls = recent.rows.flatMap((r) => r.calls.map((t) => ({ number: r.hash, country: r.country, range: r.range, t })));
  const out = replayPolicy(candidate, calls);
  const keptMs = effective.policy.number.length > 0 ? Math.max(...effective.policy.number.map((r) => r.windowMs)) : null;
  const notes = [...out.notReconstructed, 'calls the active policy denied: their times are not stored, so they are not replayed (only allowed calls are)'];
  if (keptMs !== null && keptMs < windowMs)
    notes.unshift(
      `a number keeps its calls for the active policy's longest number window (${formatDurationMs(keptMs)}): older calls in the ${formatDurationMs(windowMs)} asked for are missing`,
    );
  if (keptMs === null) notes.unshift('the active policy has no number rule: how long a number keeps its calls depends on the last one that had');
  return { ...out, notReconstructed: notes, windowMs, keptMs };
}

const pctOf = (n: number, total: number) => (total === 0 ? '0%' : `${((n * 100) / total).toFixed(1)}%`);

export function printWhatIf(r: WhatIfReport): string {
  const w = formatDurationMs(r.windowMs);
  const lines = [`What-if against the last ${w}: ${r.calls} allowed calls to ${r.numbers} numbers replayed through this policy.`];
  if (r.rules.length > 0) {
    const t = table(['rule', 'would deny', 'of all calls', "by country (share of that country's calls)"]);
    for (const o of r.rules) {
      const by = Object.entries(o.byCountry)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 8)
        .map(([c, n]) => `${c} ${n} (${pctOf(n, r.callsByCountry[c] ?? 0)})`)
        .join(', ');
      t.push([o.shadow ? `${o.rule} (shadow)` : o.rule, String(o.denied), pctOf(o.denied, r.calls), by]);
    }
    lines.push(t.toString());
  }
  lines.push(`In all: ${r.denied} of ${r.calls} calls (${pctOf(r.denied, r.calls)}) would have been denied.`);
  if (r.calls > 0 && r.denied / r.calls > COUNTRY_LIST_WARN_SHARE)
    lines.push(`WARNING: that is more than ${COUNTRY_LIST_WARN_SHARE * 100}% of real traffic; check the rules above before applying.`);
  if (r.notReconstructed.length > 0) lines.push('Not reconstructed:', ...r.notReconstructed.map((n) => `  - ${n}`));
  return lines.join('\n');
}

/** A warning when the candidate's country list would have denied more than a few percent of the last day's numbers. */
async function countryListWarning(pool: Pool, candidate: Policy): Promise<string | null> {
  if (!candidate.destinations.countries) return null;
  const day = await readTrafficBaseline(pool, MAX_AGAINST_MS, 0);
  const hit = countryListShare(candidate, day.countries);
  if (!hit || hit.share <= COUNTRY_LIST_WARN_SHARE) return null;
  const top = hit.countries
    .slice(0, 8)
    .map(([c]) => c)
    .join(', ');
  return `destinations.countries would have denied ${(hit.share * 100).toFixed(1)}% of the last day's active numbers (${top}${hit.countries.length > 8 ? ', …' : ''}); run \`ratelimit policy check FILE --against 1h\` to see it rule by rule`;
}

export interface ApplyReport {
  /** false: the file enforces exactly what the active version does; no version was stored. */
  changed: boolean;
  version: number;
  previousVersion: number | null;
  /** One line per change (describePolicyChanges); empty when none. */
  changes: string[];
  appliedBy: string;
  appliedAt: string;
  reason: string | null;
  warnings: string[];
}

const canonical = (p: Policy): string => policyToYaml(p);

/**
 * Idempotent: a file whose policy (in canonical form, comments and layout aside) equals the
 * active version stores nothing, so re-running a deploy step does not bump the version, audit
 * a non-change, or make every daemon reload. Over the RATE_LIMIT_* default an identical file
 * IS stored: it moves the policy into the database, where the environment no longer changes it.
 */
export async function applyPolicyCommand(pool: Pool, checked: CheckedFile, fallback: Policy, by: string, reason: string | undefined): Promise<ApplyReport> {
  const why = reason?.trim() ? reason.trim().slice(0, MAX_REASON_LENGTH) : null;
  const active = await readActivePolicy(pool);
  if (active && canonical(parseStoredPolicy(active)) === canonical(checked.policy)) {
    return {
      changed: false,
      version: active.version,
      previousVersion: active.version,
      changes: [],
      appliedBy: active.appliedBy,
      appliedAt: active.appliedAt.toISOString(),
      reason: active.reason,
      warnings: checked.warnings,
    };
  }
  const out = await applyPolicy(pool, { yaml: checked.yaml, by, reason: why });
  const before = out.previous ? parseStoredPolicy(out.previous) : fallback;
  return {
    changed: true,
    version: out.applied.version,
    previousVersion: out.previous?.version ?? null,
    changes: describePolicyChanges(before, checked.policy),
    appliedBy: out.applied.appliedBy,
    appliedAt: out.applied.appliedAt.toISOString(),
    reason: out.applied.reason,
    warnings: checked.warnings,
  };
}

export function printApply(r: ApplyReport): string {
  if (!r.changed) {
    return `no change: the file enforces exactly what version ${r.version} (applied by ${r.appliedBy} at ${isoTime(Date.parse(r.appliedAt))}) does; nothing was stored.`;
  }
  const from = r.previousVersion === null ? 'the RATE_LIMIT_* default' : `version ${r.previousVersion}`;
  const lines =
    r.changes.length > 0
      ? [`changes from ${from}:`, ...r.changes.map((c) => `  ${c}`)]
      : [`no rule changes from ${from}; the policy now lives in the database (RATE_LIMIT_* no longer apply)`];
  lines.push(`version ${r.version} is active; ${PROPAGATION_NOTE}`);
  return lines.join('\n');
}

export interface ShowReport {
  /** 0: none applied; the default built from RATE_LIMIT_* is in force. */
  version: number;
  source: 'database' | 'default';
  appliedBy: string | null;
  appliedAt: string | null;
  reason: string | null;
  rules: string[];
  /** The policy in force as structured JSON, in the file's keys (docs/protocol.md *Policy*). */
  policy: Record<string, unknown>;
  /** The policy in force, canonical (defaults written out). */
  yaml: string;
  /** The file as it was applied, comments included; null for the default. */
  appliedYaml: string | null;
}

export function showReport(policy: Policy, stored: StoredPolicy | null): ShowReport {
  return {
    version: stored?.version ?? 0,
    source: stored ? 'database' : 'default',
    appliedBy: stored?.appliedBy ?? null,
    appliedAt: stored?.appliedAt.toISOString() ?? null,
    reason: stored?.reason ?? null,
    rules: ruleIds(policy),
    policy: policyToJson(policy),
    yaml: policyToYaml(policy),
    appliedYaml: stored?.yaml ?? null,
  };
}

export function printShow(r: ShowReport, policy: Policy): string {
  const head =
    r.source === 'database'
      ? [
          `# version ${r.version}, applied by ${r.appliedBy} at ${r.appliedAt === null ? '—' : isoTime(Date.parse(r.appliedAt))}${r.reason ? `: ${r.reason}` : ''}`,
        ]
      : [
          '# no policy has been applied: this default, built from RATE_LIMIT_* (and --phone-limit/--phone-window), is in force',
          '# apply one with: ratelimit policy apply FILE',
        ];
  return `${head.join('\n')}\n${formatPolicy(policy)}`.replace(/\n$/, '');
}

export function register(program: Command, io: Io): void {
  const policy = program.command('policy').description("check, apply and show the fleet's rate-limit policy (a YAML file)");
  policy
    .command('check')
    .description('validate a policy file and print the policy it describes, or every problem with its line')
    .argument('<file>', 'policy YAML, e.g. docs/examples/policy.yaml')
    .option(
      '--against <duration>',
      'also replay the last DURATION of stored calls (e.g. 1h, at most 1d) through it: what each rule would have denied, by country',
    )
    .option('--json', 'with --against: print one JSON document')
    .action(async (file: string, opts: { against?: string }, cmd: Command) => {
      let againstMs: number | undefined;
      if (opts.against !== undefined) {
        const ms = parseDurationMs(opts.against);
        if (ms === null || ms <= 0 || ms > MAX_AGAINST_MS) throw new UsageError(`--against must be a duration up to 1d, e.g. 1h; got "${opts.against}"`);
        againstMs = ms;
      }
      const checked = await checkPolicyFile(file, io);
      if (againstMs === undefined) {
        io.out(formatPolicy(checked.policy).replace(/\n$/, ''));
        return;
      }
      const report = await withDatabaseNoKey(
        cmd,
        io,
        async ({ config, db }) => {
          await ensureSchema(db);
          return whatIfCommand(db.pool, checked.policy, config.defaultPolicy, againstMs);
        },
        { readTimeout: true },
      );
      emit(io, cmd, report, () => printWhatIf(report));
    });
  policy
    .command('apply')
    .description(`validate a policy file and make it the active policy (a new version, audited); ${PROPAGATION_NOTE}`)
    .argument('<file>', 'policy YAML')
    .option('--reason <text>', 'why (kept with the version and in the audit table)')
    .option('--merge', "replace only the groups the file names (null removes one); keep the active policy's other groups")
    .option('--json', 'print one JSON document')
    .action(async (file: string, opts: { reason?: string; merge?: boolean }, cmd: Command) => {
      // A merge's file is checked once merged: alone it may be a fragment (one group).
      const text = await readPolicyFile(file);
      const whole = opts.merge ? undefined : checkPolicyText(text, file, io, true);
      const report = await withDatabaseNoKey(cmd, io, async ({ config, db }) => {
        await ensureSchema(db);
        let checked = whole;
        if (!checked) {
          const effective = await readEffectivePolicy(db.pool, config.defaultPolicy);
          let merged: string;
          try {
            merged = mergePolicyText(effective.policy, text);
          } catch (err) {
            throw new UsageError(`${file}: ${(err as Error).message}`, { cause: err });
          }
          checked = checkPolicyText(merged, `${file} (merged)`, io, true);
        }
        const warning = await countryListWarning(db.pool, checked.policy);
        if (warning) io.err(`ratelimit: warning: ${warning}`);
        return applyPolicyCommand(db.pool, checked, config.defaultPolicy, operatorName(io.env), opts.reason);
      });
      emit(io, cmd, report, () => printApply(report));
    });
  policy
    .command('set')
    .description(
      `change keys of the active policy and apply the result, e.g. prefix.limits='[{limit: 10, window: 1h}]' or destinations.countries.deny='[CU, KP]' (null removes a key); ${PROPAGATION_NOTE}`,
    )
    .argument('<assignments...>', 'group.key=value, the value in YAML')
    .option('--reason <text>', 'why (kept with the version and in the audit table)')
    .option('--json', 'print one JSON document')
    .action(async (texts: string[], opts: { reason?: string }, cmd: Command) => {
      let assignments: Assignment[];
      try {
        assignments = texts.map(parseAssignment);
      } catch (err) {
        throw new UsageError((err as Error).message, { cause: err });
      }
      const report = await withDatabaseNoKey(cmd, io, async ({ config, db }) => {
        await ensureSchema(db);
        const effective = await readEffectivePolicy(db.pool, config.defaultPolicy);
        let text: string;
        try {
          text = setPolicyText(effective.policy, assignments);
        } catch (err) {
          throw new UsageError((err as Error).message, { cause: err });
        }
        const checked = checkPolicyText(text, 'policy set', io, true);
        const warning = await countryListWarning(db.pool, checked.policy);
        if (warning) io.err(`ratelimit: warning: ${warning}`);
        return applyPolicyCommand(db.pool, checked, config.defaultPolicy, operatorName(io.env), opts.reason);
      });
      emit(io, cmd, report, () => printApply(report));
    });
  policy
    .command('show')
    .description('print the active policy as YAML with its version, who applied it and when (or the default in force)')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const effective = await withDatabaseNoKey(cmd, io, async ({ config, db }) => {
        await ensureSchema(db);
        return readEffectivePolicy(db.pool, config.defaultPolicy);
      });
      const report = showReport(effective.policy, effective.stored);
      emit(io, cmd, report, () => printShow(report, effective.policy));
    });
}
