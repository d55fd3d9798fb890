// Micro-benchmark for the daemon's per-key memory (issue #12): set/get cost of an LRU while it
// fills and once it is full, at the engine's size (200k keys). Compares the Map-based LruMap the
// daemon used to carry (kept here, verbatim, as the baseline) with lru-cache, which replaced it:
// once full, every set evicts the Map's oldest entry, and V8's Map walks past the deleted entries
// at its head on each `keys().next()`, so the old eviction cost grew with the deleted backlog.
//
// Run: npm run build && node dist/bench/lru.js [capacity] [operations once full]
import { performance } from 'node:perf_hooks';
import { LRUCache } from 'lru-cache';

/** A hand-written LRU (the daemon used one before lru-cache), the baseline lru-cache is measured against. */
class MapLru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly capacity: number) {}
  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }
  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
  }
}

interface Lru {
  get(key: string): number[] | undefined;
  set(key: string, value: number[]): void;
}

const CAPACITY = Number(process.argv[2] ?? 200_000);
// Bounded: the old LRU takes up to hundreds of µs per evicting set.
const OPS_FULL = Number(process.argv[3] ?? 20_000);

function nsPerOp(ms: number, ops: number): string {
  return ((ms * 1e6) / ops).toFixed(0).padStart(7);
}

function run(name: string, make: () => Lru): void {
  const lru = make();
  const value = [1];
  // Filling: distinct keys until the capacity is reached.
  let t = performance.now();
  for (let i = 0; i < CAPACITY; i++) lru.set(`k${i}`, value);
  const fillSetMs = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < CAPACITY; i++) lru.get(`k${i}`);
  const fullGetHitMs = performance.now() - t;
  // Full: every set is a new key and evicts the least recently used one (the daemon meeting new
  // numbers), interleaved with gets of recent keys (the same numbers calling again).
  let next = CAPACITY;
  t = performance.now();
  for (let i = 0; i < OPS_FULL; i++) lru.set(`k${next++}`, value);
  const fullSetMs = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < OPS_FULL; i++) {
    lru.get(`k${next - 1 - (i % 1000)}`);
    lru.set(`k${next++}`, value);
  }
  const mixedMs = performance.now() - t;
  console.log(
    `${name.padEnd(10)} ns/op: set while filling ${nsPerOp(fillSetMs, CAPACITY)} | get (full, hit) ${nsPerOp(fullGetHitMs, CAPACITY)} | ` +
      `set (full, evicting) ${nsPerOp(fullSetMs, OPS_FULL)} | get+set (full) ${nsPerOp(mixedMs, OPS_FULL)}`,
  );
}

console.log(`LRU of ${CAPACITY} keys, ${OPS_FULL} operations once full`);
run('Map LRU', () => new MapLru<string, number[]>(CAPACITY));
run('lru-cache', () => new LRUCache<string, number[]>({ max: CAPACITY }));
