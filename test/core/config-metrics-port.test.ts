// RATELIMIT_METRICS_PORT (issue 17): unset = /metrics on the main port; a port; validated.
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/core/config.js';

describe('RATELIMIT_METRICS_PORT', () => {
  it('is unset by default, a port when set', () => {
    expect(resolveConfig({}, {}).metricsPort).toBeUndefined();
    expect(resolveConfig({}, { RATELIMIT_METRICS_PORT: '9091' }).metricsPort).toBe(9091);
    expect(resolveConfig({}, { RATELIMIT_METRICS_PORT: '0' }).metricsPort).toBe(0);
  });

  it('refuses what is not a port, or the main port, naming the variable', () => {
    for (const bad of ['x', '-1', '65536', '90.5']) expect(() => resolveConfig({}, { RATELIMIT_METRICS_PORT: bad })).toThrow(/RATELIMIT_METRICS_PORT/);
    expect(() => resolveConfig({}, { RATELIMIT_METRICS_PORT: '8081' })).toThrow(/RATELIMIT_METRICS_PORT must differ from the main port/);
    expect(resolveConfig({ port: '9000' }, { RATELIMIT_METRICS_PORT: '8081' }).metricsPort).toBe(8081);
  });
});
