// Decision metrics are gathered per label set (Tally, DecisionCounts in src/daemon/metrics.ts)
// and folded into prom-client's counters when read: what a scrape shows must be what counting
// each decision with inc() showed, read after read.
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/daemon/metrics.js';

async function values(m: ReturnType<typeof createMetrics>, name: string) {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name)!;
  return metric.values.map((v) => ({ labels: v.labels, value: v.value })).sort((a, b) => JSON.stringify(a.labels).localeCompare(JSON.stringify(b.labels)));
}

describe('decision metrics', () => {
  it('show every count at each read, cumulatively, one series per label set', async () => {
    const m = createMetrics();
    const count = (kind: 'check' | 'consume', result: 'allowed' | 'denied', reason: string, rule: string, source: 'database' | 'cache') =>
      m.decisionCounts.slot(kind, result, reason, rule, source).value++;
    count('consume', 'allowed', '', '', 'database');
    count('consume', 'allowed', '', '', 'database');
    count('consume', 'denied', 'phone_rate_limit_exceeded', 'number:1h', 'cache');
    count('check', 'denied', 'phone_rate_limit_exceeded', 'number:1h', 'cache');
    expect(await values(m, 'ratelimit_decisions_total')).toEqual([
      { labels: { kind: 'check', reason: 'phone_rate_limit_exceeded', result: 'denied', rule: 'number:1h', source: 'cache' }, value: 1 },
      { labels: { kind: 'consume', reason: '', result: 'allowed', rule: '', source: 'database' }, value: 2 },
      { labels: { kind: 'consume', reason: 'phone_rate_limit_exceeded', result: 'denied', rule: 'number:1h', source: 'cache' }, value: 1 },
    ]);
    count('consume', 'allowed', '', '', 'database');
    const again = await values(m, 'ratelimit_decisions_total');
    expect(again.find((v) => v.labels.result === 'allowed')!.value).toBe(3);
    expect(again.find((v) => v.labels.kind === 'check')!.value).toBe(1);
  });

  it('show a series counted with 0 (a country priced at nothing), as inc(labels, 0) did', async () => {
    const m = createMetrics();
    (m.spendTally.get('US') ?? m.spendTally.open('US', { country: 'US' })).value += 0;
    (m.countryAllowed.get('US') ?? m.countryAllowed.open('US', { country: 'US', result: 'allowed' })).value++;
    (m.countryDenied.get('US') ?? m.countryDenied.open('US', { country: 'US', result: 'denied' })).value += 2;
    expect(await values(m, 'ratelimit_spend_total')).toEqual([{ labels: { country: 'US' }, value: 0 }]);
    expect(await values(m, 'ratelimit_country_consumes_total')).toEqual([
      { labels: { country: 'US', result: 'allowed' }, value: 1 },
      { labels: { country: 'US', result: 'denied' }, value: 2 },
    ]);
  });
});
