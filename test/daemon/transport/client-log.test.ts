// Client-caused log lines (issue 17/21): at most one warn per minute per kind, the next one
// counting what was suppressed, the rest at debug.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ClientLog } from '../../../src/daemon/transport/client-log.js';

function capture() {
  const lines: Array<{ level: number; msg: string; kind?: string; suppressed?: number }> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

describe('ClientLog', () => {
  it('warns once per minute per kind, then reports how many were suppressed', async () => {
    const { logger, lines } = capture();
    let now = 1_000_000;
    const log = new ClientLog(logger, 60_000, () => now);
    for (let i = 0; i < 1_000; i++) log.warn('upgrade_token_required', { status: 401 }, 'refused');
    log.warn('bad_request', {}, 'bad');
    now += 59_999;
    log.warn('upgrade_token_required', {}, 'refused');
    now += 1;
    log.warn('upgrade_token_required', {}, 'refused');
    await new Promise((r) => setImmediate(r));
    const warns = lines.filter((l) => l.level === 40);
    expect(warns.map((w) => [w.kind, w.suppressed])).toEqual([
      ['upgrade_token_required', undefined],
      ['bad_request', undefined],
      ['upgrade_token_required', 1_000],
    ]);
    expect(warns[2]!.msg).toContain('1000 more of this kind');
    expect(lines.filter((l) => l.level === 20)).toHaveLength(1_000);
  });
});
