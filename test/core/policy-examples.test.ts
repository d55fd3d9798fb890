// Every shipped example policy (docs/examples/) is valid, warns about nothing, and says what it assumes.
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parsePolicyFile } from '../../src/core/policy/file.js';

const DIR = join(import.meta.dirname, '..', '..', 'docs', 'examples');

describe('docs/examples', () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml'));
  it('has the common shapes', () => {
    expect(files).toEqual(expect.arrayContaining(['policy.yaml', 'one-country.yaml', 'global.yaml', 'voice-irsf.yaml']));
  });
  for (const f of files) {
    it(`${f}: valid, no warnings, states its assumptions, blocks non-geographic numbers, keeps sweep and blocks`, () => {
      const text = readFileSync(join(DIR, f), 'utf8');
      const parsed = parsePolicyFile(text);
      expect(parsed).toMatchObject({ ok: true, warnings: [] });
      expect(text).toMatch(/^# ASSUMES:/m);
      expect(parsed.ok && parsed.policy.destinations.blockTypes).toContain('non_geographic');
      // Applying a file replaces the default policy: an example without these would drop the
      // default's sweep rule and escalating blocks.
      expect(parsed.ok && parsed.policy.sweep?.rules.length).toBeGreaterThan(0);
      expect(parsed.ok && parsed.policy.blocks).toBeTruthy();
    });
  }
});
