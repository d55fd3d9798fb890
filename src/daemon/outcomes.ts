// Recording outcomes (docs/protocol.md *Outcomes*), for the three ways they arrive: WebSocket,
// POST /v1/outcome and the Twilio adapter. The decision id proves itself (src/core/decision-id.ts),
// so nothing is looked up to accept one; the table's unique decision id makes a repeat count once.
// While the database is away an outcome is spooled like a decision made from memory and written
// by the same replay; a repeat of one still in the spool is known from the write-behind queue.
//
// A converted outcome takes its call back from the conversion counters (takeBackCounters in
// src/core/policy/conversion.ts, judged at the report's own time under the policy in force): in
// the database in the transaction that stores it, or, during an outage, in memory at once and in
// the database when the spool is written. Either way only the first report of a decision does.

import type { Logger } from 'pino';
import { DECISION_ID_HORIZON_MS, type DecisionIds } from '../core/decision-id.js';
import { takeBackCounters } from '../core/policy/conversion.js';
import { isSafe } from '../core/policy/counters.js';
import type { ListIndex } from '../core/lists.js';
import type { Policy } from '../core/policy/types.js';
import { isConnectionError } from '../db/errors.js';
import { recordOutcome, type OutcomeEvent, type RecordResult } from '../db/outcomes.js';
import type { Pool } from '../db/pool.js';
import { errorReply, outcomeRecordedReply } from '../protocol/replies.js';
import type { ErrorReply, Outcome, OutcomeRecordedReply, OutcomeRequest, OutcomeSource, RequestId } from '../protocol/wire.js';
import type { DecisionEngine } from './engine/engine.js';
import { SpoolUnavailableError } from './engine/spool.js';
import type { Metrics } from './metrics.js';
import { boundedCache } from './bounded-cache.js';

export interface OutcomeRecorderOptions {
  engine: DecisionEngine;
  pool: Pool;
  ids: DecisionIds;
  metrics: Metrics;
  logger: Logger;
  /** The policy in force: its conversion group says what a converted outcome takes back. */
  policies: { readonly current: { readonly policy: Pick<Policy, 'conversion' | 'safe'> }; readonly lists?: ListIndex };
  /** Told of every outcome stored (or kept) for the first time: it engages the conversion rules. */
  conversion?: { recorded(): void };
}

/**
 * Decisions whose outcome this daemon stored, remembered so that a repeat reported during an
 * outage (a retry of a report whose reply was lost as the database went) is known as one and
 * does not take its call back from memory a second time.
 */
const STORED_REMEMBERED = 10_000;

export type OutcomeReport = Pick<OutcomeRequest, 'decisionId' | 'outcome' | 'durationMs'>;

const HORIZON_DAYS = DECISION_ID_HORIZON_MS / 86_400_000;

export class OutcomeRecorder {
  private readonly stored = boundedCache<string, Outcome>(STORED_REMEMBERED);

  constructor(private readonly opts: OutcomeRecorderOptions) {}

  /** Never rejects: every report gets exactly one reply. */
  async record(report: OutcomeReport, source: OutcomeSource, reqId?: RequestId): Promise<OutcomeRecordedReply | ErrorReply> {
    const { engine, ids, logger } = this.opts;
    try {
      const nowMs = engine.dbNow();
      const decoded = ids.decode(report.decisionId, nowMs);
      if (!decoded.ok) {
        const message =
          decoded.why === 'expired'
            ? `decisionId expired: outcomes are accepted for ${HORIZON_DAYS} days after the decision`
            : decoded.why === 'malformed'
              ? 'decisionId is not one this service issued (use the decisionId of an allowed consume reply, unchanged)'
              : 'decisionId is not one this service issued (or it was issued under a key this daemon no longer has)';
        return errorReply('unknown_decision', message, reqId);
      }
      const { facts } = decoded;
      const policy = this.opts.policies.current.policy;
      const event: OutcomeEvent = {
        decisionId: report.decisionId,
        hash: facts.hash,
        region: facts.region,
        range: facts.range,
        decidedAtMs: facts.atMs,
        outcome: report.outcome,
        durationMs: report.durationMs,
        source,
        atMs: nowMs,
        takeBack: takeBackCounters(policy, {
          region: facts.region,
          range: facts.range,
          decidedAtMs: facts.atMs,
          outcome: report.outcome,
          durationMs: report.durationMs,
          reportedAtMs: nowMs,
          // Safe numbers get no conversion counters. A safe prefix or an allowed prefix is never
          // narrower than a range, so the id's range tells; an allowed number by its hash.
          safe: isSafe(policy, facts.range) || this.opts.policies.lists?.lookup(facts.hash, facts.range, nowMs)?.kind === 'allow',
        }),
      };
      const result = await this.store(event);
      if (result.stored === 'conflict') {
        return errorReply(
          'invalid_message',
          `this decision already has the outcome "${result.existing}"; an outcome is reported once per decision (a repeat of the same one is acknowledged)`,
          reqId,
        );
      }
      if (result.stored === 'new') {
        this.opts.metrics.outcomes.inc({ outcome: report.outcome, source });
        this.opts.conversion?.recorded();
      }
      return outcomeRecordedReply(reqId, report.decisionId, result.stored === 'duplicate');
    } catch (err) {
      if (err instanceof SpoolUnavailableError) {
        return errorReply(
          'internal_error',
          'the database is unreachable and this daemon cannot keep the outcome (spool full or unwritable); retry later',
          reqId,
        );
      }
      logger.error({ err }, 'could not record an outcome');
      return errorReply('internal_error', 'the outcome could not be recorded; retry', reqId);
    }
  }

  private async store(event: OutcomeEvent): Promise<RecordResult> {
    const { engine, pool } = this.opts;
    const pending = engine.pendingOutcome(event.decisionId);
    if (pending) return sameOrConflict(pending.outcome, event.outcome);
    const known = this.stored.get(event.decisionId);
    if (known !== undefined) return sameOrConflict(known, event.outcome);
    if (engine.mode === 'database') {
      try {
        const result = await recordOutcome(pool, event);
        if (result.stored !== 'conflict') this.stored.set(event.decisionId, event.outcome);
        return result;
      } catch (err) {
        if (!isConnectionError(err)) throw err;
        // Kept like a decision made from memory; the engine finds the outage on its own.
      }
    }
    await engine.queueOutcome(event);
    // Memory's counters decide until the database is back, which takes the call back when the
    // spool is written.
    engine.takeBackCall(event.takeBack ?? [], event.decidedAtMs);
    return { stored: 'new' };
  }
}

function sameOrConflict(existing: Outcome, reported: Outcome): RecordResult {
  return existing === reported ? { stored: 'duplicate' } : { stored: 'conflict', existing };
}
