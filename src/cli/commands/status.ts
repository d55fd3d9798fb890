import type { Pool } from '../../db/pool.js';
import { lookupPhone } from '../../db/queries.js';
import { hashPhone, hashPrefix, maskPhone, normalizePhone } from '../../core/phone.js';
import { evaluate, type Policy } from '../../core/policy.js';
import { formatDurationMs } from '../../core/duration.js';
import { isoTime, keyValueTable, relative } from '../format.js';
import type { Command } from 'commander';
import { ensureSchema } from '../../db/open.js';
import { emit, withDatabase, type Io } from '../context.js';

export interface StatusReport {
  phoneNumber: string;
  hash: string;
  region: string | null;
  tracked: boolean;
  allowed: boolean;
  limit: number;
  used: number;
  remaining: number;
  windowMs: number;
  resetTime: number;
  retryAfterMs: number;
  deniedInWindow: number;
  deniedTotal: number;
  lastCallAt: number | null;
  lastReset: { by: string; reason: string | null; at: string; previousCount: number } | null;
  now: number;
}

export async function statusCommand(pool: Pool, key: string, policy: Policy, phone: string): Promise<StatusReport> {
  const { e164, region } = normalizePhone(phone);
  const hash = hashPhone(e164, key);
  const { nowMs, row, lastReset } = await lookupPhone(pool, hash);
  const d = evaluate(row?.calls ?? [], nowMs, policy);
  const windowMs = policy.rules.find((r) => r.id === d.ruleId)!.windowMs;
  // The same reading as `stats`: denials counted since the number's denial window opened.
  const deniedInWindow = row && row.deniedWindowStart > nowMs - policy.rules[0]!.windowMs ? row.deniedInWindow : 0;
  return {
    phoneNumber: maskPhone(e164),
    hash,
    region: row?.region ?? region ?? null,
    tracked: row !== null,
    allowed: d.allowed,
    limit: d.limit,
    used: d.used,
    remaining: d.remaining,
    windowMs,
    resetTime: d.resetTime,
    retryAfterMs: d.retryAfterMs,
    deniedInWindow,
    deniedTotal: row?.deniedTotal ?? 0,
    lastCallAt: row?.lastCallAt ?? null,
    lastReset: lastReset
      ? { by: lastReset.resetBy, reason: lastReset.reason, at: lastReset.resetAt.toISOString(), previousCount: lastReset.previousCount }
      : null,
    now: nowMs,
  };
}

export function printStatus(r: StatusReport): string {
  const rows: Array<[string, string]> = [
    ['number', `${r.phoneNumber}${r.region ? ` (${r.region})` : ''}`],
    ['hash', `${hashPrefix(r.hash)}…`],
    ['used', `${r.used} of ${r.limit} per ${formatDurationMs(r.windowMs)}`],
    ['remaining', String(r.remaining)],
    ['next call', r.allowed ? 'allowed now' : `denied, allowed ${relative(r.resetTime, r.now)} (${isoTime(r.resetTime)})`],
  ];
  if (r.allowed && r.used > 0) rows.push(['window frees', `${relative(r.resetTime, r.now)} (${isoTime(r.resetTime)})`]);
  rows.push(['denied', `${r.deniedInWindow} this window, ${r.deniedTotal} in all`]);
  rows.push(['last call', r.lastCallAt ? `${isoTime(r.lastCallAt)} (${relative(r.lastCallAt, r.now)})` : r.tracked ? '—' : 'never (not tracked)']);
  if (r.lastReset) {
    rows.push(['last reset', `${r.lastReset.at.replace('T', ' ').replace(/\.\d{3}Z$/, 'Z')} by ${r.lastReset.by}${r.lastReset.reason ? `: ${r.lastReset.reason}` : ''}`]);
  }
  return keyValueTable(rows);
}

export function register(program: Command, io: Io): void {
  program
    .command('status')
    .description("show a number's usage: used, limit, remaining, reset time (hashes it locally)")
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    .option('--json', 'print one JSON document')
    .action(async (phone: string, _opts, cmd: Command) => {
      normalizePhone(phone); // a bad number is a usage error before any connection is tried
      const report = await withDatabase(cmd, io, async ({ config, key, db }) => {
        await ensureSchema(db);
        return statusCommand(db.pool, key, config.phonePolicy, phone);
      });
      emit(io, cmd, report, () => printStatus(report));
    });
}
