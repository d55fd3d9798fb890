import { Command, CommanderError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { resolveConfig, type Config, type ConfigFlags } from '../core/config.js';
import { ConfigError, InvalidPhoneNumberError, RateLimitError } from '../core/errors.js';
import { normalizePhone } from '../core/phone.js';
import { ensureSchema, openDatabase, type Database } from '../db/open.js';
import { loadPhoneKey } from '../db/key-file.js';
import { operatorName } from './operator.js';
import { dbInitCommand, printDbInit } from './commands/db-init.js';
import { statusCommand, printStatus } from './commands/status.js';
import { resetCommand, printReset } from './commands/reset.js';
import { statsCommand, printStats } from './commands/stats.js';
import { hashCommand, printHash } from './commands/hash.js';
import { startServe } from './commands/serve.js';

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

function configFrom(cmd: Command, io: Io): Config {
  return resolveConfig(cmd.optsWithGlobals<GlobalFlags>(), io.env);
}

function warnTo(io: Io) {
  return (message: string) => io.err(`ratelimit: warning: ${message}`);
}

/** Opens the key and the database for one admin command and always closes them. */
async function withDatabase<T>(cmd: Command, io: Io, fn: (ctx: { config: Config; key: string; db: Database }) => Promise<T>): Promise<T> {
  const config = configFrom(cmd, io);
  const key = await loadPhoneKey(config, warnTo(io));
  const db = await openDatabase(config, { applicationName: `ratelimit ${cmd.name()}` });
  try {
    return await fn({ config, key, db });
  } finally {
    await db.close();
  }
}

function emit(io: Io, cmd: Command, data: unknown, human: () => string): void {
  io.out(cmd.optsWithGlobals<GlobalFlags>().json ? JSON.stringify(data) : human());
}

export function buildProgram(io: Io): Command {
  const program = new Command('ratelimit')
    .description('Phone-number and client-IP rate limiting for apps that place calls or send SMS.')
    .version(VERSION)
    .addOption(new Option('--database-url <url>', 'PostgreSQL URL (env DATABASE_URL, FLY_DATABASE_URL; default: embedded)'))
    .addOption(new Option('--data-dir <dir>', 'where the embedded database and generated key live (env RATELIMIT_DATA_DIR)'))
    .addOption(new Option('--phone-limit <n>', 'calls allowed per number per window (env RATE_LIMIT_PHONE_MAX)'))
    .addOption(new Option('--phone-window <duration>', 'the rolling window, e.g. 1h, 15m (env RATE_LIMIT_PHONE_WINDOW)'))
    .showHelpAfterError('(run ratelimit --help for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(s.replace(/\n$/, '')),
    });

  program
    .command('serve')
    .description('run the daemon (HTTP + WebSocket) until SIGTERM/SIGINT')
    .option('--port <port>', `port to listen on (env PORT, default 8081)`)
    .option('--host <host>', 'address to listen on (env HOST, default 127.0.0.1)')
    .option('--ip-limit <n>', 'consumes allowed per client IP per window (env RATE_LIMIT_IP_MAX)')
    .option('--ip-window <duration>', 'the per-IP rolling window (env RATE_LIMIT_IP_WINDOW)')
    .action(async (_opts, cmd: Command) => {
      const config = configFrom(cmd, io);
      const handle = await startServe(config, io.env, VERSION);
      const clean = await new Promise<boolean>((resolve) => {
        let signals = 0;
        const onSignal = (signal: NodeJS.Signals) => {
          signals++;
          if (signals > 1) {
            handle.logger.warn({ signal }, 'second signal: exiting now');
            process.exit(EXIT.FAILURE);
          }
          handle.logger.info({ signal }, 'signal received');
          void handle.stop().then(resolve);
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
      if (!clean) throw new RateLimitError('database_error', 'shutdown was not clean: past RATELIMIT_SHUTDOWN_TIMEOUT, or decisions made from memory left unwritten (see the log)');
    });

  const db = program.command('db').description('database administration');
  db.command('init')
    .description('apply pending migrations (idempotent, safe to run concurrently) and print a stats summary')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabase(cmd, io, ({ config, db }) => dbInitCommand(db.pool, db.target, config.phonePolicy));
      emit(io, cmd, report, () => printDbInit(report));
    });

  program
    .command('status')
    .description("show a number's usage: used, limit, remaining, reset time (hashes it locally)")
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    .option('--json', 'print one JSON document')
    .action(async (phone: string, _opts, cmd: Command) => {
      normalizePhone(phone); // a bad number is a usage error before any connection is tried
      const report = await withDatabase(cmd, io, async ({ config, key, db }) => {
        await ensureSchema(db);
        return statusCommand(db.pool, key, config.phonePolicy, phone);
      });
      emit(io, cmd, report, () => printStatus(report));
    });

  program
    .command('reset')
    .description("clear a number's usage so its next call is allowed; records who, when and why")
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    .option('--reason <text>', 'why (kept in the audit table)')
    .option('--json', 'print one JSON document')
    .action(async (phone: string, opts: { reason?: string }, cmd: Command) => {
      normalizePhone(phone);
      const report = await withDatabase(cmd, io, async ({ config, key, db }) => {
        await ensureSchema(db);
        return resetCommand(db.pool, key, config.phonePolicy, phone, operatorName(io.env), opts.reason);
      });
      emit(io, cmd, report, () => printReset(report));
    });

  program
    .command('stats')
    .description('totals: numbers tracked, at their limit now, calls and denials in the last window, by region')
    .option('--json', 'print one JSON document')
    .action(async (_opts, cmd: Command) => {
      const report = await withDatabase(cmd, io, async ({ config, db }) => {
        await ensureSchema(db);
        return statsCommand(db.pool, config.phonePolicy);
      });
      emit(io, cmd, report, () => printStats(report));
    });

  program
    .command('hash')
    .description("print a number's E.164 form and its hash, to correlate with stored rows")
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    .option('--json', 'print one JSON document')
    .action(async (phone: string, _opts, cmd: Command) => {
      normalizePhone(phone);
      const config = configFrom(cmd, io);
      const result = hashCommand(phone, await loadPhoneKey(config, warnTo(io)));
      emit(io, cmd, result, () => printHash(result));
    });

  program
    .command('top')
    .description('live dashboard of the fleet: instances, totals, hottest numbers, database (q quits)')
    .option('--once', 'print one plain frame and exit (the default when stdout is not a terminal)')
    .option('--interval <duration>', 'refresh interval, e.g. 2s or 500ms (default 2s)')
    .action(async (opts: { once?: boolean; interval?: string }, cmd: Command) => {
      // Loaded on demand: ink and react would slow every other command's start-up.
      const top = await import('./commands/top.js');
      const intervalMs = top.parseInterval(opts.interval);
      await withDatabase(cmd, io, async ({ config, db }) => {
        await ensureSchema(db);
        const columns = Number(io.env.COLUMNS);
        await top.runTop({
          pool: db.pool,
          policy: config.phonePolicy,
          intervalMs,
          once: opts.once === true || !io.isTTY,
          operator: operatorName(io.env),
          out: io.out,
          columns: io.isTTY && process.stdout.columns ? process.stdout.columns : Number.isInteger(columns) && columns >= 40 ? columns : 80,
        });
      });
    });

  return program;
}

/** Maps any failure to one readable line and an exit code. The only place exit codes are chosen. */
export function exitCodeFor(err: unknown, command: string | undefined): number {
  if (err instanceof CommanderError) {
    return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  if (err instanceof InvalidPhoneNumberError) return EXIT.USAGE;
  if (err instanceof ConfigError) return command === 'serve' ? EXIT.FAILURE : EXIT.USAGE;
  return EXIT.FAILURE;
}

export async function runCli(argv: string[], io: Io): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.OK;
  } catch (err) {
    const code = exitCodeFor(err, argv.find((a) => !a.startsWith('-')));
    if (!(err instanceof CommanderError)) {
      const message = err instanceof RateLimitError || err instanceof Error ? err.message : String(err);
      io.err(`ratelimit: ${message}`);
      if (io.env.DEBUG && err instanceof Error && err.stack) io.err(err.stack);
    }
    return code;
  }
}

export async function main(): Promise<void> {
  const io: Io = {
    out: (text) => process.stdout.write(`${text}\n`),
    err: (text) => process.stderr.write(`${text}\n`),
    env: process.env,
    isTTY: Boolean(process.stdout.isTTY),
  };
  process.exitCode = await runCli(process.argv.slice(2), io);
}
