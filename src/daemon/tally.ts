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
}

export class DecisionTally {
  private allowed = 0;
  private denied = 0;
  private readonly byReason = new Map<string, number>();
  private readonly shadow = new Map<string, number>();

  /** One consume's outcome. */
  consume(reason: string | null, shadow: readonly string[]): void {
    if (reason === null) this.allowed++;
    else {
      this.denied++;
      this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    }
    for (const id of shadow) this.shadow.set(id, (this.shadow.get(id) ?? 0) + 1);
  }

  /** A copy: the caller may keep it while counting goes on. */
  snapshot(): DecisionCounters {
    return {
      allowed: this.allowed,
      denied: this.denied,
      deniedByReason: Object.fromEntries(this.byReason),
      shadowDenied: Object.fromEntries(this.shadow),
    };
  }
}
