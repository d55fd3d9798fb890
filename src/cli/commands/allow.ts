// `ratelimit allow <phone>`: the safe list. The number is exempt from every rule and destination
// control (its calls still count, so stats stay true). Numbers only: exempting a whole range
// would switch off the controls that exist for ranges (SMS pumping walks through them).
import type { Command } from 'commander';
import { Option } from 'commander';
import type { Io } from '../context.js';
import { LIST_PROPAGATION_NOTE } from '../list-target.js';
import { UsageError } from '../usage.js';
import { FOR_HELP, runListSet, type SetOptions } from './block.js';

export function register(program: Command, io: Io): void {
  program
    .command('allow')
    .description(`exempt a number from every rule and destination control (still counted); audited; ${LIST_PROPAGATION_NOTE}`)
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    // Declared (hidden) only to refuse it with a reason rather than "unknown option".
    .addOption(new Option('--prefix <+digits>').hideHelp())
    .option('--for <duration>', FOR_HELP)
    .option('--reason <text>', 'why (kept with the entry and in the audit table)')
    .option('--json', 'print one JSON document')
    .action(async (phone: string, opts: SetOptions, cmd: Command) => {
      if (opts.prefix !== undefined) {
        throw new UsageError('allow takes one number, not --prefix: exempting a range would switch off the controls that protect against range attacks');
      }
      await runListSet(io, cmd, 'allow', phone, opts);
    });
}
