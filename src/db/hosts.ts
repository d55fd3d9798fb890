// Which of a URL's hosts new connections go to (src/core/database-url.ts splits the URL), and
// how a server that cannot take writes is recognised and named.

import pg from 'pg';
import { hostLabel, type DatabaseAddress } from '../core/database-url.js';

/** What a server said about itself: the facts that make it usable for writes or not. */
export interface ServerRole {
  inRecovery: boolean;
  readOnly: boolean;
}

export const ROLE_QUERY = "SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') = 'on' AS read_only";

export function isWritable(role: ServerRole, target: DatabaseAddress['target']): boolean {
  return target === 'primary' ? !role.inRecovery : !role.inRecovery && !role.readOnly;
}

/** A connection reached a server that cannot take writes: a standby, or a read-only primary. */
export class ReadOnlyTargetError extends Error {
  /** So isConnectionError treats it like a server that is not there (wait for a promotion). */
  readonly code = '25006';
  constructor(
    readonly role: ServerRole,
    where: string,
  ) {
    super(`${where} is ${describeRole(role)}`);
    this.name = 'ReadOnlyTargetError';
  }
}

export function describeRole(role: ServerRole): string {
  return role.inRecovery ? 'a standby (in recovery, read-only)' : 'read-only (default_transaction_read_only is on)';
}

/**
 * Keeps the index of the host new connections go to. select() asks every host at once (each
 * within `timeoutMs`) and keeps the first writable one in URL order; until a selection finds
 * one, the previous choice stays (its connections fail and the daemon answers from memory).
 */
export class HostSelector {
  private index = 0;
  private selecting: Promise<void> | undefined;

  constructor(
    readonly address: DatabaseAddress,
    private readonly timeoutMs: number,
  ) {}

  get url(): string {
    return this.address.urlFor(this.index);
  }

  get multiHost(): boolean {
    return this.address.hosts.length > 1;
  }

  /** Resolves once a selection ran (joining one in progress); throws when no host is writable. */
  select(): Promise<void> {
    if (!this.multiHost) return Promise.resolve();
    return (this.selecting ??= this.run().finally(() => (this.selecting = undefined)));
  }

  private async run(): Promise<void> {
    const results = await Promise.all(this.address.hosts.map((_, i) => this.ask(i)));
    const first = results.findIndex((r) => r.ok);
    if (first >= 0) {
      this.index = first;
      return;
    }
    const said = results.map((r, i) => `${hostLabel(this.address.hosts[i]!)}: ${r.ok ? 'writable' : r.why}`).join('; ');
    const anyAnswered = results.some((r) => r.role);
    const err = new Error(`no writable host among ${this.address.hosts.length} (${said})`);
    // Every host that answered is a standby: treat it like an outage (a promotion may be coming).
    if (anyAnswered) throw Object.assign(err, { code: '25006' });
    // sqlclient_unable_to_establish_sqlconnection: an outage, and the message says why per host.
    throw Object.assign(err, { code: '08001' });
  }

  private async ask(i: number): Promise<{ ok: boolean; why?: string; role?: ServerRole }> {
    const c = new pg.Client({ connectionString: this.address.urlFor(i), connectionTimeoutMillis: this.timeoutMs, application_name: 'ratelimit host check' });
    c.on('error', () => undefined);
    const timer = setTimeout(() => void c.end().catch(() => undefined), this.timeoutMs);
    try {
      await c.connect();
      const r = await c.query<{ in_recovery: boolean; read_only: boolean }>(ROLE_QUERY);
      const role = { inRecovery: r.rows[0]!.in_recovery, readOnly: r.rows[0]!.read_only };
      return isWritable(role, this.address.target) ? { ok: true, role } : { ok: false, why: describeRole(role), role };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      return { ok: false, why: typeof code === 'string' ? code : (err as Error).message };
    } finally {
      clearTimeout(timer);
      await c.end().catch(() => undefined);
    }
  }
}
