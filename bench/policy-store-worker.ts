// One store-level run of the "full policy" scenario (bench/policy.ts) in its own process: our
// engine (group commit, one ratelimit_decide per batch, ip rules in memory) or
// rate-limiter-flexible's RateLimiterUnion of one RateLimiterPostgres per rule, both asked the
// same decisions (same numbers, same client addresses) on the same PostgreSQL.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Spool } from '../src/daemon/engine/spool.js';
import { pino } from 'pino';
import { RateLimiterPostgres, RateLimiterRes, RateLimiterUnion } from 'rate-limiter-flexible';
import { createPool } from '../src/db/pool.js';
import { parsePolicyFile } from '../src/core/policy/file.js';
import type { Policy } from '../src/core/policy/types.js';
import { fixedPolicy } from '../src/daemon/policy-source.js';
import { DecisionEngine, type PhoneSubject } from '../src/daemon/engine/engine.js';
import { IpRules } from '../src/daemon/ip-rules.js';
import { createMetrics } from '../src/daemon/metrics.js';
import { driveLanes, emit, workerArgs } from './lib/child.js';
import { clientIp, keySampler, phoneNumber, type KeyDistribution } from './lib/keys.js';

export type PolicyStoreSystem = 'ours' | 'union';

export interface PolicyStoreWorkerConfig {
  system: PolicyStoreSystem;
  dist: KeyDistribution;
  inflight: number;
  policyYaml: string;
  /** rate-limiter-flexible's limiters, one per rule of the policy (keyPrefix, points, seconds, what it keys on). */
  unionLimiters: ReadonlyArray<{ keyPrefix: string; points: number; durationS: number; on: UnionKeyPart }>;
  unionTable: string;
  poolSize: number;
  warmupMs: number;
  measureMs: number;
  url: string;
  keysFile: string;
}

/** Which part of the decision a Union limiter counts over (our rules' keys, spelled out). */
export type UnionKeyPart = 'hash' | 'prefix' | 'region' | 'global' | 'ip';

const cfg = workerArgs<PolicyStoreWorkerConfig>();
const stored = JSON.parse(readFileSync(cfg.keysFile, 'utf8')) as Array<Omit<PhoneSubject, 'e164' | 'type'>>;
const parsed = parsePolicyFile(cfg.policyYaml);
if (!parsed.ok) throw new Error(`bench policy does not parse: ${JSON.stringify(parsed.problems)}`);
const policy: Policy = parsed.policy;
// The keys file holds what the daemon derives from each number; the prefix needs the E.164 too.
const keys: PhoneSubject[] = stored.map((k, i) => ({ ...k, e164: phoneNumber(i), type: undefined }));
const nextKey = keySampler(cfg.dist);
let ipCounter = 0;
const pool = createPool({ url: cfg.url, max: cfg.poolSize, applicationName: `bench policy ${cfg.system}` });
await Promise.all(Array.from({ length: cfg.poolSize }, () => pool.connect())).then((cs) => cs.forEach((c) => c.release()));

let op: () => Promise<'allowed' | 'denied'>;
let close = async () => undefined as void;
if (cfg.system === 'ours') {
  // The daemon's Decider minus parsing and the wire: ip rules reserved in memory, then the engine.
  const spoolDir = mkdtempSync(path.join(tmpdir(), 'ratelimit-bench-spool-'));
  const spool = await Spool.open({
    dataDir: spoolDir,
    scope: { databaseUrl: cfg.url, phoneKey: 'bench' },
    instanceId: 'bench-policy',
    maxBytes: 64 << 20,
    logger: pino({ level: 'silent' }),
  });
  const engine = new DecisionEngine({
    pool,
    policies: fixedPolicy(policy),
    logger: pino({ level: 'silent' }),
    metrics: createMetrics(),
    denyCache: false,
    spool,
  });
  const ipRules = new IpRules();
  ipRules.update(policy.ip);
  op = async () => {
    const s = keys[nextKey()]!;
    const slot = ipRules.reserve(clientIp(ipCounter++), false);
    if (slot.denied) {
      engine.recordDenial(s);
      return 'denied';
    }
    const v = await engine.consume(s);
    if (!v.allowed) slot.refund();
    return v.allowed ? 'allowed' : 'denied';
  };
  close = () => engine.stop();
} else {
  // RateLimiterUnion hands every limiter the same key; each limiter here keys on its own part of
  // it (the number's hash, its range, its region, "*", the client address), as ours does.
  const PREFIX_DIGITS = policy.prefix?.digits ?? 3;
  const partIndex: Record<UnionKeyPart, number> = { hash: 0, prefix: 1, region: 2, global: 3, ip: 4 };
  class KeyedLimiter extends RateLimiterPostgres {
    constructor(
      opts: ConstructorParameters<typeof RateLimiterPostgres>[0],
      private readonly part: number,
    ) {
      super(opts);
    }
    override getKey(key: string | number): string {
      return `${this.keyPrefix}:${String(key).split('|')[this.part]}`;
    }
  }
  const union = new RateLimiterUnion(
    ...cfg.unionLimiters.map(
      (l) =>
        new KeyedLimiter(
          {
            storeClient: pool,
            storeType: 'pool',
            tableName: cfg.unionTable,
            tableCreated: true,
            clearExpiredByTimeout: false,
            keyPrefix: l.keyPrefix,
            points: l.points,
            duration: l.durationS,
          },
          partIndex[l.on],
        ),
    ),
  );
  op = async () => {
    const s = keys[nextKey()]!;
    try {
      await union.consume(`${s.hash}|${s.e164.slice(0, -PREFIX_DIGITS)}|${s.region ?? 'ZZ'}|*|${clientIp(ipCounter++)}`);
      return 'allowed';
    } catch (err) {
      // The Union rejects with { keyPrefix: RateLimiterRes } for the limiters that said no.
      if (err && typeof err === 'object' && Object.values(err).every((r) => r instanceof RateLimiterRes)) return 'denied';
      throw err;
    }
  };
}

const result = await driveLanes({ lanes: cfg.inflight, warmupMs: cfg.warmupMs, measureMs: cfg.measureMs, op });
await close();
await pool.end();
emit({ event: 'result', result });
