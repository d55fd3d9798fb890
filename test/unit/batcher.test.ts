import { describe, expect, it } from 'vitest';
import { Batcher } from '../../src/daemon/engine/batcher.js';

/** A statement runner the test completes by hand, to control the order in which they finish. */
function manual() {
  const calls: Array<{ reqs: string[]; finish: () => void }> = [];
  const run = (reqs: string[]) =>
    new Promise<string[]>((resolve) => calls.push({ reqs: [...reqs], finish: () => resolve(reqs.map((r) => `done:${r}`)) }));
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

  it('rejects every request of a failed statement and carries on', async () => {
    let fail = true;
    const b = new Batcher(async (reqs: string[]) => {
      if (fail) throw new Error('boom');
      return reqs;
    }, { maxBatch: 5, maxInFlight: 1 });
    await expect(b.submit('a')).rejects.toThrow('boom');
    fail = false;
    expect(await b.submit('b')).toBe('b');
  });
});
