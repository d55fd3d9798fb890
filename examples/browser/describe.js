// Turns a check's decision into the line the user reads. Separate from app.js so the wording
// rules sit in one place: counts from limit/used/remaining, "next in …" from resetTime (or,
// for a denial by a rule over many numbers, which browsers see without counts, retryAfterMs).

const REASONS = {
  phone_rate_limit_exceeded: 'calls used',
  prefix_rate_limit_exceeded: 'too many calls to numbers in this range',
  country_rate_limit_exceeded: 'too many calls to this country',
  global_rate_limit_exceeded: 'the service is at its overall call limit',
  ip_rate_limit_exceeded: 'too many calls from your address',
  number_blocked: 'this number is blocked',
  destination_blocked: 'calls to this destination are not allowed',
};

/** "43 min", "2 h 5 min", "12 s": the wait until `resetTime`, rounded up. */
export function formatWait(ms) {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest === 0 ? `${hours} h` : `${hours} h ${rest} min`;
}

/** `{ kind, text }`: kind is allowed, limited or unavailable (the page styles by it). */
export function describeDecision(d, nowMs) {
  if (d.source === 'unavailable') {
    return { kind: 'unavailable', text: 'The rate limiter cannot be reached right now, so this number was not checked. You can still try to call.' };
  }
  const allowed = d.type === 'rate_limit_status' && d.allowed;
  const counts = typeof d.used === 'number' && d.limit > 0 ? `${d.used} of ${d.limit} calls used` : undefined;
  const fallback = d.source === 'memory' ? ' (limiter running on its fallback)' : '';
  if (allowed) {
    const left = `${d.remaining} left`;
    return { kind: 'allowed', text: `${counts ? `${counts}, ${left}` : 'Can be called now'}${fallback}` };
  }
  // A range, country or global denial tells a browser no instant, only the wait (in minutes).
  const waitMs = d.retryAfterMs === null ? null : typeof d.resetTime === 'number' ? d.resetTime - nowMs : d.retryAfterMs;
  const next = waitMs === null ? ' until further notice' : waitMs > 0 ? `, next in ${formatWait(waitMs)}` : ', next any moment now';
  const why = d.reason === 'phone_rate_limit_exceeded' || d.reason === undefined ? (counts ?? 'limit reached') : (REASONS[d.reason] ?? d.reason);
  const text = `${why}${next}${fallback}`;
  return { kind: 'limited', text: text[0].toUpperCase() + text.slice(1) };
}
