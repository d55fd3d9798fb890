// `policy check --against` replays sweep rules (distinct numbers per range) from the stored
// calls, and says what it cannot replay for the groups that learn from outcomes.
import { describe, expect, it } from 'vitest';
import { parsePolicyFile } from '../../src/core/policy/file.js';
import { replayPolicy, type ReplayCall } from '../../src/core/policy/whatif.js';
import type { Policy } from '../../src/core/policy/types.js';

function policy(text: string): Policy {
  const parsed = parsePolicyFile(text);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return parsed.policy;
}

const MIN = 60_000;
const SWEEP = 'sweep: {prefix: {digits: 3, distinct: [{limit: 3, window: 1h}]}}\n';
const call = (number: string, t: number, range = '+4479112301•••'): ReplayCall => ({ number, country: 'GB', range, t });

describe('replayPolicy: sweep', () => {
  it('denies the first new number past the limit in a range, never a number already counted', () => {
    const calls = [call('a', 1), call('b', 2), call('c', 3), call('d', 4), call('a', 5), call('e', 6, '+4479112302•••')];
    const r = replayPolicy(policy(SWEEP), calls);
    // d is the 4th distinct number of the range; a again is counted already; e is in another range.
    expect(r.rules.map((o) => [o.rule, o.denied])).toEqual([['sweep:prefix:1h', 1]]);
    expect(r.denied).toBe(1);
  });

  it('lets a number leave the window at its newest call, not its first', () => {
    const calls = [call('a', 0), call('b', 1), call('c', 2), call('a', 30 * MIN), call('d', 60 * MIN + 5), call('e', 60 * MIN + 6)];
    const r = replayPolicy(policy(SWEEP), calls);
    // At 60m+5 b and c have left (their calls are an hour old); a stays, moved to 30m: d is the 2nd, e the 3rd.
    expect(r.denied).toBe(0);
    const more = replayPolicy(policy(SWEEP), [...calls, call('f', 60 * MIN + 7)]);
    expect(more.rules.map((o) => [o.rule, o.denied])).toEqual([['sweep:prefix:1h', 1]]);
  });

  it('reports a shadow sweep without denying, and a denied call spends nothing on the range', () => {
    const shadow = replayPolicy(policy('sweep: {shadow: true, prefix: {digits: 3, distinct: [{limit: 1, window: 1h}]}}\n'), [call('a', 1), call('b', 2)]);
    expect(shadow.denied).toBe(0);
    expect(shadow.rules).toEqual([{ rule: 'sweep:prefix:1h', shadow: true, denied: 1, byCountry: { GB: 1 } }]);
    // a's second call is denied by the number rule and spends nothing on the range: d is the 4th distinct number.
    const both = replayPolicy(policy(`number: {limits: [{limit: 1, window: 1h}]}\n${SWEEP}`), [
      call('a', 1),
      call('a', 2),
      call('b', 3),
      call('c', 4),
      call('d', 5),
    ]);
    expect(both.rules.map((o) => [o.rule, o.denied])).toEqual([
      ['number:1h', 1],
      ['sweep:prefix:1h', 1],
    ]);
  });

  it('leaves safe ranges out, and says which safe prefixes it could not match', () => {
    const gb = (n: string, t: number) => call(n, t, '+447911123•••');
    const r = replayPolicy(
      policy(`${SWEEP}safe: {prefixes: ['+447911']}\n`),
      ['a', 'b', 'c', 'd', 'e'].map((n, i) => gb(n, i)),
    );
    expect(r.denied).toBe(0);
    expect(r.notReconstructed.join('\n')).not.toMatch(/safe\.prefixes/);
    // German numbers vary in length: a safe prefix valid for the longest can be longer than the
    // stored range of a shorter number, which may or may not be under it.
    const de = replayPolicy(policy(`${SWEEP}safe: {prefixes: ['+493012345678']}\n`), [call('a', 1, '+49301234•••')]);
    expect(de.notReconstructed.join('\n')).toMatch(/safe\.prefixes: 1 calls could not be matched/);
  });

  it('says conversion rules and automatic blocks are not replayed', () => {
    const r = replayPolicy(policy(`${SWEEP}conversion: {prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}]}}\nblocks: {escalate: [5m], decay: 1d}\n`), [
      call('a', 1),
    ]);
    const text = r.notReconstructed.join('\n');
    expect(text).toMatch(/conversion rules \(conversion:prefix:1h\): outcomes are not replayed/);
    expect(text).toMatch(/blocks: only the sweep denials/);
  });
});
