// Micro-benchmark for the group-commit batcher (issue #12): time per request when a client
// pipelines 512 or 8192 requests on one number, before (bench/lib/rescanning-batcher.ts, which
// rescanned its whole queue on every take) and after (src/daemon/engine/batcher.ts, per-key
// FIFOs). Statements complete on the next macrotask, as a database round trip would, so what is
// measured is the batcher's own bookkeeping. Engine settings: 256 per batch, 2 in flight.
//
// Run: npm run build && node dist/bench/batcher.js
import { performance } from 'node:perf_hooks';
import { Batcher } from '../src/daemon/engine/batcher.js';
import { Batcher as RescanningBatcher } from './lib/rescanning-batcher.js';

interface Submitter {
  submit(req: string): Promise<string>;
}
type Make = (run: (reqs: string[]) => Promise<string[]>) => Submitter;

const OPTS = { maxBatch: 256, maxInFlight: 2, keyOf: (r: string) => r };
const roundTrip = (reqs: string[]) => new Promise<string[]>((resolve) => setImmediate(() => resolve(reqs)));

/** Microseconds per request for `depth` requests queued at once on one key, best of `rounds`. */
async function usPerRequest(make: Make, depth: number, rounds: number, key: (i: number) => string): Promise<number> {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const b = make(roundTrip);
    const t = performance.now();
    await Promise.all(Array.from({ length: depth }, (_, i) => b.submit(key(i))));
    best = Math.min(best, ((performance.now() - t) * 1000) / depth);
  }
  return best;
}

const impls: Array<[string, Make]> = [
  ['before (rescanning)', (run) => new RescanningBatcher(run, OPTS)],
  ['after (per-key FIFOs)', (run) => new Batcher(run, OPTS)],
];
// Warm up both (JIT) before measuring either.
for (const [, make] of impls) for (const depth of [512, 8192]) await usPerRequest(make, depth, 3, (i) => `w${i % 7}`);
console.log('µs per request, best of 5 (one key | distinct keys)');
for (const [name, make] of impls) {
  const cells: string[] = [];
  for (const depth of [512, 8192]) {
    const one = await usPerRequest(make, depth, 5, () => 'hot');
    const many = await usPerRequest(make, depth, 5, (i) => `k${i}`);
    cells.push(`${depth} queued: ${one.toFixed(2).padStart(8)} | ${many.toFixed(2).padStart(6)}`);
  }
  console.log(`${name.padEnd(22)} ${cells.join('   ')}`);
}
