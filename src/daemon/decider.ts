// The decision path shared by both transports: who may do what (roles), phone parsing with its
// cache, the checks made before the database (block/allow lists, destinations, ip rules with
// their reserve and refund), the engine for everything else, counting, and the reply. Separate
// from the transports so WebSocket and HTTP cannot decide differently.

import { errForLog } from '../db/errors.js';
import type { Logger } from 'pino';
import type { ListIndex } from '../core/lists.js';
import { InvalidPhoneNumberError } from '../core/errors.js';
import { hashPhone, maskPhone, normalizePhoneWithType } from '../core/phone.js';
import { destinationDenial } from '../core/policy/subject.js';
import { AGGREGATE_DENY_REASONS } from '../core/policy/types.js';
import { decisionReply, errorReply } from '../protocol/replies.js';
import type { Reply, Request } from '../protocol/wire.js';
import type { Role } from './auth.js';
import type { DecisionTally } from './tally.js';
import type { DecisionEngine } from './engine/engine.js';
import { blockView, earlyDenial, type PhoneSubject, type Verdict } from './engine/verdict.js';
import type { IpRules } from './ip-rules.js';
import { boundedCache } from './bounded-cache.js';
import type { Metrics } from './metrics.js';
import type { ActivePolicy } from './policy-source.js';
import type { KeyRotation } from './key-rotation.js';

const PHONE_CACHE_SIZE = 50_000;
export const LIST_BLOCK_RULE = 'list:block';

export interface DeciderOptions {
  engine: DecisionEngine;
  /** The policy and lists in force (PolicySource). */
  policies: { readonly current: ActivePolicy; readonly lists: ListIndex };
  ipRules: IpRules;
  metrics: Metrics;
  tally: DecisionTally;
  logger: Logger;
  phoneKey: string;
  /** While PHONE_ENCRYPTION_KEY_PREVIOUS is set. */
  rotation?: KeyRotation | undefined;
}

export class Decider {
  private readonly phoneCache = boundedCache<string, PhoneSubject>(PHONE_CACHE_SIZE);

  constructor(private readonly opts: DeciderOptions) {}

  private subject(phoneNumber: string): PhoneSubject {
    const cached = this.phoneCache.get(phoneNumber);
    if (cached) return cached;
    const { e164, region, type } = normalizePhoneWithType(phoneNumber);
    const previousHash = this.opts.rotation?.previousHash(e164);
    const s = { e164, hash: hashPhone(e164, this.opts.phoneKey), previousHash, region, masked: maskPhone(e164), type };
    this.phoneCache.set(phoneNumber, s);
    return s;
  }

  /** Never rejects: every request gets exactly one reply. */
  async decide(req: Request, role: Role, socketIp: string): Promise<Reply> {
    const id = req.id;
    try {
      let s;
      try {
        s = this.subject(req.phoneNumber);
      } catch (err) {
        if (err instanceof InvalidPhoneNumberError) return errorReply('invalid_phone_number', err.message, id);
        throw err;
      }
      const consume = req.type === 'rate_limit_consume';
      if (consume && role === 'browser') return errorReply('forbidden', 'browser clients may only check; consume needs a token', id);
      // Only a token-holding service may speak for the end user's address.
      const v = consume ? await this.consume(s, role === 'service' && req.ip ? req.ip : socketIp) : await this.check(s);
      this.count(consume, v);
      // Aggregate counts (prefix, country, global) are not for browsers: they see the number's own.
      const shown = role === 'browser' && v.reason !== null && AGGREGATE_DENY_REASONS.has(v.reason) ? { ...v, limit: v.own.limit, used: v.own.used, remaining: v.own.remaining } : v;
      return decisionReply(id, s.e164, s.region, shown, consume);
    } catch (err) {
      this.opts.logger.error({ err }, 'request failed');
      return errorReply('internal_error', 'the request could not be decided; retry', id);
    }
  }

  /**
   * The lists, then the destination: a denial decided here, or whether the number is on the
   * allow list (exempt from every rule and destination control, still counted).
   */
  private listsAndDestination(s: PhoneSubject): Verdict | boolean {
    const { engine, policies } = this.opts;
    const now = engine.dbNow();
    const local = { source: engine.mode, metricSource: 'local' } as const;
    let match = policies.lists.lookup(s.hash, s.e164, now);
    // Rotating: an entry made under the previous key still holds (own entry before any prefix).
    if (s.previousHash !== undefined && match?.entry.targetType !== 'number') match = policies.lists.lookup(s.previousHash, '', now) ?? match;
    if (match?.kind === 'block') return earlyDenial('number_blocked', LIST_BLOCK_RULE, blockView(match.entry.expiresAtMs, now), local);
    if (match?.kind === 'allow') return true;
    const dest = destinationDenial(policies.current.policy, s.region, s.type);
    if (dest) return earlyDenial('destination_blocked', dest.rule, blockView(null, now), local);
    return false;
  }

  private async check(s: PhoneSubject): Promise<Verdict> {
    await this.foldPreviousKey(s);
    const early = this.listsAndDestination(s);
    if (typeof early !== 'boolean') return early;
    return this.opts.engine.check(s, early);
  }

  private async consume(s: PhoneSubject, ip: string): Promise<Verdict> {
    const { engine, ipRules } = this.opts;
    // First, even for a number denied by a list: the fold also moves its list entry to the new hash.
    await this.foldPreviousKey(s);
    const early = this.listsAndDestination(s);
    if (typeof early !== 'boolean') {
      engine.recordDenial(s);
      return early;
    }
    const slot = ipRules.reserve(ip, early);
    if (slot.denied) {
      engine.recordDenial(s);
      const d = slot.denied.decision;
      const view = { limit: d.limit, used: d.used, remaining: d.remaining, resetTime: d.resetTime, retryAfterMs: d.retryAfterMs };
      // Decided by this instance's per-IP memory whatever the database's state (docs/protocol.md: source says who decided).
      return { ...earlyDenial('ip_rate_limit_exceeded', slot.denied.rule, view, { source: 'memory', metricSource: 'local' }), shadow: slot.shadow };
    }
    let v: Verdict;
    try {
      v = await engine.consume(s, early);
    } catch (err) {
      slot.refund();
      throw err;
    }
    // A denied consume spends nothing anywhere, the ip rules included.
    if (!v.allowed) slot.refund();
    return slot.shadow.length > 0 ? { ...v, shadow: [...slot.shadow, ...v.shadow] } : v;
  }

  /** Rotating, in database mode: the number's calls under the previous key join it first. */
  private async foldPreviousKey(s: PhoneSubject): Promise<void> {
    const { rotation, engine, logger } = this.opts;
    if (!rotation || engine.mode !== 'database') return;
    try {
      await rotation.fold(s);
    } catch (err) {
      // The engine meets an outage itself and falls back; anything else is retried at the
      // number's next decision. Either way this decision goes ahead.
      logger.warn({ err: errForLog(err) }, 'could not fold a number from the previous key; retrying at its next decision');
    }
  }

  private count(consume: boolean, v: Verdict): void {
    const { metrics, tally } = this.opts;
    const kind = consume ? 'consume' : 'check';
    metrics.decisions.inc({ kind, result: v.allowed ? 'allowed' : 'denied', reason: v.reason ?? '', rule: v.rule ?? '', source: v.metricSource });
    if (!consume) return;
    tally.consume(v.reason, v.shadow);
    for (const rule of v.shadow) metrics.shadowDenials.inc({ rule });
  }
}
