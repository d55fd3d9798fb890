// `ratelimit status` for people: the verdict first (allowed now? which rule, why, until when),
// then one row per rule that applies, then the number's list entry, block_after and
// destination state. Masked number only; the hash as a short handle.
import { formatDurationMs } from '../core/duration.js';
import { hashPrefix } from '../core/phone.js';
import type { StatusReport } from './status-report.js';
import { isoTime, keyValueTable, table, when } from './format.js';
import { CONVERSION_IDLE_TEXT } from './guard-view.js';

function verdict(r: StatusReport): string {
  if (r.allowed) return r.list?.kind === 'allow' ? 'yes (allow list: exempt from every rule)' : 'yes';
  return `no: ${r.rule} (${r.reason})`;
}

function rulesTable(r: StatusReport): string {
  const t = table(['rule', 'counts over', 'used', 'remaining', 'resets', 'now']);
  for (const x of r.rules) {
    const resets = x.used === 0 ? '—' : when(x.resetTime, r.now);
    const state = x.allows ? 'allows' : x.shadow ? 'would deny (shadow)' : 'denies';
    const over = x.key === null ? 'this number' : x.key;
    t.push([`${x.id}${x.shadow ? ' (shadow)' : ''}`, over, `${x.used} of ${x.limit} per ${formatDurationMs(x.windowMs)}`, String(x.remaining), resets, state]);
  }
  return t.toString();
}

function outcomeText(o: StatusReport['outcomes'][number], now: number): string {
  const lasted = o.durationMs !== null && o.outcome === 'answered' ? ` ${formatDurationMs(o.durationMs)}` : '';
  return `${o.outcome}${lasted} (${o.source}, call ${when(o.decidedAtMs, now)})`;
}

export function printStatus(r: StatusReport): string {
  const rows: Array<[string, string]> = [
    ['number', `${r.phoneNumber}${r.region ? ` (${r.region})` : ''}${r.numberType ? `, ${r.numberType.replace(/_/g, ' ')}` : ''}`],
    ['hash', `${hashPrefix(r.hash)}…`],
    ['policy', r.policy.source === 'database' ? `version ${r.policy.version}` : 'default from RATE_LIMIT_* (no policy applied)'],
  ];
  if (r.limit !== null && r.windowMs !== null) {
    rows.push(['used', `${r.used} of ${r.limit} per ${formatDurationMs(r.windowMs)}`], ['remaining', String(r.remaining)]);
  }
  rows.push(['allowed now?', verdict(r)]);
  rows.push([
    'next call',
    r.allowed ? 'allowed now' : `denied, allowed ${r.resetTime === null ? 'only once unlisted or the policy changes' : when(r.resetTime, r.now)}`,
  ]);
  if (r.allowed && r.used && r.resetTime !== null) rows.push(['window frees', when(r.resetTime, r.now)]);
  if (r.shadow.length > 0) rows.push(['shadow', `would deny: ${r.shadow.join(', ')}`]);
  if (r.list) {
    const e = r.list;
    const target = e.targetType === 'prefix' ? `prefix ${e.target}` : 'this number';
    const until = e.expiresAt === null ? 'until unlisted' : `until ${when(Date.parse(e.expiresAt), r.now)}`;
    rows.push(['list', `${e.kind} (${target}) ${until}, by ${e.createdBy} at ${isoTime(Date.parse(e.createdAt))}${e.reason ? `: ${e.reason}` : ''}`]);
  } else {
    rows.push(['list', 'not listed']);
  }
  if (r.blockAfter) {
    const b = r.blockAfter;
    const state = r.blockedUntil ? `blocked until ${when(r.blockedUntil, r.now)}` : 'not blocked';
    rows.push(['block_after', `${b.recentDenials} of ${b.denials} denials within ${formatDurationMs(b.withinMs)} (blocks for ${blockLength(b)}); ${state}`]);
  } else if (r.blockedUntil) {
    rows.push(['block_after', `blocked until ${isoTime(r.blockedUntil)} (set under an earlier policy)`]);
  }
  const dest = r.destination;
  rows.push([
    'destination',
    dest.deniedBy
      ? `denied by ${dest.deniedBy} (${dest.region}, ${dest.numberType ?? 'type unknown'})`
      : `allowed (${dest.region}, ${dest.numberType ?? 'type unknown'})`,
  ]);
  rows.push(['denied', `${r.deniedInWindow} this window, ${r.deniedTotal} in all`]);
  rows.push(['last call', r.lastCallAt ? when(r.lastCallAt, r.now) : r.tracked ? '—' : 'never (not tracked)']);
  if (r.lastReset) {
    rows.push(['last reset', `${isoTime(Date.parse(r.lastReset.at))} by ${r.lastReset.by}${r.lastReset.reason ? `: ${r.lastReset.reason}` : ''}`]);
  }
  rows.push(['outcomes', r.outcomes.length === 0 ? 'none reported' : r.outcomes.map((o) => outcomeText(o, r.now)).join('; ')]);
  if (r.conversionIdle) rows.push(['conversion', CONVERSION_IDLE_TEXT]);
  rows.push([
    'automatic block',
    r.autoBlocks.length === 0
      ? 'none'
      : r.autoBlocks
          .map((b) => `${b.targetType === 'prefix' ? `range ${b.target}` : 'this number'} by ${b.rule}, level ${b.level || '—'}, until ${when(b.until, r.now)}`)
          .join('; ') + ' (ratelimit unlist lifts it)',
  ]);
  const out = [keyValueTable(rows)];
  if (r.rules.length > 0) out.push(rulesTable(r));
  return out.join('\n');
}

/** block_after's `for`, or with a `blocks` group its steps, cut to `for` when given. */
function blockLength(b: NonNullable<StatusReport['blockAfter']>): string {
  const cap = b.forMs === null ? null : formatDurationMs(b.forMs);
  if (!b.escalate) return cap ?? 'no length given';
  return `${b.escalate.join(', then ')}${cap ? `, each at most ${cap}` : ''}`;
}
