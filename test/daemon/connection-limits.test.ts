import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/core/config.js';
import { BacklogBudget, DEFAULT_BACKLOG_LIMITS, type BacklogShare } from '../../src/daemon/transport/backlog.js';
import { defaultMaxConnections, reserveFor } from '../../src/daemon/transport/connections.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max processes             63422                63422                processes
Max open files            20000                20000                files
`;

describe('defaultMaxConnections', () => {
  it('takes 80% of the soft fd limit', () => {
    expect(defaultMaxConnections(LIMITS)).toBe(16_000);
  });

  it('keeps headroom for non-client descriptors at small limits', () => {
    expect(defaultMaxConnections(LIMITS.replace(/20000/g, '256'))).toBe(128);
  });

  it('falls back to the common 1024 when the limit cannot be read', () => {
    expect(defaultMaxConnections('')).toBe(819);
  });

  it('keeps a reserve for /health within bounds', () => {
    expect(reserveFor(16)).toBe(2);
    expect(reserveFor(500)).toBe(25);
    expect(reserveFor(16_000)).toBe(64);
  });
});

describe('BacklogBudget', () => {
  const share = (): BacklogShare => ({ countedBytes: 0, pausedAtMs: undefined });
  const L = DEFAULT_BACKLOG_LIMITS;

  it('pauses a socket over its high mark and lets it resume below the low mark', () => {
    const b = new BacklogBudget();
    const s = share();
    b.measure(s, L.perSocketHighBytes + 1, 0);
    expect(b.shouldPause(s)).toBe(true);
    b.measure(s, L.perSocketLowBytes + 1, 0);
    expect(b.mayResume(s)).toBe(false);
    b.measure(s, 0, 1);
    expect(s.countedBytes).toBe(L.pendingReplyBytes);
    expect(b.mayResume(s)).toBe(true);
    b.release(s);
    expect(b.total).toBe(0);
  });

  it('pauses every socket over its low mark while the total is over its cap', () => {
    const b = new BacklogBudget({ ...L, totalHighBytes: 3 * L.perSocketHighBytes });
    const shares = Array.from({ length: 4 }, share);
    for (const s of shares) b.measure(s, L.perSocketHighBytes, 0);
    const small = share();
    b.measure(small, L.perSocketLowBytes + 1, 0);
    expect(b.total).toBe(4 * L.perSocketHighBytes + L.perSocketLowBytes + 1);
    expect(shares.every((s) => b.shouldPause(s))).toBe(true);
    expect(b.shouldPause(small)).toBe(true);
    // Under its own low mark it is not the problem, but it may not resume while the total is over.
    b.measure(small, 10, 0);
    expect(b.shouldPause(small)).toBe(false);
    expect(b.mayResume(small)).toBe(false);
    for (const s of shares) b.release(s);
    expect(b.mayResume(small)).toBe(true);
  });

  it('calls a socket stalled only when paused long with its own replies unread', () => {
    const b = new BacklogBudget();
    const s = share();
    b.measure(s, L.perSocketHighBytes + 1, 0);
    s.pausedAtMs = 1_000;
    expect(b.stalled(s, 1_000 + L.stallMs)).toBe(false);
    expect(b.stalled(s, 1_001 + L.stallMs)).toBe(true);
    b.measure(s, 10, 0);
    expect(b.stalled(s, 1_001 + L.stallMs)).toBe(false);
  });
});

describe('configuration of the connection limits', () => {
  it('reads RATELIMIT_MAX_CONNECTIONS (unset: derived by the daemon) and RATELIMIT_WS_IDLE_TIMEOUT', () => {
    expect(resolveConfig({}, {}).maxConnections).toBeUndefined();
    expect(resolveConfig({}, {}).wsIdleTimeoutMs).toBe(60_000);
    const c = resolveConfig({}, { RATELIMIT_MAX_CONNECTIONS: '500', RATELIMIT_WS_IDLE_TIMEOUT: '2s' });
    expect(c.maxConnections).toBe(500);
    expect(c.wsIdleTimeoutMs).toBe(2_000);
  });

  it('refuses a cap too small to keep a reserve, naming the variable', () => {
    expect(() => resolveConfig({}, { RATELIMIT_MAX_CONNECTIONS: '5' })).toThrow(/RATELIMIT_MAX_CONNECTIONS/);
    expect(() => resolveConfig({}, { RATELIMIT_WS_IDLE_TIMEOUT: 'soon' })).toThrow(/RATELIMIT_WS_IDLE_TIMEOUT/);
  });
});
