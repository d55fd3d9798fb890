// What every command shares: where it writes (Io), the exit codes, the version, and opening
// the configuration, key and database the same way.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { resolveConfig, type Config, type ConfigFlags } from '../core/config.js';
import { openDatabase, type Database } from '../db/open.js';
import { isQueryCanceled } from '../db/errors.js';
import { failures } from '../core/errors.js';
import { formatDurationMs } from '../core/duration.js';
import { loadPhoneKey } from '../db/key-file.js';

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

export function configFrom(cmd: Command, io: Io): Config {
  return resolveConfig(cmd.optsWithGlobals<GlobalFlags>(), io.env);
}

export function warnTo(io: Io) {
  return (message: string) => io.err(`ratelimit: warning: ${message}`);
}

export interface DatabaseOptions {
  /**
   * A read-only report (stats, top, status): each query is bounded by RATELIMIT_CLI_TIMEOUT, so
   * a scan that would take minutes on a big table fails with a message instead of hanging.
   */
  readTimeout?: boolean;
}

/** Opens the key and the database for one admin command and always closes them. */
export async function withDatabase<T>(
  cmd: Command,
  io: Io,
  fn: (ctx: { config: Config; key: string; db: Database }) => Promise<T>,
  opts: DatabaseOptions = {},
): Promise<T> {
  const config = configFrom(cmd, io);
  const key = await loadPhoneKey(config, warnTo(io));
  return openAndRun(cmd, config, (db) => fn({ config, key, db }), opts);
}

/**
 * For commands that never hash a number (`policy`, `list`, `unlist --prefix`): no key is
 * loaded, so none is demanded (PROTOCOL.md: only commands that hash need one).
 */
export async function withDatabaseNoKey<T>(cmd: Command, io: Io, fn: (ctx: { config: Config; db: Database }) => Promise<T>): Promise<T> {
  const config = configFrom(cmd, io);
  return openAndRun(cmd, config, (db) => fn({ config, db }));
}

async function openAndRun<T>(cmd: Command, config: Config, fn: (db: Database) => Promise<T>, opts: DatabaseOptions = {}): Promise<T> {
  const db = await openDatabase(config, {
    applicationName: `ratelimit ${cmd.name()}`,
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
