// Numbers that are part of a decision statement still running in PostgreSQL. Separate from the
// engine because it carries one rule of its own: once the engine answers from memory, memory
// must not decide a number whose statement has not settled, or the database could commit that
// statement's "allowed" after memory had filled the number (two answers for one slot).

export class InFlight {
  private readonly counts = new Map<string, number>();
  private readonly waiters = new Map<string, Array<() => void>>();

  enter(hashes: Iterable<string>): void {
    for (const h of hashes) this.counts.set(h, (this.counts.get(h) ?? 0) + 1);
  }

  leave(hashes: Iterable<string>): void {
    for (const h of hashes) {
      const n = (this.counts.get(h) ?? 1) - 1;
      if (n > 0) {
        this.counts.set(h, n);
        continue;
      }
      this.counts.delete(h);
      const ws = this.waiters.get(h);
      if (!ws) continue;
      this.waiters.delete(h);
      for (const w of ws) w();
    }
  }

  /** Resolves when no statement holds `hash` (at once when none does). */
  settled(hash: string): Promise<void> | undefined {
    if (!this.counts.has(hash)) return undefined;
    return new Promise((resolve) => {
      const ws = this.waiters.get(hash);
      if (ws) ws.push(resolve);
      else this.waiters.set(hash, [resolve]);
    });
  }
}
