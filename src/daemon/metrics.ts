import client from 'prom-client';
import type { GuardReadings } from '../db/guard-stats.js';

/** Runs one database statement of `size` requests, recording its latency and batch size under `op`. */
export type TimedQuery = <T>(op: string, size: number, fn: () => Promise<T>) => Promise<T>;

export type DecisionKind = 'check' | 'consume';
export type DecisionResult = 'allowed' | 'denied';
/**
 * `cache`: denied from this instance's memory of a number known to be denied by its own rules.
 * `local`: decided by this instance before the database (block list, destinations, ip rules).
 */
export type MetricSource = 'database' | 'memory' | 'cache' | 'local';

const EVENT_LOOP_SAMPLE_MS = 100;

/**
 * The guard's gauges (automatic blocks, conversion and sweep usage, idle conversion rules) are the
 * database's state, read when scraped: at most once per this, however many scrapers there are.
 */
export const GUARD_READ_INTERVAL_MS = 15_000;
// A scrape must not wait on a slow or lost database: past this it gets the last reading.
const GUARD_READ_WAIT_MS = 1_000;

/** One label set's count, gathered by a Tally until its counter is read. */
export interface TallySlot {
  value: number;
}

/**
 * Counts for a labelled counter that moves at every decision: gathered per label set under the
 * caller's own key (a string it builds cheaply from values it already has) and folded into the
 * prom-client counter when that is read (its collect()). A decision then pays one Map lookup
 * instead of prom-client's label hashing (sorting and joining the label names) and validation.
 */
export class Tally<L extends string> {
  private readonly slots = new Map<string, { labels: Partial<Record<L, string>>; slot: TallySlot; shown: boolean }>();

  /** The slot of `key`, or undefined the first time: then open() it with its labels. */
  get(key: string): TallySlot | undefined {
    return this.slots.get(key)?.slot;
  }

  open(key: string, labels: Partial<Record<L, string>>): TallySlot {
    const slot = { value: 0 };
    this.slots.set(key, { labels, slot, shown: false });
    return slot;
  }

  flush(counter: client.Counter<L>): void {
    for (const entry of this.slots.values()) {
      // A label set counted with 0 (a free country's spend) still appears, as inc(labels, 0) made it.
      if (entry.slot.value === 0 && entry.shown) continue;
      counter.inc(entry.labels, entry.slot.value);
      entry.slot.value = 0;
      entry.shown = true;
    }
  }
}

const SOURCE_SLOT: Record<MetricSource, number> = { database: 0, memory: 1, cache: 2, local: 3 };

/**
 * ratelimit_decisions_total's counts, found without building a key: by rule id, then reason
 * (strings the policy and the protocol hold, whose hashes V8 keeps), then a slot for kind,
 * result and source. A key string built per decision cost a concatenation and a hash each time.
 */
export class DecisionCounts {
  private readonly tally = new Tally<'kind' | 'result' | 'reason' | 'rule' | 'source'>();
  private readonly byRule = new Map<string, Map<string, Array<TallySlot | undefined>>>();

  slot(kind: DecisionKind, result: DecisionResult, reason: string, rule: string, source: MetricSource): TallySlot {
    let byReason = this.byRule.get(rule);
    if (byReason === undefined) this.byRule.set(rule, (byReason = new Map()));
    let slots = byReason.get(reason);
    if (slots === undefined) byReason.set(reason, (slots = new Array<TallySlot | undefined>(16)));
    const i = (kind === 'consume' ? 8 : 0) + (result === 'allowed' ? 4 : 0) + SOURCE_SLOT[source];
    return (slots[i] ??= this.tally.open(`${i}\u0000${reason}\u0000${rule}`, { kind, result, reason, rule, source }));
  }

  flush(counter: client.Counter<'kind' | 'result' | 'reason' | 'rule' | 'source'>): void {
    this.tally.flush(counter);
  }
}

/** One registry per daemon, so two daemons in one process (tests) do not collide. */
export function createMetrics() {
  const registry = new client.Registry();
  // The event-loop lag histogram samples with a timer of this period: prom-client's default of
  // 10 ms woke an idle daemon 100 times a second, most of its idle CPU.
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  // Counted per decision through a Tally (decider.ts): folded in here when read.
  const decisionCounts = new DecisionCounts();
  const countryAllowed = new Tally<'country' | 'result'>();
  const countryDenied = new Tally<'country' | 'result'>();
  const spendTally = new Tally<'country'>();
  const decisions = new client.Counter({
    name: 'ratelimit_decisions_total',
    help: 'Rate-limit decisions, by kind (check|consume), result, reason, rule and source (reason and rule empty when allowed)',
    labelNames: ['kind', 'result', 'reason', 'rule', 'source'] as const,
    registers: [registry],
    collect() {
      decisionCounts.flush(this);
    },
  });
  const shadowDenials = new client.Counter({
    name: 'ratelimit_shadow_denials_total',
    help: 'Consumes a shadow rule would have denied, by rule id',
    labelNames: ['rule'] as const,
    registers: [registry],
  });
  // Issue 20: a pump is all allowed calls, so only a country label shows it; never a number or a
  // range (unbounded, and narrower than a country). Country is libphonenumber's region or ZZ.
  const countryDecisions = new client.Counter({
    name: 'ratelimit_country_consumes_total',
    help: 'Consumes by destination country (ISO 3166, ZZ unknown) and result',
    labelNames: ['country', 'result'] as const,
    registers: [registry],
    collect() {
      countryAllowed.flush(this);
      countryDenied.flush(this);
    },
  });
  const spend = new client.Counter({
    name: 'ratelimit_spend_total',
    help: 'Estimated cost of allowed consumes by destination country, from RATELIMIT_PRICES (a flat default when unset)',
    labelNames: ['country'] as const,
    registers: [registry],
    collect() {
      spendTally.flush(this);
    },
  });
  const policyVersion = new client.Gauge({
    name: 'ratelimit_policy_version',
    help: 'Version of the policy in force (0: the default policy built from RATE_LIMIT_*)',
    registers: [registry],
  });
  const errors = new client.Counter({
    name: 'ratelimit_request_errors_total',
    help: 'Requests answered with an error, by code',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  const fallbackActive = new client.Gauge({
    name: 'ratelimit_fallback_active',
    help: '1 while the daemon answers from memory because the database is unreachable',
    registers: [registry],
  });
  const fallbackTransitions = new client.Counter({
    name: 'ratelimit_fallback_transitions_total',
    help: 'Switches between database and memory mode, by the state entered',
    labelNames: ['state'] as const,
    registers: [registry],
  });
  const pendingWrites = new client.Gauge({
    name: 'ratelimit_pending_writes',
    help: 'Decisions made from memory that are waiting to be written to the database',
    registers: [registry],
  });
  const unrecordedDenials = new client.Counter({
    name: 'ratelimit_denials_unrecorded_total',
    help: 'Denials not recorded because too many were already waiting for the database (an outage under a flood); allowed calls are never dropped this way',
    registers: [registry],
  });
  const ipTableFull = new client.Counter({
    name: 'ratelimit_ip_table_full_total',
    help: 'Consumes from a new client address that found the per-IP table full of live counts and counted in its shared overflow entry (a flood of distinct addresses)',
    registers: [registry],
  });
  const connections = new client.Gauge({
    name: 'ratelimit_websocket_connections',
    help: 'Open WebSocket connections',
    registers: [registry],
  });
  // p5 (#11): every open TCP connection (HTTP and WebSocket) and the cap they are held under.
  const tcpConnections = new client.Gauge({
    name: 'ratelimit_connections',
    help: 'Open TCP connections, HTTP and WebSocket',
    registers: [registry],
  });
  const connectionsMax = new client.Gauge({
    name: 'ratelimit_connections_max',
    help: 'The cap on open TCP connections (RATELIMIT_MAX_CONNECTIONS, else derived from the fd limit)',
    registers: [registry],
  });
  // Labels are the outcome and where it came from (ws, http, twilio): never a number, range or country.
  const outcomes = new client.Counter({
    name: 'ratelimit_outcomes_total',
    help: 'Outcomes recorded (each decision once), by outcome (verified|answered|unanswered|failed) and source (ws|http|twilio)',
    labelNames: ['outcome', 'source'] as const,
    registers: [registry],
  });
  // Issue #19's guard, read from the database when scraped (watchGuard): every daemon reports the
  // same values, so dashboards and alerts take max() over instances. Labels are rule ids, levels
  // and the target kind: never a number, a range or a country.
  let readGuard: (() => Promise<GuardReadings>) | undefined;
  let guardReadAtMs = -Infinity;
  let guardWait: Promise<void> | undefined;
  const autoBlocks = new client.Gauge({
    name: 'ratelimit_auto_blocks',
    help: 'Automatic blocks in force now (database-wide), by escalation level (1-based step of blocks.escalate; 0: block_after without a blocks group) and target (range|number)',
    labelNames: ['level', 'target'] as const,
    registers: [registry],
    collect: () => refreshGuard(),
  });
  const ruleUsage = new client.Gauge({
    name: 'ratelimit_rule_usage_ratio',
    help: 'Conversion (unconverted calls) and sweep (distinct numbers) rules: the highest used/limit over the rule’s keys (ranges, countries) in its window, database-wide',
    labelNames: ['rule'] as const,
    registers: [registry],
    collect: () => refreshGuard(),
  });
  const ruleKeysAtLimit = new client.Gauge({
    name: 'ratelimit_rule_keys_at_limit',
    help: 'Conversion and sweep rules: how many of the rule’s keys (ranges, countries) are at or over their limit now, database-wide',
    labelNames: ['rule'] as const,
    registers: [registry],
    collect: () => refreshGuard(),
  });
  const conversionIdle = new client.Gauge({
    name: 'ratelimit_conversion_idle',
    help: '1 while the policy has conversion rules but no outcome was reported in the last 7 days (they count nothing); 0 otherwise',
    registers: [registry],
    collect: () => refreshGuard(),
  });
  /** Every guard gauge's collect waits on one reading, and all of them together at most GUARD_READ_WAIT_MS. */
  function refreshGuard(): Promise<void> {
    if (guardWait) return guardWait;
    if (!readGuard || performance.now() - guardReadAtMs < GUARD_READ_INTERVAL_MS) return Promise.resolve();
    const reading = readGuard()
      .then((r) => {
        autoBlocks.reset();
        for (const b of r.autoBlocks) autoBlocks.set({ level: String(b.level), target: b.target }, b.count);
        // Both targets at level 1 always exist, so `== 0` and absent read alike in alerts.
        for (const target of ['range', 'number'])
          if (!r.autoBlocks.some((b) => b.target === target && b.level === 1)) autoBlocks.set({ level: '1', target }, 0);
        ruleUsage.reset();
        ruleKeysAtLimit.reset();
        for (const u of r.rules) {
          ruleUsage.set({ rule: u.ruleId }, u.maxRatio);
          ruleKeysAtLimit.set({ rule: u.ruleId }, u.atLimit);
        }
        conversionIdle.set(r.conversionIdle ? 1 : 0);
      })
      // The last reading stays: a scrape must succeed while the database is away.
      .catch(() => undefined)
      .finally(() => {
        guardReadAtMs = performance.now();
        guardWait = undefined;
      });
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => (timer = setTimeout(resolve, GUARD_READ_WAIT_MS)));
    guardWait = Promise.race([reading, waited]).finally(() => clearTimeout(timer));
    return guardWait;
  }
  const dbLatency = new client.Histogram({
    name: 'ratelimit_db_query_duration_seconds',
    help: 'Database round trips made by the decision path, by operation',
    labelNames: ['op'] as const,
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const batchSize = new client.Histogram({
    name: 'ratelimit_db_batch_size',
    help: 'Decisions per database statement (group commit)',
    labelNames: ['op'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    registers: [registry],
  });
  return {
    registry,
    decisions,
    countryDecisions,
    spend,
    decisionCounts,
    countryAllowed,
    countryDenied,
    spendTally,
    shadowDenials,
    outcomes,
    policyVersion,
    errors,
    fallbackActive,
    fallbackTransitions,
    pendingWrites,
    unrecordedDenials,
    ipTableFull,
    connections,
    tcpConnections,
    connectionsMax,
    dbLatency,
    batchSize,
    autoBlocks,
    ruleUsage,
    ruleKeysAtLimit,
    conversionIdle,
    /** Reads the guard's gauges from the database when scraped (the daemon passes its pool and policy). */
    watchGuard(read: () => Promise<GuardReadings>): void {
      readGuard = read;
      guardReadAtMs = -Infinity;
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
