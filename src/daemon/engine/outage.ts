// What keeps the promise when the database stalls or goes away: one fate for every statement in
// flight at the switch (inDatabase), consumes decided by memory (after any statement holding the
// number settles, answered only once spooled) and the adoption of spools left by daemons that
// stopped during an outage. Separate from engine.ts so
// the rules that keep the promise across stalls, crashes and restarts sit together.

import type { Logger } from 'pino';
import type { DecideInput, DecideResult, DecisionPolicy } from '../../core/policy/decide.js';
import type { DecideOutcome, DecideRequest } from '../../db/decisions.js';
import { errForLog, isConnectionError, mayHaveCommitted } from '../../db/errors.js';
import type { InFlight } from './in-flight.js';
import type { MemoryState } from './memory.js';
import { isOutcomeEvent, SpoolUnavailableError, type Spool } from './spool.js';
import type { PhoneSubject } from './verdict.js';
import type { WriteBehind } from './write-behind.js';

export interface OutageOptions {
  memory: MemoryState;
  inFlight: InFlight;
  writes: WriteBehind;
  spool: Spool;
  logger: Logger;
  /** True while the engine decides in memory. */
  inMemory: () => boolean;
}

/** Rejects consume requests still queued in the batcher when the engine leaves the database. */
export class NotSent extends Error {}

export class Outage {
  private fullLogged = false;

  constructor(private readonly opts: OutageOptions) {}

  /**
   * Runs one decision statement. Leaving the database while statements are in flight is where
   * a daemon could break the promise, so every request has exactly one fate:
   * - never sent (still queued in the batcher): the engine's enterMemory() rejects it with
   *   NotSent and memory decides it; the database never sees it.
   * - sent, committed, answered: the database's answer stands and is folded into memory (the
   *   number's log; in memory mode the allowed call also counts in memory's aggregates).
   * - sent and certainly not committed (statement_timeout cancelled it, read-only refused it,
   *   never reached the server): nothing happened; memory decides it afresh.
   * - sent and the connection died (outcome unknown): each of its requests is counted in memory
   *   as an admitted call first, then memory decides it afresh. If the database did commit it,
   *   that call counts twice (there, and again by memory's own decision): over-counting, never
   *   under-counting.
   * Memory never decides a number while a statement holding it is in flight (consume() waits
   * on inFlight), and the folding above runs before inFlight.leave(), so memory sees the
   * statement's effect before its next decision for that number.
   */
  async inDatabase(
    reqs: readonly DecideRequest[],
    policy: DecisionPolicy,
    io: { run: () => Promise<DecideOutcome[]>; nowMs: () => number; failed: (err: unknown) => void; decided: (atMs: number) => void },
  ): Promise<DecideOutcome[]> {
    const { memory, inFlight } = this.opts;
    const hashes = reqs.map((r) => r.hash);
    inFlight.enter(hashes);
    try {
      const outs = await io.run();
      const folding = this.opts.inMemory();
      outs.forEach((out, i) => {
        memory.learnNumber(hashes[i]!, out.summary, out.blockedUntil);
        if (folding && out.allowed) memory.addToCounters(reqs[i]!.counters, out.atMs);
      });
      if (outs.length > 0) io.decided(outs[0]!.atMs);
      return outs;
    } catch (err) {
      if (isConnectionError(err)) {
        if (mayHaveCommitted(err)) {
          const at = io.nowMs();
          for (const r of reqs) memory.admit(r.hash, at, r.counters, policy);
        }
        io.failed(err);
      }
      throw err;
    } finally {
      inFlight.leave(hashes);
    }
  }

  /**
   * A consume decided by memory: only once no statement holding the number is in flight, and
   * answered only once the decision is in the spool (fsynced). A spool that is full or broken
   * refuses the consume (fail closed): memory admits nothing it cannot record. Undefined when
   * the database came back meanwhile: decide there.
   */
  async consume(s: PhoneSubject, input: DecideInput, policy: DecisionPolicy, nowMs: () => number): Promise<DecideResult | undefined> {
    const { inFlight, spool, memory, writes, logger } = this.opts;
    for (let settling = inFlight.settled(s.hash); settling; settling = inFlight.settled(s.hash)) await settling;
    if (!this.opts.inMemory()) return undefined;
    if (!spool.hasRoomFor(1)) {
      if (!this.fullLogged)
        logger.error({ spool: spool.file, unwritten: spool.size }, 'spool full or unwritable: consumes are refused until the database is back');
      this.fullLogged = true;
      throw new SpoolUnavailableError('the daemon cannot record decisions while the database is unreachable (spool full); refused');
    }
    this.fullLogged = false;
    const r = memory.consume(s.hash, input, policy, nowMs());
    await writes.queueDurable([{ hash: s.hash, region: s.region, masked: s.masked, atMs: r.atMs, allowed: r.allowed, counters: input.counters, rule: r.rule }]);
    return r;
  }

  /**
   * Takes over the spools of daemons that are gone: their allowed calls count in memory at once
   * (a daemon restarted during an outage goes on from what its predecessor allowed), and their
   * decisions join this daemon's spool and write-behind.
   */
  async adopt(policy: () => DecisionPolicy): Promise<number> {
    const { spool, memory, writes, logger } = this.opts;
    try {
      return await spool.takeOver(async (events, from) => {
        const p = policy();
        for (const e of events) {
          if (!isOutcomeEvent(e)) {
            if (e.allowed) memory.admit(e.hash, e.atMs, e.counters, p);
          } else {
            // An outcome its daemon kept takes its call back here too, at its report time; the
            // database takes it back once, when the spool is written.
            memory.removeCall(e.takeBack ?? [], e.decidedAtMs, e.atMs);
          }
        }
        await writes.queueDurable(events);
        logger.warn({ from, decisions: events.length }, 'took over the spool of a daemon that stopped before the database had its decisions');
      });
    } catch (err) {
      logger.error({ err: errForLog(err) }, 'could not take over a spool');
      return 0;
    }
  }
}
