// Key rotation on the decision path (docs/protocol.md *Keys*; SQL in src/db/functions/fold_key_rows.sql).
// While PHONE_ENCRYPTION_KEY_PREVIOUS is set, a number has two hashes: its row under the old key
// holds the calls counted before the rotation, its row under the new key those after. Limits must
// keep holding across the change, so before this daemon first decides a number in the database,
// it folds the old-hash row into the new-hash row (one transaction, locks in hash order), and from
// then on the number is one row under the new key. Folding lazily, on first meeting, is the only
// way: the database never holds the numbers, so it cannot rehash its rows by itself.
//
// Why per process and not on every decision: a fold is one statement more; after the first one the
// old row is gone, and the only writer that could create it again is a daemon still running with
// the old key alone (a rolling restart in progress). Its calls then count on its side only until it
// restarts with both keys: the same bound as an outage, K daemons at most K×N. Folds are batched
// like decisions (group commit), so a burst of new numbers costs one statement, not one each.
//
// Database mode only. In memory mode nothing is folded and nothing needs to be: this process learns
// a number's state only from its own decisions, made after a fold and always under the new hash,
// so its memory holds no state under the old hash to look up. Decisions made from memory are
// replayed into the new-hash row; the fold at the next meeting merges whatever the old row held.
// A fold that fails is not remembered: the number is folded at its next decision.
import type { Logger } from 'pino';
import { boundedCache } from './bounded-cache.js';
import { hashPhone } from '../core/phone.js';
import { keyFingerprint } from '../core/key.js';
import { foldKeyRows, type HashPair } from '../db/keys.js';
import type { Pool } from '../db/pool.js';
import { Batcher } from './engine/batcher.js';

const FOLDED_NUMBERS = 200_000;
const MAX_FOLD_BATCH = 256;

export interface KeyRotationOptions {
  pool: Pool;
  currentKey: string;
  previousKey: string;
  logger: Logger;
}

export class KeyRotation {
  /** New-key hashes of numbers folded (or found with nothing to fold) by this process. */
  private readonly folded = boundedCache<string, true>(FOLDED_NUMBERS);
  private readonly folds: Batcher<HashPair, undefined>;

  constructor(private readonly opts: KeyRotationOptions) {
    const fingerprint = keyFingerprint(opts.currentKey);
    this.folds = new Batcher(
      async (pairs) => {
        const unique = [...new Map(pairs.map((p) => [p.current, p])).values()];
        const n = await foldKeyRows(opts.pool, unique, fingerprint);
        if (n > 0) opts.logger.debug({ folded: n }, 'folded rows from the previous key into the current one');
        return pairs.map(() => undefined);
      },
      { maxBatch: MAX_FOLD_BATCH, maxInFlight: 1 },
    );
  }

  /** The number's hash under the previous key. */
  previousHash(e164: string): string {
    return hashPhone(e164, this.opts.previousKey);
  }

  /** Before the first database decision on a number: its old-hash row joins its new-hash row. */
  async fold(s: { hash: string; previousHash?: string | undefined }): Promise<void> {
    if (s.previousHash === undefined || this.folded.has(s.hash)) return;
    await this.folds.submit({ previous: s.previousHash, current: s.hash });
    this.folded.set(s.hash, true);
  }
}
