// The key sets every scenario draws from, reproducibly: the same seed gives the same sequence of
// numbers to our path, to rate-limiter-flexible and to the end-to-end clients.

export const KEY_COUNT = 100_000;
export const ZIPF_EXPONENT = 1.1;

/**
 * uniform / zipf over KEY_COUNT numbers; single: one number (deep pipelining on one row);
 * distinct: a number never used before on every draw (beyond the KEY_COUNT block), to fill a
 * daemon's per-number state.
 */
export type KeyDistribution = 'uniform' | 'zipf' | 'single' | 'distinct';

/**
 * Valid US area codes (libphonenumber accepts every NXX-XXXX under them): 8,000 ranges of 1,000
 * numbers each (exchange 200-999 × the thousands digit).
 */
const AREA_CODES = [
  415, 628, 510, 341, 650, 408, 669, 925, 707, 916, 279, 209, 559, 831, 805, 818, 747, 213, 323, 310, 424, 562, 626, 909, 840, 951, 760, 442, 619, 858,
];
const RANGES_PER_AREA = 8_000;
/**
 * Numbers per 1,000-number range: below the default policy's sweep rule (10 distinct numbers
 * per range per hour, src/core/policy/default.ts), so "all allowed" scenarios stay allowed under the
 * default policy, as legitimate traffic spread over many ranges does.
 */
export const NUMBERS_PER_RANGE = 7;
const MAX_INDEX = AREA_CODES.length * RANGES_PER_AREA * NUMBERS_PER_RANGE;

/** E.164 number `index` (unique for every index below MAX_INDEX), all valid US numbers. */
export function phoneNumber(index: number): string {
  if (!(index >= 0 && index < MAX_INDEX)) throw new RangeError(`bench key index ${index} is outside 0…${MAX_INDEX - 1}`);
  const range = Math.floor(index / NUMBERS_PER_RANGE);
  const area = AREA_CODES[Math.floor(range / RANGES_PER_AREA)]!;
  const inArea = range % RANGES_PER_AREA;
  const exchange = 200 + Math.floor(inArea / 10);
  const last3 = String((index % NUMBERS_PER_RANGE) * 142).padStart(3, '0');
  return `+1${area}${exchange}${inArea % 10}${last3}`;
}

/** mulberry32: tiny, fast, good enough to pick keys. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns a sampler of key indexes in [0, KEY_COUNT). */
export function keySampler(dist: KeyDistribution, seed = 42): () => number {
  if (dist === 'single') return () => 0;
  if (dist === 'distinct') {
    let next = KEY_COUNT;
    return () => next++;
  }
  const random = prng(seed);
  if (dist === 'uniform') return () => Math.floor(random() * KEY_COUNT);
  const cdf = new Float64Array(KEY_COUNT);
  let sum = 0;
  for (let rank = 0; rank < KEY_COUNT; rank++) cdf[rank] = sum += (rank + 1) ** -ZIPF_EXPONENT;
  for (let rank = 0; rank < KEY_COUNT; rank++) cdf[rank]! /= sum;
  // Hot ranks land on scattered keys, not on the lowest indexes, so their hashes (and row locks)
  // fall anywhere in the key order.
  const shuffle = prng(7);
  const rankToKey = Uint32Array.from({ length: KEY_COUNT }, (_, i) => i);
  for (let i = KEY_COUNT - 1; i > 0; i--) {
    const j = Math.floor(shuffle() * (i + 1));
    [rankToKey[i], rankToKey[j]] = [rankToKey[j]!, rankToKey[i]!];
  }
  return () => {
    const u = random();
    let lo = 0;
    let hi = KEY_COUNT - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return rankToKey[lo]!;
  };
}

/**
 * End-user addresses for consumes: a fresh one per request (from 10.0.0.0/8, data only, never
 * connected to), so the daemon's per-IP limit of 20/h never decides and every decision is the
 * phone's; the daemon still pays for tracking each address, as it would in production.
 */
export function clientIp(counter: number): string {
  return `10.${(counter >>> 16) & 255}.${(counter >>> 8) & 255}.${counter & 255}`;
}
