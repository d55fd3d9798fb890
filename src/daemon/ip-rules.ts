// The policy's ip group over this instance's IpLimiters, one per rule (several windows, shadow
// rules too). Reserve before the phone decision, refund every reserved slot when anything later
// denies, so a denied consume spends nothing. Limiters survive a policy change for rules whose
// id, limit and window are unchanged, so a new policy version does not hand out fresh quotas.

//
// IPv6: a key is the /64 (src/core/address.ts); each call also counts against the address's /56
// and /48, whose limits are the rule's times IPV6_WIDER_LIMIT_FACTORS, so a /48 gets 64 quotas'
// worth, not 65,536. The wider limiters deny like the rule (same id in the reply, their limit).

import { widerIpv6Networks, IPV6_WIDER_LIMIT_FACTORS } from '../core/address.js';
import { makeLogPolicy, type Decision } from '../core/policy/log.js';
import type { LimitRule } from '../core/policy/types.js';
import { IpLimiter } from './limits.js';

interface Limiter {
  rule: LimitRule;
  limiter: IpLimiter;
  /** The same rule over wider IPv6 networks, by prefix length. */
  wider: Map<number, IpLimiter>;
}

export interface IpRulesOptions {
  /** Entries per limiter table. */
  capacity?: number;
  /** A new address found a table full of live counts (IpLimiter.keyFor): for a metric. */
  onFull?: () => void;
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

  constructor(private readonly opts: IpRulesOptions = {}) {}

  private limiter(rule: LimitRule, factor: number): IpLimiter {
    return new IpLimiter(makeLogPolicy([{ id: rule.id, limit: rule.limit * factor, windowMs: rule.windowMs }]), this.opts.capacity, this.opts.onFull);
  }

  /** Swaps in the policy's ip rules, keeping the counts of rules that did not change. */
  update(rules: readonly LimitRule[]): void {
    const old = new Map(this.limiters.map((l) => [signature(l.rule), l]));
    this.limiters = rules.map(
      (rule) =>
        old.get(signature(rule)) ?? {
          rule,
          limiter: this.limiter(rule, 1),
          wider: new Map(IPV6_WIDER_LIMIT_FACTORS.map(({ bits, factor }) => [bits, this.limiter(rule, factor)])),
        },
    );
  }

  /**
   * Takes one slot from every rule that has one. `exempt` (allowlisted numbers): counted where
   * there is room, never denied, no shadow reported.
   */
  reserve(ip: string, exempt: boolean, nowMs = Date.now()): IpReservation {
    const taken: Array<{ limiter: IpLimiter; key: string; atMs: number }> = [];
    const shadow: string[] = [];
    let denied: IpReservation['denied'];
    const wider = this.limiters.length > 0 ? widerIpv6Networks(ip) : [];
    for (const { rule, limiter, wider: widerLimiters } of this.limiters) {
      let ruleDenial: Decision | undefined;
      const own = limiter.take(ip, nowMs);
      if (typeof own === 'string') taken.push({ limiter, key: own, atMs: nowMs });
      else ruleDenial = own;
      for (const w of wider) {
        const l = widerLimiters.get(w.bits)!;
        const slot = l.take(w.key, nowMs);
        if (typeof slot === 'string') taken.push({ limiter: l, key: slot, atMs: nowMs });
        else ruleDenial ??= slot;
      }
      if (!ruleDenial || exempt) continue;
      if (rule.shadow) shadow.push(rule.id);
      else if (!denied) denied = { rule: rule.id, decision: ruleDenial };
    }
    const refund = () => {
      for (const t of taken.splice(0)) t.limiter.refund(t.key, t.atMs);
    };
    if (denied) refund();
    return { denied, shadow, refund };
  }
}
