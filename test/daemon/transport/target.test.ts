// The request-target parser that replaced `new URL` on attacker input (issue 17): it never
// throws, refuses what is malformed with a reason, and routes origin-form and absolute-form alike.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_TARGET_BYTES, parseTarget } from '../../../src/daemon/transport/target.js';

describe('parseTarget', () => {
  it('routes origin-form and absolute-form on the path as sent, with the query parameters', () => {
    expect(parseTarget('/ws?token=abc')).toMatchObject({ ok: true, path: '/ws' });
    const t = parseTarget('http://localhost:8081/ws?token=a%2Bb&x=1');
    expect(t.ok && t.path).toBe('/ws');
    expect(t.ok && t.params.get('token')).toBe('a+b');
    expect(parseTarget('http://[::1]:8081/health')).toMatchObject({ ok: true, path: '/health' });
    expect(parseTarget('https://example.com')).toMatchObject({ ok: true, path: '/' });
    expect(parseTarget(undefined)).toMatchObject({ ok: true, path: '/' });
    // Not decoded, not normalised: routes compare bytes.
    expect(parseTarget('/%77s')).toMatchObject({ ok: true, path: '/%77s' });
    expect(parseTarget('/v1/../ws')).toMatchObject({ ok: true, path: '/v1/../ws' });
  });

  it('refuses what made new URL throw, and other malformed targets, with a reason', () => {
    for (const bad of [
      '//x:99999/ws',
      'http://[/ws',
      '//[',
      '[',
      'http://x:99999/',
      'http://u@x/ws',
      '/ws%zz',
      '/%',
      '/ws#x',
      '*',
      'ws',
      'x:1',
      '/a b',
      '/\u0000',
      `/${'a'.repeat(MAX_TARGET_BYTES)}`,
      '/ws?token=%zz',
    ]) {
      const t = parseTarget(bad);
      expect({ bad, ok: t.ok }).toEqual({ bad, ok: false });
      if (!t.ok) expect(t.message.length).toBeLessThan(300);
    }
  });

  it('property: never throws, and what it accepts has a path that starts with one "/"', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 80 }),
          fc.string({ unit: 'binary', maxLength: 80 }),
          fc.webUrl().map((u) => u.toString()),
        ),
        (raw) => {
          const t = parseTarget(raw);
          if (t.ok) expect(t.path.startsWith('/') && !t.path.startsWith('//')).toBe(true);
        },
      ),
      { numRuns: 2_000 },
    );
  });
});
