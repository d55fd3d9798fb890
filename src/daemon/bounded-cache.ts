// Every in-memory table of the daemon (numbers, denials, counters, addresses, phone parses) is an
// lru-cache bounded in entries. Given `max`, lru-cache allocates its slot arrays up front, ~28 B
// a slot: 17 MB for the daemon's ~600k slots before the first request, which put an idle daemon
// with 10,000 sockets over its 150 MB. Bounded by `maxSize` with every entry of size 1, the same
// bound holds and the arrays grow with use, at the same cost per operation (200k entries,
// 1M operations once full: 0.32–0.38 µs with `max`, 0.33–0.35 µs with `maxSize`).
import { LRUCache } from 'lru-cache';

export function boundedCache<K extends {}, V extends {}>(entries: number): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: entries, sizeCalculation: () => 1 });
}
