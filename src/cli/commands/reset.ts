import type { Pool } from '../../db/pool.js';
import { resetPhone } from '../../db/queries.js';
import { hashPhone, hashPrefix, maskPhone, normalizePhone } from '../../core/phone.js';
import type { Policy } from '../../core/policy.js';
import { keyValueTable } from '../format.js';
import type { Command } from 'commander';
import { ensureSchema } from '../../db/open.js';
import { emit, withDatabase, type Io } from '../context.js';
import { operatorName } from '../operator.js';

export interface ResetReport {
  phoneNumber: string;
  hash: string;
  reset: boolean;
  previousCount: number;
  resetBy: string;
  reason: string | null;
  resetAt: string;
}

const MAX_REASON_LENGTH = 500;

export async function resetCommand(pool: Pool, key: string, policy: Policy, phone: string, by: string, reason: string | undefined): Promise<ResetReport> {
  const { e164 } = normalizePhone(phone);
  const hash = hashPhone(e164, key);
  const why = reason?.trim() ? reason.trim().slice(0, MAX_REASON_LENGTH) : null;
  const out = await resetPhone(pool, hash, by, why, policy);
  return {
    phoneNumber: maskPhone(e164),
    hash,
    reset: out.existed,
    previousCount: out.previousCount,
    resetBy: by,
    reason: why,
    resetAt: out.resetAt.toISOString(),
  };
}

export function printReset(r: ResetReport): string {
  const head = r.reset
    ? `Reset ${r.phoneNumber}: cleared ${r.previousCount} call${r.previousCount === 1 ? '' : 's'} in the window; its next call is allowed.`
    : `${r.phoneNumber} had no usage recorded; nothing to clear (the reset is recorded anyway).`;
  return `${head}\n${keyValueTable([
    ['hash', `${hashPrefix(r.hash)}…`],
    ['by', r.resetBy],
    ['reason', r.reason ?? '—'],
    ['at', r.resetAt],
  ])}`;
}

export function register(program: Command, io: Io): void {
  program
    .command('reset')
    .description("clear a number's usage so its next call is allowed; records who, when and why")
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    .option('--reason <text>', 'why (kept in the audit table)')
    .option('--json', 'print one JSON document')
    .action(async (phone: string, opts: { reason?: string }, cmd: Command) => {
      normalizePhone(phone);
      const report = await withDatabase(cmd, io, async ({ config, key, db }) => {
        await ensureSchema(db);
        return resetCommand(db.pool, key, config.phonePolicy, phone, operatorName(io.env), opts.reason);
      });
      emit(io, cmd, report, () => printReset(report));
    });
}
