// The CLI loads only the module of the command named in argv (src/cli/main.ts commandWord): the
// word must be found past the global options and their values, and anything that is not one of
// our commands must load them all, so help, --version and commander's "did you mean" still work.
import { describe, expect, it } from 'vitest';
import { commandWord } from '../../src/cli/main.js';

describe('commandWord', () => {
  it('finds the command past global options and their values', () => {
    expect(commandWord(['stats', '--json'])).toBe('stats');
    expect(commandWord(['--database-url', 'postgres://x/stats', 'top', '--once'])).toBe('top');
    expect(commandWord(['--data-dir', 'serve', 'status', '+14155552671'])).toBe('status');
    expect(commandWord(['--phone-limit', '5', '--phone-window=1h', 'db', 'init'])).toBe('db');
    expect(commandWord(['key', 'status'])).toBe('key');
  });

  it('loads everything for help, version, no command, or a word that is not a command', () => {
    expect(commandWord([])).toBeUndefined();
    expect(commandWord(['--help'])).toBeUndefined();
    expect(commandWord(['-V'])).toBeUndefined();
    expect(commandWord(['stat', '--json'])).toBeUndefined();
    expect(commandWord(['help', 'stats'])).toBeUndefined();
    expect(commandWord(['--', 'stats'])).toBeUndefined();
  });
});
