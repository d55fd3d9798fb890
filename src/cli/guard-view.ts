// What `top`, `stats` and `list` show of the guard that learns from outcomes (issue #19):
// conversion by country over the last hour and day, the ranges closest to their unconverted and
// sweep (distinct numbers) limits, the automatic blocks in force with their level and end, and
// whether conversion rules are idle for lack of outcomes. Numbers are only ever masked, ranges
// shown as their key with the digits they leave out as dots (`+4477009•••`).
import type { Pool } from '../db/pool.js';
import { readAggregateUsage, type AggregateRuleRef } from '../db/stats.js';
import { lastOutcomeRecordedMs, readAutoBlocks, readConversionByCountry, type AutoBlocks, type CountryConversionRow } from '../db/guard-stats.js';
import { CONVERSION_IDLE_TEXT, pctText, type CountryConversion, type GuardBlock, type GuardRange, type GuardView } from './guard-text.js';
import { CONVERSION_ENGAGED_WITHIN_MS, GROUP_DENY_REASON, type LimitRule, type Policy } from '../core/policy/types.js';

export const CONVERSION_SHORT_WINDOW_MS = 3_600_000;
export const CONVERSION_LONG_WINDOW_MS = 24 * 3_600_000;
// The day's totals scan a day of outcomes: a live `top` re-reads the part before the last hour this
// often, and the last hour on every frame.
const LONG_WINDOW_REFRESH_MS = 60_000;
const MASK = '•';

export { CONVERSION_IDLE_TEXT, pctText, type CountryConversion, type GuardBlock, type GuardRange, type GuardView };

/** Every conversion rule (prefix, country, baseline) of a policy. */
export function conversionRules(policy: Policy): LimitRule[] {
  const c = policy.conversion;
  if (!c) return [];
  return [...(c.prefix?.rules ?? []), ...(c.country?.rules ?? []), ...(c.country?.baseline ? [c.country.baseline.rule] : [])];
}

/** The range rules whose counters can block (conversion.prefix, sweep). */
export function rangeRules(policy: Policy): LimitRule[] {
  return [...(policy.conversion?.prefix?.rules ?? []), ...(policy.sweep?.rules ?? [])];
}

/** How many trailing digits a range rule's key leaves out (for its dots). */
function digitsOf(policy: Policy, ruleId: string): number {
  const d = ruleId.startsWith('sweep:') ? policy.sweep?.digits : ruleId.startsWith('conversion:prefix:') ? policy.conversion?.prefix?.digits : undefined;
  return Math.max(3, d ?? 3);
}

/** `+4477009` -> `+4477009•••`, with as many dots as the rule's range leaves out. */
export function rangeLabel(policy: Policy, ruleId: string, key: string): string {
  return key + MASK.repeat(digitsOf(policy, ruleId));
}

export function reasonOfRule(ruleId: string): string {
  if (ruleId.startsWith('sweep:')) return GROUP_DENY_REASON.sweep;
  if (ruleId.startsWith('conversion:')) return GROUP_DENY_REASON.conversion;
  return 'number_blocked';
}

/** Conversion rules count nothing unless an outcome was recorded within CONVERSION_ENGAGED_WITHIN_MS. */
export async function readConversionIdle(
  pool: Pool,
  policy: Policy,
): Promise<{ conversionRules: boolean; conversionIdle: boolean; lastOutcomeAt: number | null }> {
  const has = conversionRules(policy).length > 0;
  const last = await lastOutcomeRecordedMs(pool, CONVERSION_ENGAGED_WITHIN_MS);
  return { conversionRules: has, conversionIdle: has && last === null, lastOutcomeAt: last };
}

function rate(converted: number, outcomes: number): number | null {
  return outcomes === 0 ? null : converted / outcomes;
}

/** The automatic blocks in force as the operator sees them (ranges labelled for the active policy). */
export function guardBlocksOf(policy: Policy, blocks: AutoBlocks & { numbersTotal: number }): Pick<GuardView, 'blocks' | 'blocksTotal'> {
  const rangeIds = new Set(rangeRules(policy).map((r) => r.id));
  const ranges = blocks.ranges
    // Only blocks of rules the active policy has: a counter of a rule no longer in it denies nothing.
    .filter((b) => rangeIds.has(b.ruleId))
    .map((b): GuardBlock => ({
      targetType: 'prefix',
      target: rangeLabel(policy, b.ruleId, b.key),
      hash: null,
      rule: b.ruleId,
      reason: reasonOfRule(b.ruleId),
      level: b.level,
      until: b.untilMs,
    }));
  const numbers = blocks.numbers.map((b): GuardBlock => ({
    targetType: 'number',
    target: b.masked ?? '(not stored)',
    hash: b.hash,
    rule: 'number:block_after',
    reason: 'number_blocked',
    level: b.level,
    until: b.untilMs,
  }));
  return {
    blocks: [...ranges, ...numbers].sort((a, b) => b.until - a.until || a.target.localeCompare(b.target)),
    blocksTotal: { ranges: ranges.length, numbers: blocks.numbersTotal },
  };
}

/** `list`: the automatic blocks alone. */
export async function readGuardBlocks(pool: Pool, policy: Policy): Promise<Pick<GuardView, 'blocks' | 'blocksTotal'>> {
  return guardBlocksOf(policy, await readAutoBlocks(pool));
}

/** Reads the guard's view; a live `top` keeps one reader, which re-reads the day's totals once a minute. */
export class GuardReader {
  private day: { atMs: number; answeredAtLeastMs: number; rows: CountryConversionRow[] } | undefined;

  constructor(private readonly keysPerRule = 10) {}

  async read(pool: Pool, policy: Policy): Promise<GuardView> {
    const answeredAtLeastMs = policy.conversion?.answeredAtLeastMs ?? 0;
    const fresh =
      this.day && this.day.answeredAtLeastMs === answeredAtLeastMs && performance.now() - this.day.atMs < LONG_WINDOW_REFRESH_MS ? this.day.rows : undefined;
    const ranges = rangeRules(policy);
    const countryRules = policy.conversion?.country?.rules ?? [];
    const refs: AggregateRuleRef[] = [...ranges, ...countryRules].map((r) => ({ id: r.id, limit: r.limit, windowMs: r.windowMs }));
    const [idle, hour, day, usage, blocks] = await Promise.all([
      readConversionIdle(pool, policy),
      readConversionByCountry(pool, CONVERSION_SHORT_WINDOW_MS, answeredAtLeastMs),
      // The day before the last hour: the day is that plus the hour read fresh.
      fresh ?? readConversionByCountry(pool, CONVERSION_LONG_WINDOW_MS, answeredAtLeastMs, CONVERSION_SHORT_WINDOW_MS),
      refs.length > 0 ? readAggregateUsage(pool, refs, this.keysPerRule) : Promise.resolve({ rows: [] }),
      readAutoBlocks(pool),
    ]);
    if (!fresh) this.day = { atMs: performance.now(), answeredAtLeastMs, rows: day };
    const byId = new Map([...ranges, ...countryRules].map((r) => [r.id, r]));
    const rangeIds = new Set(ranges.map((r) => r.id));

    const { blocks: guardBlocks, blocksTotal } = guardBlocksOf(policy, blocks);
    const blockOf = new Map(blocks.ranges.map((b) => [`${b.ruleId}\u0000${b.key}`, b]));

    const guardRanges: GuardRange[] = [];
    const countryUsage = new Map<string, { ruleId: string; used: number; limit: number }>();
    for (const row of usage.rows) {
      const rule = byId.get(row.ruleId);
      if (!rule) continue;
      if (rangeIds.has(rule.id)) {
        const b = blockOf.get(`${row.ruleId}\u0000${row.key}`);
        guardRanges.push({
          ruleId: rule.id,
          kind: rule.group === 'sweep' ? 'distinct' : 'unconverted',
          range: rangeLabel(policy, rule.id, row.key),
          used: row.used,
          limit: rule.limit,
          shadow: rule.shadow,
          blocked: b ? { level: b.level, until: b.untilMs } : null,
        });
      } else {
        const prev = countryUsage.get(row.key);
        if (!prev || row.used / rule.limit > prev.used / prev.limit) countryUsage.set(row.key, { ruleId: rule.id, used: row.used, limit: rule.limit });
      }
    }
    guardRanges.sort((a, b) => b.used / b.limit - a.used / a.limit || a.ruleId.localeCompare(b.ruleId) || a.range.localeCompare(b.range));

    const regions = new Set([...hour.map((r) => r.region), ...day.map((r) => r.region), ...countryUsage.keys()]);
    const hourOf = new Map(hour.map((r) => [r.region, r]));
    const dayOf = new Map(day.map((r) => [r.region, { ...r }]));
    for (const h of hour) {
      const d = dayOf.get(h.region);
      if (d) {
        d.outcomes += h.outcomes;
        d.converted += h.converted;
      } else dayOf.set(h.region, { ...h });
    }
    const countries = [...regions].map((region): CountryConversion => {
      const h = hourOf.get(region);
      const d = dayOf.get(region);
      return {
        region,
        outcomes1h: h?.outcomes ?? 0,
        converted1h: h?.converted ?? 0,
        rate1h: rate(h?.converted ?? 0, h?.outcomes ?? 0),
        outcomes24h: d?.outcomes ?? 0,
        converted24h: d?.converted ?? 0,
        rate24h: rate(d?.converted ?? 0, d?.outcomes ?? 0),
        unconverted: countryUsage.get(region) ?? null,
      };
    });
    // The country closest to its unconverted limit first, then the lowest conversion with outcomes, then the busiest.
    const ratioOf = (c: CountryConversion) => (c.unconverted ? c.unconverted.used / c.unconverted.limit : -1);
    countries.sort(
      (a, b) =>
        ratioOf(b) - ratioOf(a) ||
        (a.rate1h ?? a.rate24h ?? 2) - (b.rate1h ?? b.rate24h ?? 2) ||
        b.outcomes24h - a.outcomes24h ||
        a.region.localeCompare(b.region),
    );
    return {
      ...idle,
      countries,
      ranges: guardRanges,
      blocks: guardBlocks,
      blocksTotal,
    };
  }
}
