// The drill's traffic: one simulated day of a voice-and-SMS verification app's legitimate calls
// with four attacks mixed in, generated from a seed so every policy (and every commit) is judged
// on the same calls. Pure: no clock, no I/O. The harness (harness.ts) decides each call; what the
// app would report afterwards is planned here and reported only for calls that were allowed.
//
// Legitimate traffic: sessions arrive as a Poisson process; each is a user asking for a code
// (SMS) or a verification call (voice) to their own mobile in one of ~23 countries; mostly one
// call per number, a failed attempt retried once or twice a few minutes later, some numbers
// coming back hours later; ~70% of calls convert (code entered 1-5 min after the SMS; call
// answered after 5-25 s of ringing and lasting 30 s - 5 min); a quarter of sessions come through
// shared (carrier-grade NAT) IPv4 addresses. Retries are planned whatever the decision, so the
// traffic does not depend on the policy under test.

import examples from 'libphonenumber-js/mobile/examples';
import { getExampleNumber, type CountryCode } from 'libphonenumber-js/max';
import { normalizePhoneWithType } from '../../src/core/phone.js';
import type { Outcome } from '../../src/protocol/wire.js';
import { Rng } from './rng.js';
import type { Channel } from './prices.js';

export const ATTACKS = ['sweep', 'premium', 'victim', 'slow'] as const;
export type Attack = (typeof ATTACKS)[number];
export type Source = 'legit' | Attack;

const SECOND_MS = 1_000;
const MINUTE_MS = 60 * SECOND_MS;
const HOUR_MS = 60 * MINUTE_MS;

export interface PlannedOutcome {
  outcome: Outcome;
  /** When the app reports it, after the decision. */
  reportAfterMs: number;
  durationMs?: number;
}

export interface SimCall {
  /** Position in the day's order of arrival (ties broken by it). */
  seq: number;
  /** Since the start of the simulated day. */
  atMs: number;
  phone: string;
  /** For prices: the destination's country. */
  country: string;
  ip: string;
  channel: Channel;
  source: Source;
  /** A premium-rate destination (priced per minute at premium rates). */
  premium: boolean;
  /** Verified, or answered for at least CONVERTED_ANSWER_MS. */
  converted: boolean;
  /** What the app reports if the call is allowed; undefined: nothing (a code never entered). */
  outcome: PlannedOutcome | undefined;
  /** How long the call was answered, for billing (voice only). */
  answeredMs: number | undefined;
}

export interface DrillTraffic {
  seed: number;
  durationMs: number;
  calls: SimCall[];
}

export interface TrafficOptions {
  seed: number;
  /** The simulated span (default one day). */
  durationMs?: number;
  /** Legitimate sessions (a first call and its retries) per hour. */
  legitSessionsPerHour?: number;
}

export const DEFAULT_SEED = 19;
export const DEFAULT_DURATION_MS = 24 * HOUR_MS;
export const DEFAULT_LEGIT_SESSIONS_PER_HOUR = 600;
/** docs/protocol.md: an answered call converts when it lasted at least this (the default policy's answered_at_least). */
const CONVERTED_ANSWER_MS = 10 * SECOND_MS;

/** Share of legitimate sessions per destination country (weights, normalized). */
export const LEGIT_COUNTRIES: Readonly<Record<string, number>> = {
  US: 24,
  GB: 9,
  IN: 9,
  BR: 7,
  DE: 6,
  FR: 5,
  MX: 4,
  ES: 4,
  IT: 4,
  CA: 4,
  PH: 3,
  ID: 3,
  NG: 2,
  TR: 2,
  PL: 2,
  NL: 2,
  JP: 2,
  AU: 2,
  KE: 1,
  EG: 1,
  IE: 1,
  UZ: 1.5,
  KG: 0.5,
};

export const LEGIT_SHAPE = {
  smsShare: 0.6,
  /** Each attempt converts with this probability (so does the share of all legitimate calls). */
  conversion: 0.7,
  /** A failed attempt is retried 30 s - 3 min later with this probability (at most twice). */
  retry: [0.5, 0.3],
  /** Sessions whose number has been seen before (hours earlier). */
  returning: 0.08,
  /** Sessions behind one of NAT_ADDRESSES shared addresses. */
  natShare: 0.25,
  natAddresses: 100,
  /** The rest: IPv6 for this share, IPv4 otherwise. */
  ipv6Share: 0.4,
} as const;

/** The attacks: when they start (from the day's start), how many calls, how fast; see attackCalls. */
export const ATTACK_PLAN = {
  sweep: {
    what: 'SMS pumping: 5,000 consecutive UZ mobile numbers (5 ranges of 1,000) from rotating IPv4 and IPv6 addresses, 2/s',
    startMs: 14 * HOUR_MS,
    calls: 5_000,
    everyMs: 500,
  },
  premium: {
    what: 'IRSF: 200 calls to GB (+44 909) and FR (+33 899) premium-rate numbers, rotating addresses, held 3-10 min',
    startMs: 16 * HOUR_MS,
    calls: 200,
    everyMs: 18 * SECOND_MS,
  },
  victim: { what: 'call bombing: one DE mobile called every minute for 3 h from rotating addresses', startMs: 17 * HOUR_MS, calls: 180, everyMs: MINUTE_MS },
  slow: {
    what: 'slow sweep: one KG mobile number in each of 270 different ranges, every 40 s for 3 h (never two in a range), rotating addresses',
    startMs: 20 * HOUR_MS,
    calls: 270,
    everyMs: 40 * SECOND_MS,
  },
} as const satisfies Record<Attack, { what: string; startMs: number; calls: number; everyMs: number }>;

const SWEEP_FIRST = '+998901230000';
const VICTIM = '+4917612345678';
const SLOW_SWEEP_BLOCK = '+996555';

type Draft = Omit<SimCall, 'seq'>;

/** A mobile number of `country`: the country's example mobile with its last digits drawn. */
function mobileOf(rng: Rng, country: string): string {
  const example = getExampleNumber(country as CountryCode, examples);
  if (!example) throw new Error(`no example mobile number for ${country}`);
  const national = example.nationalNumber as string;
  const cc = example.countryCallingCode as string;
  for (let drawn = Math.min(7, national.length - 2); drawn >= 3; drawn--) {
    for (let attempt = 0; attempt < 8; attempt++) {
      const candidate = `+${cc}${national.slice(0, national.length - drawn)}${rng.digits(drawn)}`;
      const t = normalizePhoneWithType(candidate);
      if (t.region === country && (t.type === 'mobile' || t.type === 'fixed_line_or_mobile')) return t.e164;
    }
  }
  return example.number as string;
}

function rotatingIp(rng: Rng): string {
  return rng.chance(0.5) ? rng.ipv4() : rng.ipv6();
}

/** One attempt's fate: converted or not, what the app reports and when, how long it was answered. */
function legitFate(rng: Rng, channel: Channel): Pick<SimCall, 'converted' | 'outcome' | 'answeredMs'> {
  const converted = rng.chance(LEGIT_SHAPE.conversion);
  if (channel === 'sms') {
    if (converted) return { converted, answeredMs: undefined, outcome: { outcome: 'verified', reportAfterMs: rng.between(1, 5) * MINUTE_MS } };
    // Most unconverted codes are simply never entered: nothing to report. Some fail to deliver.
    if (rng.chance(0.15)) return { converted, answeredMs: undefined, outcome: { outcome: 'failed', reportAfterMs: rng.between(5, 60) * SECOND_MS } };
    return { converted, answeredMs: undefined, outcome: undefined };
  }
  const ringMs = rng.between(5, 25) * SECOND_MS;
  if (converted) {
    const durationMs = Math.round(rng.between(30, 300) * SECOND_MS);
    return { converted, answeredMs: durationMs, outcome: { outcome: 'answered', durationMs, reportAfterMs: ringMs + durationMs } };
  }
  if (rng.chance(0.3)) {
    // Picked up and dropped at once (voicemail, a hang-up): answered, too short to convert.
    const durationMs = Math.round(rng.between(1, CONVERTED_ANSWER_MS / SECOND_MS - 1) * SECOND_MS);
    return { converted, answeredMs: durationMs, outcome: { outcome: 'answered', durationMs, reportAfterMs: ringMs + durationMs } };
  }
  return { converted, answeredMs: undefined, outcome: { outcome: 'unanswered', reportAfterMs: 30 * SECOND_MS } };
}

function legitCalls(rng: Rng, durationMs: number, perHour: number): Draft[] {
  const out: Draft[] = [];
  const nats = Array.from({ length: LEGIT_SHAPE.natAddresses }, () => rng.ipv4());
  const seen: Array<{ phone: string; country: string }> = [];
  for (let t = rng.exponential(HOUR_MS / perHour); t < durationMs; t += rng.exponential(HOUR_MS / perHour)) {
    let who: { phone: string; country: string };
    if (seen.length > 0 && rng.chance(LEGIT_SHAPE.returning)) who = seen[rng.int(Math.min(seen.length, 5_000)) + Math.max(0, seen.length - 5_000)]!;
    else {
      const country = rng.weighted(LEGIT_COUNTRIES);
      who = { phone: mobileOf(rng, country), country };
      seen.push(who);
    }
    // Shared addresses are unevenly busy: the busiest of 100 carries ~5% of their sessions.
    const ip = rng.chance(LEGIT_SHAPE.natShare)
      ? nats[Math.floor(LEGIT_SHAPE.natAddresses * rng.next() ** 1.5)]!
      : rng.chance(LEGIT_SHAPE.ipv6Share)
        ? rng.ipv6()
        : rng.ipv4();
    const channel: Channel = rng.chance(LEGIT_SHAPE.smsShare) ? 'sms' : 'voice';
    let at = t;
    for (let attempt = 0; at < durationMs; attempt++) {
      const fate = legitFate(rng, channel);
      out.push({ atMs: Math.round(at), ...who, ip, channel, source: 'legit', premium: false, ...fate });
      const retry = LEGIT_SHAPE.retry[attempt];
      if (fate.converted || retry === undefined || !rng.chance(retry)) break;
      at += rng.between(30, 180) * SECOND_MS;
    }
  }
  return out;
}

function attackCalls(rng: Rng, attack: Attack, durationMs: number): Draft[] {
  const plan = ATTACK_PLAN[attack];
  const out: Draft[] = [];
  for (let i = 0; i < plan.calls; i++) {
    const atMs = plan.startMs + i * plan.everyMs + Math.round(rng.between(0, plan.everyMs / 4));
    if (atMs >= durationMs) break;
    const ip = rotatingIp(rng);
    if (attack === 'sweep') {
      // Pumped codes are never entered: the app reports nothing.
      const phone = `+${String(BigInt(SWEEP_FIRST.slice(1)) + BigInt(i))}`;
      out.push({ atMs, phone, country: 'UZ', ip, channel: 'sms', source: attack, premium: false, converted: false, outcome: undefined, answeredMs: undefined });
    } else if (attack === 'premium') {
      const gb = rng.chance(0.5);
      const phone = gb ? `+449098${rng.digits(6)}` : `+33899${rng.digits(6)}`;
      // The fraudster's line answers and holds the call: by the duration rule it "converts".
      const durationMs = Math.round(rng.between(3, 10) * MINUTE_MS);
      const outcome: PlannedOutcome = { outcome: 'answered', durationMs, reportAfterMs: 5 * SECOND_MS + durationMs };
      out.push({
        atMs,
        phone,
        country: gb ? 'GB' : 'FR',
        ip,
        channel: 'voice',
        source: attack,
        premium: true,
        converted: true,
        outcome,
        answeredMs: durationMs,
      });
    } else if (attack === 'victim') {
      const outcome: PlannedOutcome = { outcome: 'unanswered', reportAfterMs: 30 * SECOND_MS };
      out.push({ atMs, phone: VICTIM, country: 'DE', ip, channel: 'voice', source: attack, premium: false, converted: false, outcome, answeredMs: undefined });
    } else {
      const phone = `${SLOW_SWEEP_BLOCK}${String(i * 3 + 101).padStart(3, '0')}${rng.digits(3)}`;
      out.push({ atMs, phone, country: 'KG', ip, channel: 'sms', source: attack, premium: false, converted: false, outcome: undefined, answeredMs: undefined });
    }
  }
  return out;
}

/** The day's calls in order of arrival: the same for the same options, on any machine. */
export function simulate(options: TrafficOptions): DrillTraffic {
  const durationMs = options.durationMs ?? DEFAULT_DURATION_MS;
  // One generator per stream: changing an attack leaves the legitimate traffic as it was.
  const drafts = [
    ...legitCalls(new Rng(options.seed), durationMs, options.legitSessionsPerHour ?? DEFAULT_LEGIT_SESSIONS_PER_HOUR),
    ...ATTACKS.flatMap((a, i) => attackCalls(new Rng(options.seed * 31 + i + 1), a, durationMs)),
  ];
  // Stable: equal instants keep their generation order.
  drafts.sort((a, b) => a.atMs - b.atMs);
  return { seed: options.seed, durationMs, calls: drafts.map((d, seq) => ({ seq, ...d })) };
}
