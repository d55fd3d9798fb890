// A policy file is hostile input like any other: `__proto__`, `constructor` and `prototype` are
// unknown keys wherever they appear (an error with its line, never a silently dropped rule), and
// parsing one can never reach an object's prototype.
import { afterEach, describe, expect, it } from 'vitest';
import { parsePolicyFile } from '../../src/core/policy/file.js';

const NUMBER = 'number:\n  limits: [{limit: 2, window: 1h}]\n';

function problems(text: string): string[] {
  const r = parsePolicyFile(text);
  expect(r.ok, JSON.stringify(r)).toBe(false);
  return r.ok ? [] : r.problems.map((p) => `${p.line}:${p.column} ${p.message}`);
}

const polluted = () => ({}) as Record<string, unknown>;

afterEach(() => {
  // Nothing any case parsed may have reached Object.prototype.
  expect(polluted().polluted).toBeUndefined();
  expect(Object.prototype).not.toHaveProperty('polluted');
  expect(Object.prototype).not.toHaveProperty('limit');
});

describe('reserved keys in a policy file', () => {
  it.each(['__proto__', 'constructor', 'prototype'])('%s at the top level is an unknown key, at its line', (key) => {
    expect(problems(`${NUMBER}${key}:\n  polluted: true\n`)).toEqual([
      `3:1 ${key}: unknown key "${key}" (expected number, prefix, country, global, ip, destinations, conversion, sweep, blocks, safe)`,
    ]);
  });

  it.each(['__proto__', 'constructor', 'prototype'])('%s inside a group or a rule is an unknown key', (key) => {
    expect(problems(`number:\n  limits: [{limit: 2, window: 1h}]\n  ${key}: {polluted: true}\n`)).toEqual([
      `3:3 number.${key}: unknown key "${key}" (expected limits, block_after, shadow)`,
    ]);
    expect(problems(`number:\n  limits:\n    - limit: 2\n      window: 1h\n      ${key}: {polluted: true}\n`)).toEqual([
      `5:7 number.limits[0].${key}: unknown key "${key}" (expected limit, window)`,
    ]);
  });

  it('__proto__ as a country override is an error, not a rule silently dropped (it was before)', () => {
    const text = 'country:\n  overrides:\n    GB: [{limit: 2, window: 1h}]\n    __proto__: [{limit: 3, window: 1h}]\n';
    expect(problems(text)).toEqual(['4:5 country.overrides.__proto__: unknown key "__proto__"']);
    expect(problems('country:\n  overrides:\n    constructor: [{limit: 3, window: 1h}]\n')).toEqual([
      '3:5 country.overrides.constructor: unknown key "constructor"',
    ]);
  });

  it('quoted, explicit, aliased and merged spellings are caught too', () => {
    expect(problems(`${NUMBER}"__proto__": {polluted: true}\n`)).toHaveLength(1);
    expect(problems(`${NUMBER}? __proto__\n: {polluted: true}\n`)).toHaveLength(1);
    expect(problems(`${NUMBER}country:\n  overrides:\n    GB: &r [{limit: 2, window: 1h}]\n    __proto__: *r\n`)).toEqual([
      '6:5 country.overrides.__proto__: unknown key "__proto__"',
    ]);
    // A merge key is not a policy key either.
    expect(problems(`${NUMBER}<<: {__proto__: {polluted: true}}\n`).join('\n')).toMatch(/unknown key/);
  });

  it('is reported with every other problem at once', () => {
    const all = problems('__proto__: {}\nnumber:\n  limits: [{limit: 0, window: 1h}]\n  prototype: 1\n');
    expect(all).toHaveLength(3);
    expect(all.join('\n')).toMatch(/1:1 __proto__: unknown key/);
    expect(all.join('\n')).toMatch(/number\.limits\[0\]\.limit: must be an integer/);
    expect(all.join('\n')).toMatch(/4:3 number\.prototype: unknown key/);
  });

  it('a valid file is unaffected, and deep nesting never throws', () => {
    expect(parsePolicyFile(NUMBER).ok).toBe(true);
    for (const text of [
      `${'['.repeat(5000)}${']'.repeat(5000)}`,
      `${'{a: '.repeat(2000)}1${'}'.repeat(2000)}`,
      `__proto__: ${'['.repeat(2000)}${']'.repeat(2000)}`,
    ]) {
      expect(() => parsePolicyFile(text)).not.toThrow();
      expect(parsePolicyFile(text).ok).toBe(false);
    }
  });
});
