// The admin CLI: the global flags, the list of commands (each declares its own flags and action
// in src/cli/commands/<name>.ts, `top` in src/cli/top/), and the one place exit codes are chosen.
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, InvalidPhoneNumberError, RateLimitError } from '../core/errors.js';
import { EXIT, VERSION, type Io } from './context.js';
import * as serve from './commands/serve.js';
import * as dbInit from './commands/db-init.js';
import * as dbPrune from './commands/db-prune.js';
import * as status from './commands/status.js';
import * as reset from './commands/reset.js';
import * as stats from './commands/stats.js';
import * as hash from './commands/hash.js';
import * as top from './top/command.js';
import * as policy from './commands/policy.js';
import * as block from './commands/block.js';
import * as allow from './commands/allow.js';
import * as unlist from './commands/unlist.js';
import * as list from './commands/list.js';
import * as keyStatus from './commands/key-status.js';
import { UsageError } from './usage.js';

/** In `ratelimit --help` order. */
const COMMANDS: ReadonlyArray<{ register: (program: Command, io: Io) => void }> = [
  serve,
  dbInit,
  dbPrune,
  status,
  reset,
  stats,
  hash,
  top,
  policy,
  block,
  allow,
  unlist,
  list,
  keyStatus,
];

function buildProgram(io: Io): Command {
  const program = new Command('ratelimit')
    .description('Phone-number and client-IP rate limiting for apps that place calls or send SMS.')
    .version(VERSION)
    .addOption(new Option('--database-url <url>', 'PostgreSQL URL (env DATABASE_URL, FLY_DATABASE_URL; default: embedded)'))
    .addOption(new Option('--data-dir <dir>', 'where the embedded database and generated key live (env RATELIMIT_DATA_DIR)'))
    .addOption(new Option('--phone-limit <n>', 'calls allowed per number per window (env RATE_LIMIT_PHONE_MAX)'))
    .addOption(new Option('--phone-window <duration>', 'the rolling window, e.g. 1h, 15m (env RATE_LIMIT_PHONE_WINDOW)'))
    // PROTOCOL.md: every command's --help lists the global flags too (--database-url, --data-dir).
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(run ratelimit --help for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(s.replace(/\n$/, '')),
    });
  for (const command of COMMANDS) command.register(program, io);
  return program;
}

/** Maps any failure to one readable line and an exit code. The only place exit codes are chosen. */
export function exitCodeFor(err: unknown, command: string | undefined): number {
  if (err instanceof CommanderError) {
    return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  if (err instanceof InvalidPhoneNumberError || err instanceof UsageError) return EXIT.USAGE;
  // PROTOCOL.md *Keys*: a wrong hashing key is not a usage error, whatever the command.
  if (err instanceof RateLimitError && err.code === 'key_mismatch') return EXIT.FAILURE;
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
