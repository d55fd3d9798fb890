// Drives the drill's calls through the daemon's decision path at SIMULATED time: the list and
// destination checks and the per-IP limiter the Decider (src/daemon/decider.ts) runs before the
// engine, then ratelimit_decide through decideBatch with `nowMs` standing in for the database
// clock, with the counters applicableCounters gives (as src/daemon/engine/engine.ts does), and
// outcomes through src/db/outcomes.ts once their simulated report time comes. A day of traffic
// runs in tens of seconds: calls are decided in batches of one TICK_MS of simulated time, each
// batch one statement, in arrival order, as the daemon's batcher does with what arrives together.
//
// Not run: the deny cache (a shortcut for repeated denials that decides the same), the early
// denials' write (stats only), key rotation, and the memory fallback (the database is up).

import { hashPhone, maskPhone, normalizePhoneWithType } from '../../src/core/phone.js';
import { applicableCounters, CONVERSION_IDLE, isSafe, type ConversionState } from '../../src/core/policy/counters.js';
import { destinationDenial } from '../../src/core/policy/subject.js';
import { ListIndex } from '../../src/core/lists.js';
import { DecisionIds, rangeLabel } from '../../src/core/decision-id.js';
import type { Policy } from '../../src/core/policy/types.js';
import type { Pool } from '../../src/db/pool.js';
import { decideBatch, type DecideRequest } from '../../src/db/decisions.js';
import { conversionEngaged, mostConvertedPerRegion, recordOutcome, type OutcomeEvent } from '../../src/db/outcomes.js';
import { baselineLimit, takeBackCounters } from '../../src/core/policy/conversion.js';
import { IpRules, type IpReservation } from '../../src/daemon/ip-rules.js';
import { LIST_BLOCK_RULE } from '../../src/daemon/decider.js';
import { activePolicy } from '../../src/daemon/policy-source.js';
import type { PhoneSubject } from '../../src/daemon/engine/verdict.js';
import type { DrillTraffic, SimCall } from './traffic.js';

/** Simulated time decided per statement. */
export const TICK_MS = 30_000;
/** The simulated day starts here (a Monday, 00:00 UTC): fixed, so runs are identical. */
export const DAY_START_MS = Date.UTC(2026, 0, 5);
const PHONE_KEY = 'drill-phone-key-not-a-secret-0123456789abcdef';

export interface CallResult {
  allowed: boolean;
  /** The denying rule's id (list:block, destination:…, ip:…, a number or aggregate rule). */
  rule: string | null;
  /** Since the day's start: when it was decided (the end of its tick). */
  decidedAtMs: number;
}

export interface DrillRun {
  results: CallResult[];
  /** Statements and wall time, to show the run is bounded. */
  statements: number;
  wallMs: number;
  /** Wall time by part: decisions, outcomes, conversion state reads. */
  partsMs: { decide: number; outcomes: number; conversion: number };
}

interface PendingOutcome {
  dueMs: number;
  event: OutcomeEvent;
}

/** Outcomes of one tick stored at once, as concurrent reports to the daemon are (each its own transaction). */
const OUTCOME_CONCURRENCY = 4;

/**
 * The outcome path as src/daemon/outcomes.ts runs it: what a converted outcome takes back
 * (takeBackCounters, judged at its report time), then recordOutcome (store, take back) at that
 * time. Returns the transactions run.
 */
async function reportOutcomes(pool: Pool, events: readonly OutcomeEvent[], policy: Policy, lists: ListIndex): Promise<number> {
  const queue = events.map((e): OutcomeEvent => ({
    ...e,
    takeBack: takeBackCounters(policy, {
      region: e.region,
      range: e.range,
      decidedAtMs: e.decidedAtMs,
      outcome: e.outcome,
      durationMs: e.durationMs,
      reportedAtMs: e.atMs,
      safe: isSafe(policy, e.range) || lists.lookup(e.hash, e.range, e.atMs)?.kind === 'allow',
    }),
  }));
  let next = 0;
  const worker = async () => {
    while (next < queue.length) {
      const e = queue[next++]!;
      await recordOutcome(pool, e, { nowMs: e.atMs });
    }
  };
  await Promise.all(Array.from({ length: Math.min(OUTCOME_CONCURRENCY, queue.length) }, worker));
  return queue.length;
}

/**
 * How often (simulated time) the conversion state is read. The daemon reads engagement every
 * minute and baselines every 15 (src/daemon/conversion-state.ts); baselines move by days and each
 * read scans two weeks of outcomes, so the drill reads both hourly (engaged from the start here).
 */
const CONVERSION_READ_MS = 60 * 60_000;

/** As src/daemon/conversion-state.ts reads it, at the simulated instant. */
async function conversionStateAt(pool: Pool, policy: Policy, nowMs: number): Promise<ConversionState> {
  const engaged = await conversionEngaged(pool, nowMs);
  const conversion = policy.conversion;
  const baseline = conversion?.country?.baseline;
  const baselineLimits = new Map<string, number>();
  if (engaged && conversion && baseline) {
    const most = await mostConvertedPerRegion(pool, {
      windowMs: baseline.rule.windowMs,
      historyMs: baseline.historyMs,
      answeredAtLeastMs: conversion.answeredAtLeastMs,
      nowMs,
    });
    for (const [region, n] of most) baselineLimits.set(region, baselineLimit(baseline, n));
  }
  return { engaged, baselineLimits };
}

/** `deadline`: performance.now() past which the run stops with an error (the drill is bounded in time). */
export async function runDrill(pool: Pool, traffic: DrillTraffic, policy: Policy, deadline = Infinity): Promise<DrillRun> {
  const started = performance.now();
  const active = activePolicy(policy, 1);
  const lists = new ListIndex([]);
  const ipRules = new IpRules();
  ipRules.update(policy.ip);
  const ids = new DecisionIds(PHONE_KEY);
  const subjects = new Map<string, PhoneSubject>();
  const subject = (phone: string): PhoneSubject => {
    let s = subjects.get(phone);
    if (!s) {
      const { e164, region, type } = normalizePhoneWithType(phone);
      s = { e164, hash: hashPhone(e164, PHONE_KEY), previousHash: undefined, region, masked: maskPhone(e164), type };
      subjects.set(phone, s);
    }
    return s;
  };
  const results = new Array<CallResult>(traffic.calls.length);
  const pending: PendingOutcome[] = [];
  let statements = 0;
  const partsMs = { decide: 0, outcomes: 0, conversion: 0 };
  let next = 0;
  let conversion: ConversionState = CONVERSION_IDLE;
  let conversionReadMs = -Infinity;
  const conversionAt = async (nowMs: number): Promise<ConversionState> => {
    if (nowMs - conversionReadMs < CONVERSION_READ_MS) return conversion;
    conversionReadMs = nowMs;
    statements++;
    return conversionStateAt(pool, policy, nowMs);
  };
  for (let tickEnd = TICK_MS; next < traffic.calls.length || pending.length > 0; tickEnd += TICK_MS) {
    const nowMs = DAY_START_MS + tickEnd;
    if (performance.now() > deadline)
      throw new Error(`the drill ran past its time bound at ${(tickEnd / 3_600_000).toFixed(1)} h of simulated time; set DRILL_MAX_SECONDS to allow more`);
    // Outcomes reported during this tick, before its decisions (they were reported meanwhile).
    pending.sort((a, b) => a.dueMs - b.dueMs);
    const notYet = pending.findIndex((p) => p.dueMs > nowMs);
    const due = pending.splice(0, notYet === -1 ? pending.length : notYet);
    if (due.length > 0) {
      const t0 = performance.now();
      statements += await reportOutcomes(
        pool,
        due.map((p) => p.event),
        policy,
        lists,
      );
      partsMs.outcomes += performance.now() - t0;
    }
    if (next >= traffic.calls.length) continue;
    const t1 = performance.now();
    conversion = await conversionAt(nowMs);
    partsMs.conversion += performance.now() - t1;

    const batch: Array<{ call: SimCall; s: PhoneSubject; slot: IpReservation; request: DecideRequest }> = [];
    for (; next < traffic.calls.length && traffic.calls[next]!.atMs < tickEnd; next++) {
      const call = traffic.calls[next]!;
      const s = subject(call.phone);
      // As Decider.listsAndDestination: a list entry first, then the destination.
      const match = lists.lookup(s.hash, s.e164, nowMs);
      if (match?.kind === 'block') {
        results[call.seq] = { allowed: false, rule: LIST_BLOCK_RULE, decidedAtMs: tickEnd };
        continue;
      }
      const allowlisted = match?.kind === 'allow';
      const dest = allowlisted ? undefined : destinationDenial(policy, s.region, s.type);
      if (dest) {
        results[call.seq] = { allowed: false, rule: dest.rule, decidedAtMs: tickEnd };
        continue;
      }
      const slot = ipRules.reserve(call.ip, allowlisted, nowMs);
      if (slot.denied) {
        results[call.seq] = { allowed: false, rule: slot.denied.rule, decidedAtMs: tickEnd };
        continue;
      }
      // As DecisionEngine.input: safe numbers get no conversion or sweep counters.
      const safe = allowlisted || isSafe(policy, s.e164);
      const counters = applicableCounters(policy, s.e164, s.region, { conversion, safe });
      batch.push({ call, s, slot, request: { hash: s.hash, region: s.region, masked: s.masked, allowlisted, safe, counters } });
    }
    if (batch.length === 0) continue;
    const t2 = performance.now();
    const outs = await decideBatch(
      pool,
      batch.map((b) => b.request),
      active.decision,
      nowMs,
    );
    statements++;
    partsMs.decide += performance.now() - t2;
    batch.forEach(({ call, s, slot }, i) => {
      const out = outs[i]!;
      // A denied consume spends nothing anywhere, the ip rules included.
      if (!out.allowed) slot.refund();
      results[call.seq] = { allowed: out.allowed, rule: out.rule, decidedAtMs: out.atMs - DAY_START_MS };
      if (!out.allowed || !call.outcome) return;
      const decisionId = ids.encode({ hash: s.hash, region: s.region, range: rangeLabel(s.e164), atMs: out.atMs });
      const dueMs = out.atMs + call.outcome.reportAfterMs;
      pending.push({
        dueMs,
        event: {
          decisionId,
          hash: s.hash,
          region: s.region,
          range: rangeLabel(s.e164),
          decidedAtMs: out.atMs,
          outcome: call.outcome.outcome,
          durationMs: call.outcome.durationMs,
          source: 'ws',
          atMs: Math.round(dueMs),
        },
      });
    });
  }
  return { results, statements, wallMs: performance.now() - started, partsMs };
}
