// The policy and the block/allow lists this daemon enforces, kept current: read at start, then
// re-read whenever `rate_limit_changes` moves (a NOTIFY on CHANGES_CHANNEL says so at once; polled
// every second while no listener is connected, and every SAFETY_POLL_MS while one is), and swapped whole, so a decision sees one policy from start to end.
// Separate from the engine: the engine decides with whatever it is handed; this file decides
// what that is, and says so in the log.

import { errForLog } from '../db/errors.js';
import { RateLimitError } from '../core/errors.js';
import type { Logger } from 'pino';
import { ListIndex, prefixRangeProblem, type ListIndexEntry } from '../core/lists.js';
import { decisionPolicy, type DecisionPolicy } from '../core/policy/decide.js';
import type { Policy } from '../core/policy/types.js';
import { readListEntries } from '../db/lists.js';
import { readChangeVersions, type ChangeName } from '../db/changes.js';
import { readEffectivePolicy } from '../db/policies.js';
import type { Pool } from '../db/pool.js';

/** One policy as the decision path uses it, prepared once per version. */
export interface ActivePolicy {
  readonly policy: Policy;
  readonly decision: DecisionPolicy;
  /** 0: the default built from RATE_LIMIT_* (none applied, or the database unreadable at start). */
  readonly version: number;
}

export function activePolicy(policy: Policy, version: number): ActivePolicy {
  return { policy, decision: decisionPolicy(policy), version };
}

/** A policy that never changes, for engines used without a daemon (tests, benchmarks). */
export function fixedPolicy(policy: Policy, version = 0): { readonly current: ActivePolicy } {
  return { current: activePolicy(policy, version) };
}

export interface PolicySourceOptions {
  pool: Pool;
  logger: Logger;
  /** Config.defaultPolicy: in force until the database says otherwise. */
  defaultPolicy: Policy;
  /** Config.defaultPolicySources: RATE_LIMIT_* settings given, to be called ignored under an applied policy. */
  defaultPolicySources: readonly string[];
  pollIntervalMs?: number;
  /**
   * True while changes are announced by NOTIFY (the listener is connected, and it re-reads on
   * every reconnection): then polling is only a safety net, run every SAFETY_POLL_MS.
   */
  announced?: () => boolean;
  /** After every swap of the policy or of the lists (the deny cache must forget). */
  onChange: (what: ChangeName, active: ActivePolicy) => void;
}

const DEFAULT_POLL_INTERVAL_MS = 1_000;
// An idle daemon's poll was a statement per second per daemon; with NOTIFY working it finds
// nothing, so it runs this rarely, against a listener that is dead without knowing it.
const SAFETY_POLL_MS = 15_000;

export class PolicySource {
  private active: ActivePolicy;
  private index = new ListIndex([]);
  /** Change counters last acted on; undefined until read once. */
  private seen: Partial<Record<ChangeName, number>> = {};
  private loading: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private warnedIgnored = false;
  private unreadSince: number | undefined;
  /** performance.now() of the last read of the change counters. */
  private lastReadAtMs = -Infinity;

  constructor(private readonly opts: PolicySourceOptions) {
    this.active = activePolicy(opts.defaultPolicy, 0);
  }

  get current(): ActivePolicy {
    return this.active;
  }

  get lists(): ListIndex {
    return this.index;
  }

  /**
   * Reads the policy and lists (waiting for that first read when `wait`), then keeps polling.
   * A database that cannot be read leaves the default policy in force, said once in the log.
   */
  async start(wait: boolean): Promise<void> {
    if (this.timer) return;
    this.timer = setInterval(() => this.poll(), this.opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS);
    this.timer.unref();
    const first = this.refresh();
    if (wait) await first;
    else if (this.seen.policy === undefined) this.reportUnread(new RateLimitError('database_unreachable', 'database unreachable at start'));
  }

  /** A change was announced (NOTIFY), or the listener reconnected: look now, not at the next poll. */
  poke(): void {
    void this.refresh();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private poll(): void {
    if (this.seen.policy !== undefined && this.opts.announced?.() && performance.now() - this.lastReadAtMs < SAFETY_POLL_MS) return;
    void this.refresh();
  }

  /** One reader at a time; a poke during a read runs one more read after it. */
  private refresh(): Promise<void> {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      try {
        do {
          this.again = false;
          await this.load();
        } while (this.again);
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  private async load(): Promise<void> {
    const { pool, logger } = this.opts;
    let versions: Record<ChangeName, number>;
    this.lastReadAtMs = performance.now();
    try {
      versions = await readChangeVersions(pool);
    } catch (err) {
      this.reportUnread(err);
      return;
    }
    if (versions.policy !== this.seen.policy) {
      try {
        const eff = await readEffectivePolicy(pool, this.opts.defaultPolicy);
        const first = this.seen.policy === undefined;
        this.seen.policy = versions.policy;
        for (const adjustment of eff.adjustments) logger.warn({ version: eff.version }, adjustment);
        this.swapPolicy(activePolicy(eff.policy, eff.version), eff.source === 'database', first);
      } catch (err) {
        // A stored policy this release cannot parse: keep enforcing the one in force, loudly.
        if (this.seen.policy === undefined) this.reportUnread(err);
        else logger.error({ err: errForLog(err) }, 'could not read the applied policy; the previous one stays in force');
        return;
      }
    }
    if (versions.lists !== this.seen.lists) {
      try {
        const { entries } = await readListEntries(pool);
        const indexed: ListIndexEntry[] = entries.map((e) => ({
          targetType: e.targetType,
          target: e.target,
          kind: e.kind,
          expiresAtMs: e.expiresAt ? e.expiresAt.getTime() : null,
        }));
        this.index = new ListIndex(indexed);
        this.seen.lists = versions.lists;
        logger.info({ entries: indexed.length }, 'block and allow lists loaded');
        // Still enforced (dropping a block would let pumping through), but said, without the prefixes.
        const narrow = indexed.filter((e) => e.targetType === 'prefix' && prefixRangeProblem(e.target) !== undefined).length;
        if (narrow > 0) {
          logger.warn(
            { entries: narrow },
            'block or allow prefixes stored before ranges were held to 1,000 numbers narrow a number down: `ratelimit list` shows them; unlist each and list the number itself or a shorter prefix',
          );
        }
        this.opts.onChange('lists', this.active);
      } catch (err) {
        logger.warn({ err: errForLog(err) }, 'could not read the block and allow lists; retrying');
      }
    }
  }

  private swapPolicy(next: ActivePolicy, applied: boolean, first: boolean): void {
    const changed = first || next.version !== this.active.version || this.unreadSince !== undefined;
    this.active = next;
    if (this.unreadSince !== undefined) {
      this.opts.logger.info({ afterMs: Date.now() - this.unreadSince }, 'the applied policy could be read at last');
      this.unreadSince = undefined;
    }
    if (applied && this.opts.defaultPolicySources.length > 0 && !this.warnedIgnored) {
      this.warnedIgnored = true;
      this.opts.logger.warn(
        { ignored: this.opts.defaultPolicySources, policyVersion: next.version },
        `${this.opts.defaultPolicySources.join(', ')} ignored: a policy has been applied to the database and it alone is enforced (ratelimit policy show)`,
      );
    }
    // The same version read again is not news.
    if (!changed) return;
    this.opts.logger.info({ policyVersion: next.version }, `policy version ${next.version} in force`);
    this.opts.onChange('policy', next);
  }

  private reportUnread(err: unknown): void {
    if (this.seen.policy !== undefined || this.unreadSince !== undefined) return;
    this.unreadSince = Date.now();
    this.opts.onChange('policy', this.active);
    this.opts.logger.error(
      { err: errForLog(err), policyVersion: 0 },
      'could not read the applied policy: enforcing the default policy from RATE_LIMIT_* until the database can be read',
    );
  }
}
