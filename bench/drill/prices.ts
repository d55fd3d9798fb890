// The drill's price table: what one SMS and one minute of a voice call cost per destination
// country (USD). ILLUSTRATIVE figures: of the order the public per-message and per-minute list
// prices of the large CPaaS providers showed in 2025-2026 for A2P SMS and outbound calls to
// mobiles, rounded; not quotes from any provider (those vary by provider, route, volume and
// month, often by 2x). The drill's money figures are only as good as this table: edit it to
// your own invoices and rerun.

export type Channel = 'sms' | 'voice';

export interface CountryPrice {
  /** One SMS. */
  sms: number;
  /** One started minute of a call to a mobile (answered calls only: unanswered are not billed). */
  voicePerMinute: number;
}

export const CURRENCY = 'USD';

export const PRICES: Readonly<Record<string, CountryPrice>> = {
  US: { sms: 0.0083, voicePerMinute: 0.014 },
  CA: { sms: 0.0083, voicePerMinute: 0.014 },
  GB: { sms: 0.04, voicePerMinute: 0.035 },
  IE: { sms: 0.07, voicePerMinute: 0.05 },
  DE: { sms: 0.08, voicePerMinute: 0.05 },
  FR: { sms: 0.07, voicePerMinute: 0.04 },
  ES: { sms: 0.07, voicePerMinute: 0.04 },
  IT: { sms: 0.07, voicePerMinute: 0.04 },
  NL: { sms: 0.09, voicePerMinute: 0.05 },
  PL: { sms: 0.04, voicePerMinute: 0.03 },
  TR: { sms: 0.05, voicePerMinute: 0.1 },
  IN: { sms: 0.08, voicePerMinute: 0.04 },
  BR: { sms: 0.05, voicePerMinute: 0.06 },
  MX: { sms: 0.07, voicePerMinute: 0.04 },
  PH: { sms: 0.2, voicePerMinute: 0.2 },
  ID: { sms: 0.45, voicePerMinute: 0.2 },
  NG: { sms: 0.35, voicePerMinute: 0.2 },
  KE: { sms: 0.15, voicePerMinute: 0.1 },
  EG: { sms: 0.2, voicePerMinute: 0.15 },
  JP: { sms: 0.08, voicePerMinute: 0.1 },
  AU: { sms: 0.05, voicePerMinute: 0.05 },
  // The two high-cost destinations the drill's pumping runs aim at.
  UZ: { sms: 0.32, voicePerMinute: 0.25 },
  KG: { sms: 0.3, voicePerMinute: 0.3 },
};

/** Premium-rate numbers (the callee earns per minute): per minute, by country. */
export const PREMIUM_RATE_PER_MINUTE: Readonly<Record<string, number>> = { GB: 2.0, FR: 1.2 };

/** A country missing from PRICES (never in the drill's traffic; kept so a new country cannot cost 0). */
const FALLBACK: CountryPrice = { sms: 0.1, voicePerMinute: 0.1 };

/** What one allowed call or SMS cost: SMS per message; voice per started minute when answered. */
export function costOf(country: string, channel: Channel, answeredMs: number | undefined, premium = false): number {
  if (channel === 'sms') return (PRICES[country] ?? FALLBACK).sms;
  if (answeredMs === undefined || answeredMs <= 0) return 0;
  const minutes = Math.ceil(answeredMs / 60_000);
  const perMinute = premium ? (PREMIUM_RATE_PER_MINUTE[country] ?? 1) : (PRICES[country] ?? FALLBACK).voicePerMinute;
  return minutes * perMinute;
}
