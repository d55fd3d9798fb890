import { describe, expect, it, vi } from 'vitest';
import { Batcher } from '../../src/daemon/engine/batcher.js';

/** A statement runner the test completes by hand, to control the order in which they finish. */
function manual() {
  const calls: Array<{ reqs: string[]; finish: () => void }> = [];
  const run = (reqs: string[]) => new Promise<string[]>((resolve) => calls.push({ reqs: [...reqs], finish: () => resolve(reqs.map((r) => `done:${r}`)) }));
  return { calls, run };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('Batcher', () => {
  it('sends a lone request at once and gathers the ones that arrive meanwhile', async () => {
    const m = manual();
    const b = new Batcher(m.run, { maxBatch: 10, maxInFlight: 1 });
    const first = b.submit('a');
    const rest = ['b', 'c', 'd'].map((r) => b.submit(r));
    expect(m.calls.map((c) => c.reqs)).toEqual([['a']]);
    m.calls[0]!.finish();
    expect(await first).toBe('done:a');
    await tick();
    expect(m.calls.map((c) => c.reqs)).toEqual([['a'], ['b', 'c', 'd']]);
    m.calls[1]!.finish();
    expect(await Promise.all(rest)).toEqual(['done:b', 'done:c', 'done:d']);
    await b.idle();
  });

  it('never puts a key in a statement while an earlier request with that key is in flight', async () => {
    const m = manual();
    const b = new Batcher(m.run, { maxBatch: 10, maxInFlight: 2, keyOf: (r: string) => r[0]! });
    void b.submit('x1');
    void b.submit('x2'); // same key: must wait for x1's statement, even with a free slot
    void b.submit('y1');
    void b.submit('x3');
    expect(m.calls.map((c) => c.reqs)).toEqual([['x1'], ['y1']]);
    m.calls[1]!.finish();
    await tick();
    // y1 finished, x1 still in flight: nothing with key x may go yet.
    expect(m.calls).toHaveLength(2);
    m.calls[0]!.finish();
    await tick();
    expect(m.calls[2]!.reqs).toEqual(['x2', 'x3']);
    m.calls[2]!.finish();
    await b.idle();
  });

  it('with overlapAfterMs, starts a second statement only once the one in flight has run that long', async () => {
    vi.useFakeTimers();
    try {
      const m = manual();
      const b = new Batcher(m.run, { maxBatch: 10, maxInFlight: 2, overlapAfterMs: 50, keyOf: (r: string) => r });
      void b.submit('a');
      void b.submit('b');
      void b.submit('c');
      // A free slot, but the statement in flight is young: b and c wait for more company.
      expect(m.calls.map((c) => c.reqs)).toEqual([['a']]);
      await vi.advanceTimersByTimeAsync(49);
      expect(m.calls).toHaveLength(1);
      void b.submit('d');
      // At 50 ms the first still runs (stuck on a lock, say): everything waiting goes beside it.
      await vi.advanceTimersByTimeAsync(1);
      expect(m.calls.map((c) => c.reqs)).toEqual([['a'], ['b', 'c', 'd']]);
      // Both slots full: the next one waits for a slot, whatever the time.
      void b.submit('e');
      await vi.advanceTimersByTimeAsync(500);
      expect(m.calls).toHaveLength(2);
      m.calls[1]!.finish();
      await vi.advanceTimersByTimeAsync(0);
      // A slot freed, and the statement still in flight is older than 50 ms: e goes at once.
      expect(m.calls.map((c) => c.reqs)).toEqual([['a'], ['b', 'c', 'd'], ['e']]);
      m.calls[0]!.finish();
      m.calls[2]!.finish();
      await b.idle();
    } finally {
      vi.useRealTimers();
    }
  });

  it('rejects every request of a failed statement and carries on', async () => {
    let fail = true;
    const b = new Batcher(
      async (reqs: string[]) => {
        if (fail) throw new Error('boom');
        return reqs;
      },
      { maxBatch: 5, maxInFlight: 1 },
    );
    await expect(b.submit('a')).rejects.toThrow('boom');
    fail = false;
    expect(await b.submit('b')).toBe('b');
  });

  it('answers 8192 queued requests on one key and 8192 on distinct keys, each key in arrival order', async () => {
    // A runner that checks the batcher's promise itself: no statement carries a key that is in
    // a statement still in flight, and it finishes statements out of order (the later first).
    const inFlight = new Set<string>();
    const seen: string[] = [];
    const violations: string[] = [];
    const keyOf = (r: string) => r.split('#')[0]!;
    const run = (reqs: string[]) => {
      const keys = new Set(reqs.map(keyOf));
      for (const k of keys) if (inFlight.has(k)) violations.push(k);
      for (const k of keys) inFlight.add(k);
      seen.push(...reqs);
      return new Promise<string[]>((resolve) =>
        setTimeout(() => {
          for (const k of keys) inFlight.delete(k);
          resolve(reqs.map((r) => `done:${r}`));
        }, reqs.length % 2),
      );
    };
    const b = new Batcher(run, { maxBatch: 256, maxInFlight: 4, keyOf });
    const N = 8192;
    const hot = Array.from({ length: N }, (_, i) => `hot#${i}`);
    const distinct = Array.from({ length: N }, (_, i) => `k${i}#0`);
    // Interleaved, as pipelining clients would send them.
    const submitted = hot.flatMap((h, i) => [h, distinct[i]!]);
    const replies = await Promise.all(submitted.map((r) => b.submit(r)));
    await b.idle();
    expect(replies).toEqual(submitted.map((r) => `done:${r}`));
    expect(violations).toEqual([]);
    expect(seen).toHaveLength(2 * N);
    expect(seen.filter((r) => r.startsWith('hot#'))).toEqual(hot);
    expect(new Set(seen.filter((r) => !r.startsWith('hot#')))).toEqual(new Set(distinct));
    expect(b.pending).toBe(0);
  });
});
