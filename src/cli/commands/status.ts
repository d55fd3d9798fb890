// `ratelimit status <phone>`: the report (src/cli/status-report.ts) for people or as JSON.
import type { Command } from 'commander';
import { ensureSchema } from '../../db/open.js';
import { normalizePhone } from '../../core/phone.js';
import { emit, withDatabase, type Io } from '../context.js';
import { statusCommand } from '../status-report.js';
import { printStatus } from '../status-print.js';

export { statusCommand, type StatusReport, type RuleStatus } from '../status-report.js';

export function register(program: Command, io: Io): void {
  program
    .command('status')
    .description(
      'every rule that applies to a number under the active policy (used, limit, remaining, reset), its list entry, and whether a call is allowed now',
    )
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    .option('--json', 'print one JSON document (shape: README, "ratelimit status --json")')
    .action(async (phone: string, _opts, cmd: Command) => {
      normalizePhone(phone); // a bad number is a usage error before any connection is tried
      const report = await withDatabase(
        cmd,
        io,
        async ({ config, keys, db }) => {
          await ensureSchema(db);
          return statusCommand(db.pool, keys.current, config.defaultPolicy, phone, keys.previous);
        },
        { readTimeout: true },
      );
      emit(io, cmd, report, () => printStatus(report));
    });
}
