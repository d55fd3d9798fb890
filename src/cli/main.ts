// The admin CLI: the global flags, the list of commands (each declares its own flags and action
// in src/cli/commands/<name>.ts, `top` in src/cli/top/), and the one place exit codes are chosen.
import { Command, CommanderError, Option } from 'commander';
import { describeFailure, type FailureKind } from '../core/errors.js';
import { EXIT, VERSION, type Io } from './context.js';
import { reportFailure } from './failure.js';

type CommandModule = { register: (program: Command, io: Io) => void };

/**
 * In `ratelimit --help` order, each loaded only when needed: a command's module graph (pg, zod,
 * yaml, the daemon, …) is most of the CLI's start-up, and `stats` or `top --once` should not pay
 * for `serve`'s. Two modules add subcommands under `db`.
 */
const COMMANDS: ReadonlyArray<{ name: string; load: () => Promise<CommandModule> }> = [
  { name: 'serve', load: () => import('./commands/serve.js') },
  { name: 'db', load: () => import('./commands/db-init.js') },
  { name: 'db', load: () => import('./commands/db-prune.js') },
  { name: 'status', load: () => import('./commands/status.js') },
  { name: 'reset', load: () => import('./commands/reset.js') },
  { name: 'stats', load: () => import('./commands/stats.js') },
  { name: 'hash', load: () => import('./commands/hash.js') },
  { name: 'top', load: () => import('./top/command.js') },
  { name: 'policy', load: () => import('./commands/policy.js') },
  { name: 'block', load: () => import('./commands/block.js') },
  { name: 'allow', load: () => import('./commands/allow.js') },
  { name: 'unlist', load: () => import('./commands/unlist.js') },
  { name: 'list', load: () => import('./commands/list.js') },
  { name: 'key', load: () => import('./commands/key-status.js') },
];

/** The options every command takes (docs/protocol.md: each command's --help lists them too). */
function globalOptions(): Option[] {
  return [
    new Option('--database-url <url>', 'PostgreSQL URL (env DATABASE_URL, FLY_DATABASE_URL; default: embedded)'),
    new Option('--data-dir <dir>', 'where the embedded database and generated key live (env RATELIMIT_DATA_DIR)'),
    new Option('--phone-limit <n>', 'calls allowed per number per window (env RATE_LIMIT_PHONE_MAX)'),
    new Option('--phone-window <duration>', 'the rolling window, e.g. 1h, 15m (env RATE_LIMIT_PHONE_WINDOW)'),
  ];
}

/**
 * The command named in argv, if it is one of ours: only its module needs loading. Anything else
 * (no command, --help, --version, a typo commander should suggest a fix for) loads them all.
 */
export function commandWord(argv: readonly string[]): string | undefined {
  const takesValue = new Set(
    globalOptions()
      .filter((o) => o.required || o.optional)
      .map((o) => o.long),
  );
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return undefined;
    if (takesValue.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    return COMMANDS.some((c) => c.name === a) ? a : undefined;
  }
  return undefined;
}

async function buildProgram(io: Io, argv: readonly string[]): Promise<{ program: Command; invoked: () => Command }> {
  const program = new Command('ratelimit').description('Phone-number and client-IP rate limiting for apps that place calls or send SMS.').version(VERSION);
  for (const o of globalOptions()) program.addOption(o);
  program
    // docs/protocol.md: every command's --help lists the global flags too (--database-url, --data-dir).
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(s.replace(/\n$/, '')),
    });
  const word = commandWord(argv);
  const modules = await Promise.all(COMMANDS.filter((c) => word === undefined || c.name === word).map((c) => c.load()));
  for (const m of modules) m.register(program, io);
  // Registered last, so every command and subcommand gets them, whoever added it.
  let invoked: Command = program;
  forEachCommand(program, (cmd) => {
    // A usage error points at the help of the command that was mistyped, not the top-level one.
    cmd.showHelpAfterError(`(run ${commandPath(cmd)} --help for usage)`);
    cmd.hook('preSubcommand', (_parent, sub) => {
      invoked = sub;
    });
  });
  return { program, invoked: () => invoked };
}

function forEachCommand(cmd: Command, fn: (cmd: Command) => void): void {
  fn(cmd);
  for (const sub of cmd.commands) forEachCommand(sub, fn);
}

/** `ratelimit policy apply`. */
function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return ['ratelimit', ...names].join(' ');
}

/** Every failure kind's exit code (docs/protocol.md's command table): 2 for what retyping fixes, else 1. */
const EXIT_FOR: Record<FailureKind, number> = {
  invalid_phone_number: EXIT.USAGE,
  invalid_usage: EXIT.USAGE,
  invalid_config: EXIT.USAGE,
  port_in_use: EXIT.FAILURE,
  database_unreachable: EXIT.FAILURE,
  database_auth: EXIT.FAILURE,
  database_error: EXIT.FAILURE,
  migration_failed: EXIT.FAILURE,
  key_missing: EXIT.FAILURE,
  key_mismatch: EXIT.FAILURE,
  embedded_unavailable: EXIT.FAILURE,
  internal_error: EXIT.FAILURE,
};

/** Maps any failure to an exit code. The only place exit codes are chosen. */
export function exitCodeFor(err: unknown, command: string | undefined): number {
  if (err instanceof CommanderError) {
    return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  // `serve` that cannot start exits 1, whatever the reason (docs/protocol.md), a bad setting included.
  if (command === 'serve') return EXIT.FAILURE;
  return EXIT_FOR[describeFailure(err).code];
}

export async function runCli(argv: string[], io: Io): Promise<number> {
  const { program, invoked } = await buildProgram(io, argv);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.OK;
  } catch (err) {
    const cmd = invoked();
    const code = exitCodeFor(err, cmd.name());
    if (code === EXIT.OK) return code;
    const json = cmd.options.some((o) => o.long === '--json') && argv.includes('--json');
    reportFailure(io, err, { json });
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
