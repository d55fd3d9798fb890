// The daemon's phone-parse cache against the bench's working set (issue 22: "the 50k parse cache
// misses half the time on 100k numbers"): hit rate over a stream of decisions on 100k numbers,
// uniform and Zipf, at a given capacity, what a miss costs (parse, HMAC, mask) and what an entry
// holds on the heap. The cache is the Decider's (src/daemon/decider.ts: boundedCache of
// PhoneSubject by the number as sent).
//
// Run: npm run build && node --expose-gc dist/bench/phone-cache.js [capacity] [decisions]
import { performance } from 'node:perf_hooks';
import { boundedCache } from '../src/daemon/bounded-cache.js';
import { hashPhone, maskPhone, normalizePhoneWithType } from '../src/core/phone.js';
import { KEY_COUNT, keySampler, phoneNumber, type KeyDistribution } from './lib/keys.js';

const CAPACITY = Number(process.argv[2] ?? 150_000);
const DECISIONS = Number(process.argv[3] ?? 1_000_000);
const KEY = 'bench-phone-key-0123456789abcdefghijklmnopqrstuvwxyz';

interface Subject {
  e164: string;
  hash: string;
  region: string | undefined;
  masked: string;
  type: string | undefined;
}

function subjectOf(text: string): Subject {
  const { e164, region, type } = normalizePhoneWithType(text);
  return { e164, hash: hashPhone(e164, KEY), region, masked: maskPhone(e164), type };
}

const gc = (globalThis as { gc?: () => void }).gc;
const heapMb = () => {
  gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
};

function run(dist: KeyDistribution): void {
  const next = keySampler(dist);
  const before = heapMb();
  const cache = boundedCache<string, Subject>(CAPACITY);
  let hits = 0;
  let missMs = 0;
  // Past the first sight of each number: what a daemon that has seen its working set gets.
  let lateHits = 0;
  const lateFrom = Math.floor(DECISIONS / 2);
  const started = performance.now();
  for (let i = 0; i < DECISIONS; i++) {
    // As the daemon receives it: a fresh string from each frame.
    const text = `${phoneNumber(next())}`;
    if (cache.get(text)) {
      hits++;
      if (i >= lateFrom) lateHits++;
      continue;
    }
    const t = performance.now();
    cache.set(text, subjectOf(text));
    missMs += performance.now() - t;
  }
  const totalMs = performance.now() - started;
  const entries = cache.size;
  const perEntryB = ((heapMb() - before) * 2 ** 20) / entries;
  console.log(
    `${dist.padEnd(7)} ${KEY_COUNT.toLocaleString('en-US')} numbers, ${DECISIONS.toLocaleString('en-US')} decisions, capacity ${CAPACITY.toLocaleString('en-US')}: ` +
      `hit rate ${((hits / DECISIONS) * 100).toFixed(1)} % (second half ${((lateHits / (DECISIONS - lateFrom)) * 100).toFixed(1)} %; ${entries.toLocaleString('en-US')} entries), ` +
      `a miss ${((missMs * 1000) / (DECISIONS - hits)).toFixed(1)} µs, a decision's lookup on average ${((totalMs * 1000) / DECISIONS).toFixed(2)} µs, ` +
      `${gc ? `${Math.round(perEntryB)} B of heap an entry (${((perEntryB * entries) / 2 ** 20).toFixed(1)} MB)` : 'heap per entry: run with --expose-gc'}`,
  );
}

run('uniform');
run('zipf');
