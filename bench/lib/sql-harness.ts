// What the one-off SQL timings (bench/sql-ab.ts, sql-decide.ts, sql-profile.ts, sql-single.ts)
// share: a request for bench number i under a policy, and admin statements on their own server.
import pg from 'pg';
import type { DecideRequest } from '../../src/db/decisions.js';
import { applicableCounters, CONVERSION_IDLE } from '../../src/core/policy/counters.js';
import type { Policy } from '../../src/core/policy/types.js';
import { phoneNumber } from './keys.js';

/**
 * A consume of bench number i (7 per 1,000-number range, bench/lib/keys.ts) with the counters
 * `policy` applies to it while conversion rules are idle. The hash only has to be unique per
 * number (`tag` keeps cases apart); these timings never see a key file.
 */
export function benchRequest(policy: Policy, i: number, tag = 'p'): DecideRequest {
  const e164 = phoneNumber(i);
  return {
    hash: `${tag}${i}:${e164}`,
    region: 'US',
    masked: e164.slice(0, 5) + '•••',
    allowlisted: false,
    counters: applicableCounters(policy, e164, 'US', { conversion: CONVERSION_IDLE, safe: false }),
  };
}

/** One statement on its own connection (CREATE DATABASE cannot run in a pool's transaction). */
export async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** The server's URL naming another database. */
export function databaseUrl(serverUrl: string, name: string): string {
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  return u.toString();
}
