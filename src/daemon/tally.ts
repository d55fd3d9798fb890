// What this daemon decided since it started, for the heartbeat (`ratelimit top`): every consume,
// whatever path decided it (ip, lists, destinations, the deny cache, the database or memory).
// Separate from metrics.ts because prom-client's registry is not meant to be read back per tick.

export interface DecisionCounters {
  /** Every allowed consume since start. */
  allowed: number;
  /** Every denied consume, WHATEVER the reason (ip, list, destination, rules). */
  denied: number;
  /** Keys: docs/protocol.md reasons (phone_rate_limit_exceeded, ip_rate_limit_exceeded, ...). */
  deniedByReason: Record<string, number>;
  /** By rule id: consumes a shadow rule would have denied. */
  shadowDenied: Record<string, number>;
  /** By list entry (`prefix:+4470`, `number:<hash>`): consumes its block denied (`ratelimit list`). */
  listHits?: Record<string, number>;
}

// Entries counted at most: a list is small; past this, new entries are not counted (the denial still is).
const MAX_LIST_HIT_KEYS = 10_000;

export class DecisionTally {
  private allowed = 0;
  private denied = 0;
  private readonly byReason = new Map<string, number>();
  private readonly shadow = new Map<string, number>();
  private readonly listHits = new Map<string, number>();

  /** One consume's outcome. */
  consume(reason: string | null, shadow: readonly string[]): void {
    if (reason === null) this.allowed++;
    else {
      this.denied++;
      this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    }
    for (const id of shadow) this.shadow.set(id, (this.shadow.get(id) ?? 0) + 1);
  }

  /** A consume denied by a block entry, by entry. */
  listHit(entry: string): void {
    const n = this.listHits.get(entry);
    if (n !== undefined || this.listHits.size < MAX_LIST_HIT_KEYS) this.listHits.set(entry, (n ?? 0) + 1);
  }

  /** A copy: the caller may keep it while counting goes on. */
  snapshot(): DecisionCounters {
    return {
      allowed: this.allowed,
      denied: this.denied,
      deniedByReason: Object.fromEntries(this.byReason),
      shadowDenied: Object.fromEntries(this.shadow),
      listHits: Object.fromEntries(this.listHits),
    };
  }
}
