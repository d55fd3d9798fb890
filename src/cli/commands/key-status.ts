// `ratelimit key status`: the fingerprint of the key in use, the fingerprints the database knows,
// and during a rotation how many rows are still under the previous key and whether it can be
// dropped (docs/protocol.md *Keys*). It reports a key that does not match, then exits 1 like every
// command that reads hashed rows: the report is what the operator needs to fix it.
import type { Command } from 'commander';
import type { Pool } from '../../db/pool.js';
import { checkKey, keyStatus, type KeyStatus } from '../../db/keys.js';
import { loadPhoneKey } from '../../db/key-file.js';
import { ensureSchema, openDatabase } from '../../db/open.js';
import { readEffectivePolicy } from '../../db/policies.js';
import { RateLimitError } from '../../core/errors.js';
import { formatDurationMs } from '../../core/duration.js';
import type { Policy } from '../../core/policy/types.js';
import { configFrom, emit, warnTo, type Io } from '../context.js';
import { afterDocument } from '../failure.js';
import { isoTime, keyValueTable } from '../format.js';

export interface KeyStatusReport extends KeyStatus {
  /** The longest time a number's row affects decisions under the active policy. */
  longestWindowMs: number;
  /** During a rotation: the earliest the previous key can be dropped (rotation start + longest window). */
  dropPreviousAfter: string | null;
  /** Why the key in use does not match the database's record, or null when it does. */
  mismatch: string | null;
}

/**
 * How long a number's own row can still change a decision: its longest number window, and
 * block_after's memory of denials and its block. Aggregate counters are keyed by range, region
 * or `*`, never by hash, so a rotation does not touch them.
 */
export function longestHashedWindowMs(policy: Policy): number {
  const b = policy.blockAfter;
  return Math.max(1, ...policy.number.map((r) => r.windowMs), ...(b ? [b.withinMs, longestBlockAfterMs(b, policy.blocks)] : []));
}

/**
 * The longest a block_after block can last: `for`, or with a `blocks` group the longest step (cut
 * to `for` when given) and then `decay`, while the block's level still lengthens the next one.
 */
function longestBlockAfterMs(b: NonNullable<Policy['blockAfter']>, blocks: Policy['blocks']): number {
  if (!blocks) return b.forMs ?? 0;
  const longestStepMs = Math.max(...blocks.escalateMs);
  return Math.min(longestStepMs, b.forMs ?? longestStepMs) + blocks.decayMs;
}

export async function keyStatusCommand(pool: Pool, keys: { current: string; previous: string | undefined }, fallback: Policy): Promise<KeyStatusReport> {
  const { policy } = await readEffectivePolicy(pool, fallback);
  const longestWindowMs = longestHashedWindowMs(policy);
  const status = await keyStatus(pool, keys, longestWindowMs);
  const mismatch = await checkKey(pool, keys).then(
    () => null,
    (err: unknown) => {
      if (err instanceof RateLimitError && err.code === 'key_mismatch') return err.message;
      throw err;
    },
  );
  return {
    ...status,
    longestWindowMs,
    dropPreviousAfter: status.rotation ? new Date(status.rotation.since.getTime() + longestWindowMs).toISOString() : null,
    mismatch,
  };
}

export function printKeyStatus(r: KeyStatusReport): string {
  const lines = [
    keyValueTable([
      ['key in use', r.inUse.current],
      ['previous key in use', r.inUse.previous ?? '— (PHONE_ENCRYPTION_KEY_PREVIOUS not set)'],
      ...r.known.map((k): [string, string] => [
        `database: ${k.role}`,
        `${k.fingerprint} (since ${isoTime(k.roleSince.getTime())}, last seen ${isoTime(k.lastSeen.getTime())})`,
      ]),
    ]),
  ];
  if (r.known.length === 0) lines.push('The database has no key recorded yet: the first daemon or `ratelimit db init` records its key.');
  const rot = r.rotation;
  if (!rot) {
    if (r.known.length > 0) lines.push('No rotation under way.');
  } else {
    lines.push(
      `Rotation from ${rot.previous} since ${isoTime(rot.since.getTime())}: ${rot.rowsUnderPrevious} number row${rot.rowsUnderPrevious === 1 ? '' : 's'} still under the previous key, ` +
        `${rot.activeRowsUnderPrevious} with a call in the last ${formatDurationMs(r.longestWindowMs)} (daemons fold a number into its new hash when they meet it).`,
    );
    if (rot.canDropPrevious) {
      lines.push('The previous key can be dropped now: unset PHONE_ENCRYPTION_KEY_PREVIOUS on every daemon and restart them.');
    } else {
      const waits = [];
      if (Date.parse(r.dropPreviousAfter!) > Date.now())
        waits.push(`until ${isoTime(Date.parse(r.dropPreviousAfter!))} (one longest window after the rotation)`);
      if (rot.activeRowsUnderPrevious > 0) waits.push(`until no row under it has a call in the last ${formatDurationMs(r.longestWindowMs)}`);
      lines.push(`Keep PHONE_ENCRYPTION_KEY_PREVIOUS set on every daemon ${waits.join(' and ')}; then run this again.`);
    }
    if (rot.listEntriesUnderPrevious > 0) {
      lines.push(
        `${rot.listEntriesUnderPrevious} block/allow entr${rot.listEntriesUnderPrevious === 1 ? 'y is' : 'ies are'} still under the previous key (numbers not met since the rotation): ` +
          'they stop matching once it is dropped; re-add them with `ratelimit block <phone>` / `ratelimit allow <phone>` (see `ratelimit list`).',
      );
    }
  }
  if (r.mismatch) lines.push(`Key mismatch: ${r.mismatch}`);
  return lines.join('\n');
}

export function register(program: Command, io: Io): void {
  const key = program.command('key').description('the hashing key (PHONE_ENCRYPTION_KEY): fingerprints and rotation');
  key
    .command('status')
    .description(
      'the fingerprint of the key in use, the ones the database knows, and during a rotation the rows still under the previous key and when it can be dropped',
    )
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const config = configFrom(cmd, io);
      const current = await loadPhoneKey(config, warnTo(io), { existingOnly: true });
      const db = await openDatabase(config, { applicationName: 'ratelimit key status', createEmbedded: false });
      let report: KeyStatusReport;
      try {
        await ensureSchema(db);
        report = await keyStatusCommand(db.pool, { current, previous: config.previousPhoneKey }, config.defaultPolicy);
      } finally {
        await db.close();
      }
      emit(io, cmd, report, () => printKeyStatus(report));
      if (report.mismatch) throw afterDocument(new RateLimitError('key_mismatch', report.mismatch));
    });
}
