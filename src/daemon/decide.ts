// The decision path shared by both transports: who may do what (roles), the per-IP reserve and
// refund around the phone decision, phone parsing with its cache, and the reply. Separate from
// the transports so WebSocket and HTTP cannot decide differently.

import type { Logger } from 'pino';
import { InvalidPhoneNumberError } from '../core/errors.js';
import { hashPhone, maskPhone, normalizePhone } from '../core/phone.js';
import { decisionReply, errorReply } from '../protocol/replies.js';
import type { Reply, Request } from '../protocol/wire.js';
import type { Role } from './auth.js';
import type { DecisionEngine, PhoneDecision, PhoneSubject } from './engine/engine.js';
import type { IpLimiter } from './limits.js';
import { LruMap } from './lru-map.js';
import type { Metrics } from './metrics.js';

const PHONE_CACHE_SIZE = 50_000;

export interface DeciderOptions {
  engine: DecisionEngine;
  ipLimiter: IpLimiter;
  metrics: Metrics;
  logger: Logger;
  phoneKey: string;
}

export class Decider {
  private readonly phoneCache = new LruMap<string, PhoneSubject & { e164: string }>(PHONE_CACHE_SIZE);

  constructor(private readonly opts: DeciderOptions) {}

  private subject(phoneNumber: string): PhoneSubject & { e164: string } {
    const cached = this.phoneCache.get(phoneNumber);
    if (cached) return cached;
    const { e164, region } = normalizePhone(phoneNumber);
    const s = { e164, hash: hashPhone(e164, this.opts.phoneKey), region, masked: maskPhone(e164) };
    this.phoneCache.set(phoneNumber, s);
    return s;
  }

  /** Never rejects: every request gets exactly one reply. */
  async decide(req: Request, role: Role, socketIp: string): Promise<Reply> {
    const { engine, ipLimiter, metrics } = this.opts;
    const id = req.id;
    try {
      let s;
      try {
        s = this.subject(req.phoneNumber);
      } catch (err) {
        if (err instanceof InvalidPhoneNumberError) return errorReply('invalid_phone_number', err.message, id);
        throw err;
      }
      if (req.type === 'rate_limit_check') {
        const d = await engine.check(s);
        metrics.decisions.inc({ kind: 'check', result: d.allowed ? 'allowed' : 'denied', reason: d.allowed ? '' : 'phone', source: d.metricSource });
        return decisionReply(id, s.e164, s.region, d);
      }
      if (role === 'browser') return errorReply('forbidden', 'browser clients may only check; consume needs a token', id);
      // Only a token-holding service may speak for the end user's address.
      const ip = role === 'service' && req.ip ? req.ip : socketIp;
      const slot = ipLimiter.reserve(ip);
      if (!slot.decision.allowed) {
        metrics.decisions.inc({ kind: 'consume', result: 'denied', reason: 'ip', source: 'memory' });
        // Decided by this instance's per-IP memory, whatever the database's state; the numbers are the ip rule's.
        return decisionReply(id, s.e164, s.region, { ...slot.decision, source: 'memory' }, 'ip_rate_limit_exceeded');
      }
      let d: PhoneDecision;
      try {
        d = await engine.consume(s);
      } catch (err) {
        ipLimiter.refund(ip, slot.atMs);
        throw err;
      }
      if (!d.allowed) ipLimiter.refund(ip, slot.atMs);
      metrics.decisions.inc({ kind: 'consume', result: d.allowed ? 'allowed' : 'denied', reason: d.allowed ? '' : 'phone', source: d.metricSource });
      return decisionReply(id, s.e164, s.region, d, d.allowed ? undefined : 'phone_rate_limit_exceeded');
    } catch (err) {
      this.opts.logger.error({ err: (err as Error).message }, 'request failed');
      return errorReply('internal_error', 'the request could not be decided; retry', id);
    }
  }
}
