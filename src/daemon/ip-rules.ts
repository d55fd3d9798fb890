// The policy's ip group over this instance's IpLimiters, one per rule (several windows, shadow
// rules too). Reserve before the phone decision, refund every reserved slot when anything later
// denies, so a denied consume spends nothing. Limiters survive a policy change for rules whose
// id, limit and window are unchanged, so a new policy version does not hand out fresh quotas.

import { makeLogPolicy, type Decision } from '../core/policy/log.js';
import type { LimitRule } from '../core/policy/types.js';
import { IpLimiter } from './limits.js';

interface Limiter {
  rule: LimitRule;
  limiter: IpLimiter;
}

export interface IpReservation {
  /** The enforcing rule that denies, with its numbers; undefined when every enforcing rule allows. */
  denied: { rule: string; decision: Decision } | undefined;
  /** Shadow rules that would have denied. */
  shadow: string[];
  /** Gives back what this reservation took (after any later denial). */
  refund(): void;
}

const signature = (r: LimitRule) => `${r.id}|${r.limit}|${r.windowMs}|${r.shadow}`;

export class IpRules {
  private limiters: Limiter[] = [];

  /** Swaps in the policy's ip rules, keeping the counts of rules that did not change. */
  update(rules: readonly LimitRule[]): void {
    const old = new Map(this.limiters.map((l) => [signature(l.rule), l]));
    this.limiters = rules.map(
      (rule) => old.get(signature(rule)) ?? { rule, limiter: new IpLimiter(makeLogPolicy([rule])) },
    );
  }

  /**
   * Takes one slot from every rule that has one. `exempt` (allowlisted numbers): counted where
   * there is room, never denied, no shadow reported.
   */
  reserve(ip: string, exempt: boolean, nowMs = Date.now()): IpReservation {
    const taken: Array<{ limiter: IpLimiter; atMs: number }> = [];
    const shadow: string[] = [];
    let denied: IpReservation['denied'];
    for (const { rule, limiter } of this.limiters) {
      const slot = limiter.reserve(ip, nowMs);
      if (slot.decision.allowed) {
        taken.push({ limiter, atMs: slot.atMs });
        continue;
      }
      if (exempt) continue;
      if (rule.shadow) shadow.push(rule.id);
      else if (!denied) denied = { rule: rule.id, decision: slot.decision };
    }
    const refund = () => {
      for (const t of taken.splice(0)) t.limiter.refund(ip, t.atMs);
    };
    if (denied) refund();
    return { denied, shadow, refund };
  }
}
