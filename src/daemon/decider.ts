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
import { browserDecisionReply, decisionReply, errorReply } from '../protocol/replies.js';
import type { DecisionReply, DecisionRequest, ErrorReply } from '../protocol/wire.js';
import { rangeLabel, type DecisionIds } from '../core/decision-id.js';
import type { Role } from './auth.js';
import type { DecisionTally } from './tally.js';
import type { DecisionEngine } from './engine/engine.js';
import { blockView, earlyDenial, type PhoneSubject, type Verdict } from './engine/verdict.js';
import type { IpRules } from './ip-rules.js';
import { boundedCache } from './bounded-cache.js';
import { DEFAULT_PRICES, priceOf, type PriceTable } from '../core/prices.js';
import type { Metrics } from './metrics.js';
import type { ActivePolicy } from './policy-source.js';
import type { KeyRotation } from './key-rotation.js';

// A miss is a libphonenumber parse, an HMAC and a mask (~20 µs); an entry is ~380 B of heap and
// the cache grows with use (bounded-cache.ts), so a fresh or idle daemon pays nothing for the
// bound. Sized for a working set of ~100k numbers an hour with room to spare.
const PHONE_CACHE_SIZE = 150_000;
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
  /** Mints the decisionId of every allowed consume (docs/protocol.md *Outcomes*). */
  decisionIds: DecisionIds;
  /** For ratelimit_spend_total; the flat default when absent. */
  prices?: PriceTable | undefined;
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
  async decide(req: DecisionRequest, role: Role, socketIp: string): Promise<ErrorReply | DecisionReply> {
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
      const v = consume ? await this.consume(s, role === 'service' && req.ip ? req.ip : socketIp) : await this.check(s, role === 'service');
      this.count(consume, v, s.region);
      // Minted, not stored: the id carries what an outcome needs (src/core/decision-id.ts).
      const decisionId =
        consume && v.allowed
          ? this.opts.decisionIds.encode({ hash: s.hash, region: s.region, range: rangeLabel(s.e164), atMs: this.opts.engine.dbNow() })
          : undefined;
      // Browsers (anyone who sets an allowed Origin) get minutes and the number's own counts only;
      // they never consume, so never get a decisionId.
      return role === 'browser' ? browserDecisionReply(id, s.e164, s.region, v, consume) : decisionReply(id, s.e164, s.region, v, consume, decisionId);
    } catch (err) {
      this.opts.logger.error({ err }, 'request failed');
      return errorReply('internal_error', 'the request could not be decided; retry', id);
    }
  }

  /**
   * The lists, then the destination: a denial decided here, or whether the number is on the
   * allow list (exempt from every rule and destination control, still counted).
   */
  private listsAndDestination(s: PhoneSubject, onBlock?: (entry: string) => void): Verdict | boolean {
    const { engine, policies } = this.opts;
    const now = engine.dbNow();
    let match = policies.lists.lookup(s.hash, s.e164, now);
    // Rotating: an entry made under the previous key still holds (own entry before any prefix).
    if (s.previousHash !== undefined && match?.entry.targetType !== 'number') match = policies.lists.lookup(s.previousHash, '', now) ?? match;
    if (match?.kind === 'block') onBlock?.(`${match.entry.targetType}:${match.entry.target}`);
    if (match?.kind === 'block') return earlyDenial('number_blocked', LIST_BLOCK_RULE, blockView(match.entry.expiresAtMs, now), localSource(engine.mode));
    if (match?.kind === 'allow') return true;
    const dest = destinationDenial(policies.current.policy, s.region, s.type);
    if (dest) return earlyDenial('destination_blocked', dest.rule, blockView(null, now), localSource(engine.mode));
    return false;
  }

  /**
   * `learn`: whether what the database says of the number may be kept for the fallback. Only
   * services' checks: anyone can send browser or anonymous checks, and a flood of them over
   * other numbers must not push a victim's state out of memory before an outage.
   */
  private async check(s: PhoneSubject, learn: boolean): Promise<Verdict> {
    if (this.opts.rotation) await this.foldPreviousKey(s);
    const early = this.listsAndDestination(s);
    if (typeof early !== 'boolean') return early;
    return this.opts.engine.check(s, early, learn);
  }

  private async consume(s: PhoneSubject, ip: string): Promise<Verdict> {
    const { engine, ipRules } = this.opts;
    // First, even for a number denied by a list: the fold also moves its list entry to the new hash.
    // Awaited only while rotating: an await is a promise and a turn of the queue per request.
    if (this.opts.rotation) await this.foldPreviousKey(s);
    const early = this.listsAndDestination(s, (entry) => this.opts.tally.listHit(entry));
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

  private count(consume: boolean, v: Verdict, region: string | undefined): void {
    const { metrics, tally } = this.opts;
    const kind = consume ? 'consume' : 'check';
    const result = v.allowed ? 'allowed' : 'denied';
    metrics.decisionCounts.slot(kind, result, v.reason ?? '', v.rule ?? '', v.metricSource).value++;
    if (!consume) return;
    const country = region !== undefined && isCountryCode(region) ? region : 'ZZ';
    const byCountry = v.allowed ? metrics.countryAllowed : metrics.countryDenied;
    (byCountry.get(country) ?? byCountry.open(country, { country, result })).value++;
    if (v.allowed) {
      const spend = metrics.spendTally.get(country) ?? metrics.spendTally.open(country, { country });
      spend.value += priceOf(this.opts.prices ?? DEFAULT_PRICES, country);
    }
    tally.consume(v.reason, v.shadow);
    for (const r of v.shadow) metrics.shadowDenials.inc({ rule: r });
  }
}

/** Decided by this instance before the engine (built only for such a denial, not per request). */
function localSource(mode: 'database' | 'memory'): Pick<Verdict, 'source' | 'metricSource'> {
  return { source: mode, metricSource: 'local' };
}

const isUpperAscii = (c: number) => c >= 65 && c <= 90;

/** /^[A-Z]{2}$/, without a regular expression at every consume. */
function isCountryCode(region: string): boolean {
  return region.length === 2 && isUpperAscii(region.charCodeAt(0)) && isUpperAscii(region.charCodeAt(1));
}
