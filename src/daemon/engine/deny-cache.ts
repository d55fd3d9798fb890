// Numbers known to be at their limit, denied without asking the database until their reset
// time. Separate from the engine because its correctness rests on one rule of its own: it is
// trusted only while reset notifications are being heard (the engine clears it otherwise).

import { evaluate, type Decision, type Policy } from '../../core/policy.js';
import { LRUCache } from 'lru-cache';

export class DenyCache {
  private readonly deniedUntil: LRUCache<string, number>;

  constructor(
    capacity: number,
    private readonly policy: Policy,
  ) {
    this.deniedUntil = new LRUCache({ max: capacity });
  }

  /** After the database decided: remembers until when this number's next call would be denied. */
  note(hash: string, log: number[], atMs: number): void {
    const next = evaluate(log, atMs, this.policy);
    if (!next.allowed) this.deniedUntil.set(hash, next.resetTime);
  }

  /**
   * The denial the database would give now, or undefined when it must be asked. `logOf` is
   * read only for cached numbers, so a miss does not touch the engine's log LRU order.
   */
  lookup(hash: string, nowMs: number, logOf: (hash: string) => number[] | undefined): Decision | undefined {
    const until = this.deniedUntil.get(hash);
    if (until === undefined) return undefined;
    if (nowMs >= until) {
      this.deniedUntil.delete(hash);
      return undefined;
    }
    const d = evaluate(logOf(hash) ?? [], nowMs, this.policy);
    if (d.allowed) {
      // The log fell out of memory: do not guess, ask the database.
      this.deniedUntil.delete(hash);
      return undefined;
    }
    return d;
  }

  forget(hash: string): void {
    this.deniedUntil.delete(hash);
  }

  clear(): void {
    this.deniedUntil.clear();
  }
}
