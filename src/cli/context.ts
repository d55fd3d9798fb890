// What every command shares: where it writes (Io), the exit codes, the version, and opening
// the configuration, key and database the same way.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { resolveConfig, type Config, type ConfigFlags, type ResolveOptions } from '../core/config.js';
import { ensureSchema, openDatabase, type Database } from '../db/open.js';
import { findPhoneKey, loadPhoneKey } from '../db/key-file.js';
import { isQueryCanceled } from '../db/errors.js';
import { failures } from '../core/errors.js';
import { formatDurationMs } from '../core/duration.js';
import { checkKey, verifyKey, type KeyCheck } from '../db/keys.js';

export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2 } as const;

export const VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  }
})();

/** Where commands write. Tests and `top` pass their own. */
export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Readonly<Record<string, string | undefined>>;
  isTTY: boolean;
}

interface GlobalFlags extends ConfigFlags {
  json?: boolean;
}

export function configFrom(cmd: Command, io: Io, options: ResolveOptions = {}): Config {
  return resolveConfig(cmd.optsWithGlobals<GlobalFlags>(), io.env, options);
}

export function warnTo(io: Io) {
  return (message: string) => io.err(`ratelimit: warning: ${message}`);
}

/** The keys an admin command hashes with: PHONE_ENCRYPTION_KEY and, during a rotation, the previous one. */
export interface CommandKeys {
  current: string;
  previous: string | undefined;
}

/**
 * Opens the key and the database for one admin command that hashes numbers (status, reset,
 * block/allow/unlist of a number) and always closes them. The key is never generated (the
 * daemon's key file or PHONE_ENCRYPTION_KEY), the embedded cluster never created, and the key is
 * checked against the database's record before `fn` runs: a wrong key exits 1 naming both
 * fingerprints (docs/protocol.md *Keys*).
 */
export interface DatabaseOptions {
  /**
   * A read-only report (stats, top, status): each query is bounded by RATELIMIT_CLI_TIMEOUT, so
   * a scan that would take minutes on a big table fails with a message instead of hanging.
   */
  readTimeout?: boolean;
}

export async function withDatabase<T>(
  cmd: Command,
  io: Io,
  fn: (ctx: { config: Config; key: string; keys: CommandKeys; db: Database }) => Promise<T>,
  dbOpts: DatabaseOptions = {},
): Promise<T> {
  const config = configFrom(cmd, io);
  const key = await loadPhoneKey(config, warnTo(io), { existingOnly: true });
  const keys = { current: key, previous: config.previousPhoneKey };
  return openAndRun(cmd, config, { create: false, ...dbOpts }, async (db) => {
    await checkKeyOf(db, keys, io);
    return fn({ config, key, keys, db });
  });
}

/**
 * For commands that hash nothing (`policy`, `list`, `stats`, `top`, prefix entries): no key is
 * demanded (docs/protocol.md: only commands that hash need one), but one that is given (or found in
 * the data dir) is checked like withDatabase's, so a misconfigured shell is caught whatever
 * command it runs first. Never creates the embedded cluster.
 */
export async function withDatabaseNoKey<T>(
  cmd: Command,
  io: Io,
  fn: (ctx: { config: Config; db: Database }) => Promise<T>,
  dbOpts: DatabaseOptions = {},
): Promise<T> {
  const config = configFrom(cmd, io);
  const key = await findPhoneKey(config, warnTo(io));
  return openAndRun(cmd, config, { create: false, ...dbOpts }, async (db) => {
    if (key !== undefined) await checkKeyOf(db, { current: key, previous: config.previousPhoneKey }, io);
    return fn({ config, db });
  });
}

/**
 * `db init`, the initialising command: may create the embedded cluster (and its key, as the
 * daemon would), migrates, and records the key on first use or starts a rotation (verifyKey).
 * With DATABASE_URL and no PHONE_ENCRYPTION_KEY it migrates only: the first daemon records its key.
 */
export async function withDatabaseInit<T>(
  cmd: Command,
  io: Io,
  fn: (ctx: { config: Config; db: Database; recordKey: () => Promise<KeyCheck | undefined> }) => Promise<T>,
): Promise<T> {
  const config = configFrom(cmd, io);
  const key = config.phoneKey === undefined && config.databaseUrl !== undefined ? undefined : await loadPhoneKey(config, warnTo(io));
  return openAndRun(cmd, config, { create: true }, (db) =>
    fn({
      config,
      db,
      recordKey: async () => {
        if (key === undefined) return undefined;
        const check = await verifyKey(db.pool, { current: key, previous: config.previousPhoneKey });
        for (const w of check.warnings) warnTo(io)(w);
        return check;
      },
    }),
  );
}

async function checkKeyOf(db: Database, keys: CommandKeys, io: Io): Promise<void> {
  // The key record arrives with migration 7: the schema first (which also says to run db init).
  await ensureSchema(db);
  const check = await checkKey(db.pool, keys);
  for (const w of check.warnings) warnTo(io)(w);
}

async function openAndRun<T>(cmd: Command, config: Config, opts: { create: boolean } & DatabaseOptions, fn: (db: Database) => Promise<T>): Promise<T> {
  const db = await openDatabase(config, {
    applicationName: `ratelimit ${cmd.name()}`,
    createEmbedded: opts.create,
    // Server side only: the migrator (embedded databases migrate on open) lifts it for itself.
    ...(opts.readTimeout ? { statementTimeoutMs: config.cliTimeoutMs, clientTimeout: false } : {}),
  });
  try {
    return await fn(db);
  } catch (err) {
    if (opts.readTimeout && isQueryCanceled(err)) {
      throw failures.cliQueryTimeout(cmd.name(), db.target, formatDurationMs(config.cliTimeoutMs), { cause: err });
    }
    throw err;
  } finally {
    await db.close();
  }
}

/** `--json`: one JSON document; otherwise the command's human printer. */
export function emit(io: Io, cmd: Command, data: unknown, human: () => string): void {
  io.out(cmd.optsWithGlobals<GlobalFlags>().json ? JSON.stringify(data) : human());
}
