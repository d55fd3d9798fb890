// Recording outcomes (docs/protocol.md *Outcomes*), for the three ways they arrive: WebSocket,
// POST /v1/outcome and the Twilio adapter. The decision id proves itself (src/core/decision-id.ts),
// so nothing is looked up to accept one; the table's unique decision id makes a repeat count once.
// While the database is away an outcome is spooled like a decision made from memory and written
// by the same replay; a repeat of one still in the spool is known from the write-behind queue.

import type { Logger } from 'pino';
import { DECISION_ID_HORIZON_MS, type DecisionIds } from '../core/decision-id.js';
import { isConnectionError } from '../db/errors.js';
import { recordOutcome, type OutcomeEvent, type RecordResult } from '../db/outcomes.js';
import type { Pool } from '../db/pool.js';
import { errorReply, outcomeRecordedReply } from '../protocol/replies.js';
import type { ErrorReply, Outcome, OutcomeRecordedReply, OutcomeRequest, OutcomeSource, RequestId } from '../protocol/wire.js';
import type { DecisionEngine } from './engine/engine.js';
import { SpoolUnavailableError } from './engine/spool.js';
import type { Metrics } from './metrics.js';

export interface OutcomeRecorderOptions {
  engine: DecisionEngine;
  pool: Pool;
  ids: DecisionIds;
  metrics: Metrics;
  logger: Logger;
}

export type OutcomeReport = Pick<OutcomeRequest, 'decisionId' | 'outcome' | 'durationMs'>;

const HORIZON_DAYS = DECISION_ID_HORIZON_MS / 86_400_000;

export class OutcomeRecorder {
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
      };
      const result = await this.store(event);
      if (result.stored === 'conflict') {
        return errorReply(
          'invalid_message',
          `this decision already has the outcome "${result.existing}"; an outcome is reported once per decision (a repeat of the same one is acknowledged)`,
          reqId,
        );
      }
      if (result.stored === 'new') this.opts.metrics.outcomes.inc({ outcome: report.outcome, source });
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
    if (engine.mode === 'database') {
      try {
        return await recordOutcome(pool, event);
      } catch (err) {
        if (!isConnectionError(err)) throw err;
        // Kept like a decision made from memory; the engine finds the outage on its own.
      }
    }
    await engine.queueOutcome(event);
    return { stored: 'new' };
  }
}

function sameOrConflict(existing: Outcome, reported: Outcome): RecordResult {
  return existing === reported ? { stored: 'duplicate' } : { stored: 'conflict', existing };
}
