// What a call or an SMS costs, per destination country: so `top`, `stats` and the metrics can say
// what traffic (and an attack) costs. From RATELIMIT_PRICES, else a flat default that is only an
// order of magnitude: real prices vary by provider, country and number type by 100x and more.
//
// RATELIMIT_PRICES: comma-separated `KEY=VALUE`: `unit=sms|call` (what one consume is: an SMS,
// or a call attempt), `currency=USD` (a label), `default=<price>` (every country not listed), and
// `<ISO country>=<price>`, e.g. `unit=sms,currency=USD,default=0.05,GB=0.04,NG=0.30`. Number types
// are not priced apart: the stored rows keep a number's country, not its type, and premium-rate
// and shared-cost numbers are blocked by default (docs/choosing-limits.md).

export type PriceUnit = 'sms' | 'call';

export interface PriceTable {
  unit: PriceUnit;
  currency: string;
  /** Price of one consume to a country not in `countries`. */
  defaultPrice: number;
  countries: Record<string, number>;
  /** true: the built-in flat estimate, said wherever a spend is shown. */
  isDefault: boolean;
}

/** Order-of-magnitude averages for an A2P SMS and a short mobile call attempt (USD). */
export const DEFAULT_PRICE_PER_CONSUME: Record<PriceUnit, number> = { sms: 0.05, call: 0.1 };

export const DEFAULT_PRICES: PriceTable = { unit: 'sms', currency: 'USD', defaultPrice: DEFAULT_PRICE_PER_CONSUME.sms, countries: {}, isDefault: true };

const MAX_PRICE = 1_000;

/** Parses RATELIMIT_PRICES; every problem is pushed to `problems` (config reports them at once). */
export function parsePrices(text: string | undefined, problems: string[]): PriceTable {
  if (text === undefined || text.trim() === '') return DEFAULT_PRICES;
  let unit: PriceUnit = 'sms';
  let currency = 'USD';
  let defaultPrice: number | undefined;
  const countries: Record<string, number> = {};
  const price = (k: string, v: string): number | undefined => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > MAX_PRICE) {
      problems.push(`RATELIMIT_PRICES: ${k} must be a price from 0 to ${MAX_PRICE}, got "${v}"`);
      return undefined;
    }
    return n;
  };
  for (const part of text.split(',')) {
    const [rawKey, ...rest] = part.split('=');
    const key = (rawKey ?? '').trim();
    const value = rest.join('=').trim();
    if (key === '' && value === '') continue;
    if (key === 'unit') {
      if (value === 'sms' || value === 'call') unit = value;
      else problems.push(`RATELIMIT_PRICES: unit must be sms or call, got "${value}"`);
    } else if (key === 'currency') {
      if (/^[A-Za-z$€£¥]{1,5}$/.test(value)) currency = value;
      else problems.push(`RATELIMIT_PRICES: currency must be a short label like USD, got "${value}"`);
    } else if (key === 'default') defaultPrice = price(key, value);
    else if (/^[A-Z]{2}$/.test(key)) {
      const p = price(key, value);
      if (p !== undefined) countries[key] = p;
    } else problems.push(`RATELIMIT_PRICES: "${part.trim()}" is not unit=, currency=, default= or an ISO country (GB=0.04)`);
  }
  return { unit, currency, defaultPrice: defaultPrice ?? DEFAULT_PRICE_PER_CONSUME[unit], countries, isDefault: false };
}

export function priceOf(table: PriceTable, country: string): number {
  return table.countries[country] ?? table.defaultPrice;
}

/** `$1.23`, `USD 1.23`: two decimals, or three below 0.1 (per-consume prices). */
export function formatMoney(table: Pick<PriceTable, 'currency'>, amount: number): string {
  const sign = table.currency === 'USD' ? '$' : table.currency === 'EUR' ? '€' : table.currency === 'GBP' ? '£' : `${table.currency} `;
  if (amount >= 10_000) return `${sign}${Math.round(amount / 1000)}k`;
  return `${sign}${amount >= 0.1 || amount === 0 ? amount.toFixed(2) : amount.toFixed(3)}`;
}
