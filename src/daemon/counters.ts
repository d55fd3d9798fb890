// What a daemon has decided since it started, by outcome, reason and shadow rule: the heartbeat
// publishes it (ratelimit_instances, rate_limit_decision_counts) so `ratelimit top` and `stats`
// can show every denial by reason, IP denials included, without reaching a daemon.
// The interface is the one agreed between p1 (who fills it) and p3 (who publishes it).

export interface DecisionCounters {
  allowed: number;                       // every allowed consume since start
  denied: number;                        // every denied consume, WHATEVER the reason (ip, list, destination, rules)
  deniedByReason: Record<string, number>; // keys: PROTOCOL.md reasons (phone_rate_limit_exceeded, ip_rate_limit_exceeded, ...)
  shadowDenied: Record<string, number>;  // by rule id: consumes a shadow rule would have denied
}

/** Cumulative tallies behind a DecisionCounters snapshot; cheap enough for every consume. */
export class DecisionTally {
  private allowed = 0;
  private denied = 0;
  private readonly byReason = new Map<string, number>();
  private readonly byShadowRule = new Map<string, number>();

  /** One consume: allowed, or denied for `reason`; `shadow` names the shadow rules that would have denied. */
  record(reason: string | undefined, shadow: readonly string[] = []): void {
    if (reason === undefined) this.allowed++;
    else {
      this.denied++;
      this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    }
    for (const id of shadow) this.byShadowRule.set(id, (this.byShadowRule.get(id) ?? 0) + 1);
  }

  snapshot(): DecisionCounters {
    return {
      allowed: this.allowed,
      denied: this.denied,
      deniedByReason: Object.fromEntries(this.byReason),
      shadowDenied: Object.fromEntries(this.byShadowRule),
    };
  }
}
