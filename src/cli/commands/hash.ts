import { hashPhone, normalizePhone } from '../../core/phone.js';
import type { Command } from 'commander';
import { loadPhoneKey } from '../../db/key-file.js';
import { configFrom, emit, warnTo, type Io } from '../context.js';

export interface HashResult {
  e164: string;
  region: string | null;
  hash: string;
}

export function hashCommand(phone: string, key: string): HashResult {
  const { e164, region } = normalizePhone(phone);
  return { e164, region: region ?? null, hash: hashPhone(e164, key) };
}

export function printHash(r: HashResult): string {
  return `${r.e164}\t${r.hash}`;
}

export function register(program: Command, io: Io): void {
  program
    .command('hash')
    .description("print a number's E.164 form and its hash, to correlate with stored rows")
    .argument('<phone>', 'number in international format, e.g. +14155552671')
    .option('--json', 'print one JSON document')
    .action(async (phone: string, _opts, cmd: Command) => {
      normalizePhone(phone);
      const config = configFrom(cmd, io);
      const result = hashCommand(phone, await loadPhoneKey(config, warnTo(io), { existingOnly: true }));
      emit(io, cmd, result, () => printHash(result));
    });
}
