import { userInfo, hostname } from 'node:os';

/** Who a reset is recorded as: RATELIMIT_OPERATOR, else user@host. */
export function operatorName(env: Readonly<Record<string, string | undefined>>): string {
  if (env.RATELIMIT_OPERATOR?.trim()) return env.RATELIMIT_OPERATOR.trim().slice(0, 200);
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (some containers): keep "unknown"
  }
  return `${user}@${hostname()}`;
}
