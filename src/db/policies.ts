// The fleet's one policy, stored in PostgreSQL: every `policy apply` is a new version (the YAML
// as given, who, when, why), audited and announced; the highest version is the active one.
// Daemons notice a new version through `rate_limit_changes` (polled) and NOTIFY (faster).
import type { Pool, PoolClient } from './pool.js';
import { announceChange, writeAudit } from './changes.js';
import { withTransaction } from './transaction.js';
import { RateLimitError } from '../core/errors.js';
import { parsePolicyFile } from '../core/policy/file.js';
import type { Policy } from '../core/policy/types.js';

export interface StoredPolicy {
  version: number;
  yaml: string;
  appliedBy: string;
  appliedAt: Date;
  reason: string | null;
}

interface PolicyRowSql {
  version: number;
  yaml: string;
  applied_by: string;
  applied_at: Date;
  reason: string | null;
}

function toStored(r: PolicyRowSql): StoredPolicy {
  return { version: r.version, yaml: r.yaml, appliedBy: r.applied_by, appliedAt: r.applied_at, reason: r.reason };
}

/** The active policy, or null while none has been applied (the RATE_LIMIT_* default rules). */
export async function readActivePolicy(pool: Pool | PoolClient): Promise<StoredPolicy | null> {
  const { rows } = await pool.query<PolicyRowSql>(
    'SELECT version, yaml, applied_by, applied_at, reason FROM rate_limit_policies ORDER BY version DESC LIMIT 1',
  );
  return rows[0] ? toStored(rows[0]) : null;
}

export interface ApplyOutcome {
  applied: StoredPolicy;
  previous: StoredPolicy | null;
}

/**
 * Stores `yaml` (already validated by the caller) as the new active policy, audits and
 * announces it. Serialised by a transaction-scoped advisory lock so two operators applying at
 * once get consecutive versions and each sees the other's as its "previous".
 */
export async function applyPolicy(pool: Pool, p: { yaml: string; by: string; reason: string | null }): Promise<ApplyOutcome> {
  return withTransaction(pool, async (client) => {
    await client.query("SELECT pg_advisory_xact_lock(hashtext('ratelimit_policy_apply'))");
    const previous = await readActivePolicy(client);
    const { rows } = await client.query<PolicyRowSql>(
      `INSERT INTO rate_limit_policies (yaml, applied_by, reason) VALUES ($1, $2, $3)
       RETURNING version, yaml, applied_by, applied_at, reason`,
      [p.yaml, p.by, p.reason],
    );
    const applied = toStored(rows[0]!);
    await writeAudit(client, {
      actor: p.by,
      action: 'policy_apply',
      target: `policy:${applied.version}`,
      detail: { version: applied.version, previousVersion: previous?.version ?? null, reason: p.reason },
    });
    await announceChange(client, 'policy');
    return { applied, previous };
  });
}

export interface EffectivePolicy {
  policy: Policy;
  /** 0 while no policy has been applied (the RATE_LIMIT_* default). */
  version: number;
  source: 'database' | 'default';
  stored: StoredPolicy | null;
  /** What this release changed in a stored policy to enforce it (a prefix range raised to 1,000 numbers). */
  adjustments: string[];
}

/**
 * The policy every daemon and admin command must use: the database's active one, else the
 * default built from RATE_LIMIT_*. A stored policy that no longer parses (written by a newer
 * release, say) is an error, never a silent fall back to the default.
 */
export async function readEffectivePolicy(pool: Pool, fallback: Policy): Promise<EffectivePolicy> {
  const stored = await readActivePolicy(pool);
  if (!stored) return { policy: fallback, version: 0, source: 'default', stored: null, adjustments: [] };
  const adjustments: string[] = [];
  return { policy: parseStoredPolicy(stored, adjustments), version: stored.version, source: 'database', stored, adjustments };
}

/**
 * A stored policy as this release enforces it. Stored by an older release, it may have a prefix
 * range narrower than 1,000 numbers: enforced at the floor instead, said in `adjustments`.
 */
export function parseStoredPolicy(stored: StoredPolicy, adjustments: string[] = []): Policy {
  const parsed = parsePolicyFile(stored.yaml, { stored: true });
  if (!parsed.ok) {
    const first = parsed.problems[0]!;
    throw new RateLimitError(
      'database_error',
      `the active policy (version ${stored.version}, applied by ${stored.appliedBy}) does not parse with this release ` +
        `(line ${first.line}: ${first.message}); upgrade ratelimit, or apply a policy this release understands`,
    );
  }
  for (const a of parsed.adjustments) adjustments.push(`policy version ${stored.version}: ${a}`);
  return parsed.policy;
}
