import { describe, expect, it } from 'vitest';
import { applyPolicy, readEffectivePolicy } from '../../src/db/policies.js';
import { readChangeVersions } from '../../src/db/changes.js';
import { readListEntries, removeListEntry, setListEntry } from '../../src/db/lists.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { backdate, migratedTestDatabase } from '../helpers/fixture.js';

const db = migratedTestDatabase({ max: 8 });
const fallback = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 3_600_000 });

describe('stored policy', () => {
  it('is the RATE_LIMIT_* default until one is applied, then the highest version, audited and announced', async () => {
    const before = await readEffectivePolicy(db.pool, fallback);
    expect(before).toMatchObject({ version: 0, source: 'default' });
    expect(before.policy).toBe(fallback);
    const changes0 = await readChangeVersions(db.pool);

    const first = await applyPolicy(db.pool, { yaml: 'number:\n  limits: [{limit: 3, window: 1h}]\n', by: 'ops@a', reason: 'first' });
    const second = await applyPolicy(db.pool, { yaml: 'number:\n  limits: [{limit: 4, window: 2h}]\n', by: 'ops@b', reason: null });
    expect(second.previous?.version).toBe(first.applied.version);
    expect(second.applied.version).toBeGreaterThan(first.applied.version);

    const now = await readEffectivePolicy(db.pool, fallback);
    expect(now.source).toBe('database');
    expect(now.version).toBe(second.applied.version);
    expect(now.policy.number.map((r) => r.id)).toEqual(['number:2h']);
    expect((await readChangeVersions(db.pool)).policy).toBe(changes0.policy + 2);

    const audit = await db.pool.query<{ actor: string; action: string }>(
      "SELECT actor, action FROM rate_limit_audit WHERE action = 'policy_apply' ORDER BY id",
    );
    expect(audit.rows).toEqual([
      { actor: 'ops@a', action: 'policy_apply' },
      { actor: 'ops@b', action: 'policy_apply' },
    ]);
  });

  it('concurrent applies get distinct consecutive versions, each naming the other as previous at most once', async () => {
    const outs = await Promise.all(
      Array.from({ length: 6 }, (_, i) => applyPolicy(db.pool, { yaml: `global:\n  limits: [{limit: ${100 + i}, window: 1d}]\n`, by: `op${i}`, reason: null })),
    );
    const versions = outs.map((o) => o.applied.version).sort((a, b) => a - b);
    for (let i = 1; i < versions.length; i++) expect(versions[i]).toBe(versions[i - 1]! + 1);
    const previous = outs.map((o) => o.previous!.version).sort((a, b) => a - b);
    expect(new Set(previous).size).toBe(previous.length);
  });
});

describe('lists', () => {
  it('adds, replaces, expires and removes entries, auditing and announcing each change', async () => {
    const v0 = (await readChangeVersions(db.pool)).lists;
    await setListEntry(db.pool, {
      targetType: 'number',
      target: 'hash-1',
      kind: 'block',
      masked: '+1415•••••71',
      forMs: undefined,
      by: 'ops',
      reason: 'abuse',
    });
    await setListEntry(db.pool, { targetType: 'prefix', target: '+4470', kind: 'block', masked: '+4470', forMs: 60_000, by: 'ops', reason: null });
    await setListEntry(db.pool, { targetType: 'number', target: 'hash-2', kind: 'allow', masked: '+1415•••••72', forMs: 1, by: 'ops', reason: 'vip' });
    const replaced = await setListEntry(db.pool, {
      targetType: 'number',
      target: 'hash-1',
      kind: 'allow',
      masked: '+1415•••••71',
      forMs: undefined,
      by: 'ops2',
      reason: 'cleared',
    });
    expect(replaced.replaced?.kind).toBe('block');
    // 20 ms of database time pass for hash-2's entry (a test clock: no sleep).
    expect(await backdate(db.pool, 'rate_limit_lists', ['created_at', 'expires_at'], 20, "target = 'hash-2'")).toBe(1);

    const { entries } = await readListEntries(db.pool);
    // hash-2's entry expired after 1 ms.
    expect(entries.map((e) => `${e.kind}:${e.target}`).sort()).toEqual(['allow:hash-1', 'block:+4470']);
    expect(entries.find((e) => e.target === '+4470')!.expiresAt).toBeInstanceOf(Date);

    expect(await removeListEntry(db.pool, 'prefix', '+4470', 'ops', null)).toMatchObject({ kind: 'block' });
    expect(await removeListEntry(db.pool, 'prefix', '+4470', 'ops', null)).toBeNull();
    expect((await readChangeVersions(db.pool)).lists).toBe(v0 + 5);
    const audit = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM rate_limit_audit WHERE action LIKE 'list_%'");
    expect(audit.rows[0]!.n).toBe(5);
  });
});
