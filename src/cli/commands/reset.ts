import type { Pool } from '../../db/pool.js';
import { resetPhone } from '../../db/phones.js';
import { foldNumber } from '../../db/keys.js';
import { hashPhone, hashPrefix, maskPhone, normalizePhone } from '../../core/phone.js';
import type { Policy } from '../../core/policy/types.js';
import { numberRules } from '../../core/policy/decide.js';
import { readEffectivePolicy } from '../../db/policies.js';
import { isoTime, keyValueTable } from '../format.js';
import type { Command } from 'commander';
import { ensureSchema } from '../../db/open.js';
import { emit, withDatabase, type Io } from '../context.js';
import { operatorName } from '../operator.js';

export interface ResetReport {
  phoneNumber: string;
  hash: string;
  reset: boolean;
  previousCount: number;
  /** block_after: the block this reset lifted (ms since epoch), or null. */
  liftedBlockUntil: number | null;
  resetBy: string;
  reason: string | null;
  resetAt: string;
}

const MAX_REASON_LENGTH = 500;

/** `fallback`: the RATE_LIMIT_* default, used while no policy has been applied. */
/** `previousKey`: PHONE_ENCRYPTION_KEY_PREVIOUS during a rotation; the number is folded to its new hash first, so the reset clears every call. */
export async function resetCommand(
  pool: Pool,
  key: string,
  fallback: Policy,
  phone: string,
  by: string,
  reason: string | undefined,
  previousKey?: string,
): Promise<ResetReport> {
  const { e164 } = normalizePhone(phone);
  const hash = hashPhone(e164, key);
  await foldNumber(pool, e164, { current: key, previous: previousKey });
  const why = reason?.trim() ? reason.trim().slice(0, MAX_REASON_LENGTH) : null;
  const { policy } = await readEffectivePolicy(pool, fallback);
  const out = await resetPhone(pool, hash, by, why, numberRules(policy.number).log);
  return {
    phoneNumber: maskPhone(e164),
    hash,
    reset: out.existed,
    previousCount: out.previousCount,
    liftedBlockUntil: out.liftedBlockUntil ?? null,
    resetBy: by,
    reason: why,
    resetAt: out.resetAt.toISOString(),
  };
}

export function printReset(r: ResetReport): string {
  const head = r.reset
    ? `Reset ${r.phoneNumber}: cleared ${r.previousCount} call${r.previousCount === 1 ? '' : 's'} in the window; its next call is allowed.`
    : `${r.phoneNumber} had no usage recorded; nothing to clear (the reset is recorded anyway).`;
  const lifted = r.liftedBlockUntil ? `\nLifted its block_after block (was until ${isoTime(r.liftedBlockUntil)}) and cleared its denial count.` : '';
  return `${head}${lifted}\n${keyValueTable([
    ['hash', `${hashPrefix(r.hash)}…`],
    ['by', r.resetBy],
    ['reason', r.reason ?? '—'],
    ['at', isoTime(Date.parse(r.resetAt))],
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
      const report = await withDatabase(cmd, io, async ({ config, keys, db }) => {
        await ensureSchema(db);
        return resetCommand(db.pool, keys.current, config.defaultPolicy, phone, operatorName(io.env), opts.reason, keys.previous);
      });
      emit(io, cmd, report, () => printReset(report));
    });
}
