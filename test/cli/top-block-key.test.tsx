// `b` in the live dashboard blocks the selected number's 1,000-number range (from its mask),
// after a y/n; a row whose older mask names no range says so instead of guessing.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render } from 'ink-testing-library';
import { stripVTControlCharacters } from 'node:util';
import { TopApp, type TopAppProps } from '../../src/cli/top/TopApp.js';
import { fixtureFrame } from './top-fixture.js';

afterEach(() => cleanup());

function app(over: Partial<TopAppProps> = {}) {
  const blocks: string[] = [];
  const frame = fixtureFrame(3);
  frame.hottest[0]!.masked = '+4477009•••';
  frame.hottest[1]!.masked = '+4479••••••56';
  const props: TopAppProps = {
    load: async () => frame,
    onReset: async () => ({ previousCount: 0 }),
    onBlock: async (prefix) => {
      blocks.push(prefix);
    },
    intervalMs: 3_600_000,
    inputActive: true,
    columns: 100,
    rows: 40,
    ...over,
  };
  const ui = render(<TopApp {...props} />);
  const text = () => stripVTControlCharacters(ui.lastFrame() ?? '');
  const until = (check: (t: string) => void) => vi.waitFor(() => check(text()), { timeout: 5_000, interval: 10 });
  return { ui, until, blocks };
}

describe('top b key', () => {
  it("asks, then blocks the selected number's range; n cancels", async () => {
    const t = app();
    await t.until((f) => expect(f).toContain('+4477009•••'));
    t.ui.stdin.write('b');
    await t.until((f) => expect(f).toContain('Block every number in +4477009••• for 1h? Audited as "top". y/n'));
    t.ui.stdin.write('n');
    await t.until((f) => expect(f).toContain('block cancelled'));
    expect(t.blocks).toEqual([]);
    t.ui.stdin.write('b');
    await t.until((f) => expect(f).toContain('Block every number in +4477009•••'));
    t.ui.stdin.write('y');
    await t.until((f) => expect(f).toContain('blocked +4477009••• for 1h'));
    expect(t.blocks).toEqual(['+4477009']);
  });

  it('says an older mask names no range', async () => {
    const t = app();
    await t.until((f) => expect(f).toContain('+4479••••••56'));
    t.ui.stdin.write('j');
    await t.until((f) => expect(f.split('\n').find((l) => l.startsWith('▶'))).toContain('+4479••••••56'));
    t.ui.stdin.write('b');
    await t.until((f) => expect(f).toContain('this mask names no range'));
    expect(t.blocks).toEqual([]);
  });
});
