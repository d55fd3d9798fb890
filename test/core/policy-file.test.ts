// The policy file's parser and printer, every rule of the format with its error message: longer than
// 350 lines because each field's refusal is its own case.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { getCountries } from 'libphonenumber-js/max';
import { describePolicyChanges, formatPolicy, parsePolicyFile, policyToYaml, type PolicyProblem } from '../../src/core/policy/file.js';
import { defaultPolicy } from '../../src/core/policy/default.js';
import { NUMBER_TYPES, type BlocksPolicy, type ConversionPolicy, type GroupName, type LimitRule, type Policy } from '../../src/core/policy/types.js';
import { formatDurationMs, parseDurationMs } from '../../src/core/duration.js';

function parsed(text: string): Policy {
  const result = parsePolicyFile(text);
  if (!result.ok) throw new Error(`expected a valid policy, got ${JSON.stringify(result.problems)}`);
  return result.policy;
}

function problems(text: string): PolicyProblem[] {
  const result = parsePolicyFile(text);
  if (result.ok) throw new Error(`expected problems, got a policy for:\n${text}`);
  return result.problems;
}

/** The one problem of `text`, which must be at `line`:`column` and mention `message`. */
function expectProblemAt(text: string, line: number, column: number, message: RegExp): void {
  const found = problems(text);
  expect(found).toHaveLength(1);
  expect(found[0]).toMatchObject({ line, column });
  expect(found[0]?.message).toMatch(message);
}

const rule = (group: GroupName, limit: number, window: string, shadow = false, region?: string): LimitRule => ({
  id: region ? `${group}:${region}:${window}` : `${group}:${window}`,
  group,
  limit,
  window,
  windowMs: parseDurationMs(window) as number,
  shadow,
});

const PROTOCOL_EXAMPLE = `number:                      # per E.164 number: exact rolling windows, every one must allow
  limits: [{limit: 2, window: 1h}, {limit: 5, window: 1d}]
  block_after: {denials: 3, within: 1h, for: 24h}   # optional: then blocked, reason number_blocked
prefix:                      # number ranges: the E.164 number without its last \`digits\` digits
  digits: 3                  # 3..6; 3 = ranges of 1,000 consecutive numbers
  limits: [{limit: 10, window: 1h}]
country:                     # per ISO 3166 region of the number (libphonenumber); unknown = "ZZ"
  limits: [{limit: 200, window: 1h}]
  overrides: {GB: [{limit: 500, window: 1h}], NG: [{limit: 5, window: 1h}]}
global:                      # all numbers together
  limits: [{limit: 10000, window: 1d}]
  shadow: true               # any group: evaluated, counted and reported, never denies
ip:                          # per client IP (IPv6: per /64), in memory, per instance
  limits: [{limit: 20, window: 1h}]
destinations:
  countries: {deny: [CU, KP]}            # or {allow: [US, CA, GB]}; absent = every country
  block_types: [premium_rate, shared_cost]   # libphonenumber types; this is the default
`;

// The contract's own example (/work/shared/PROTOCOL.md, *Policy*), every group, byte for byte: it
// gives block_after both `for` and a `blocks` group, which must parse (`for` caps each step).
const CONTRACT_EXAMPLE = `number:                      # per E.164 number: exact rolling windows, every one must allow
  limits: [{limit: 2, window: 1h}, {limit: 5, window: 1d}]
  block_after: {denials: 3, within: 1h, for: 24h}   # optional: then blocked, reason number_blocked
prefix:                      # number ranges: the E.164 number without its last \`digits\` digits
  digits: 3                  # 3..6; 3 = ranges of 1,000 consecutive numbers
  limits: [{limit: 10, window: 1h}]
country:                     # per ISO 3166 region of the number (libphonenumber); unknown = "ZZ"
  limits: [{limit: 200, window: 1h}]
  overrides: {GB: [{limit: 500, window: 1h}], NG: [{limit: 5, window: 1h}]}
global:                      # all numbers together
  limits: [{limit: 10000, window: 1d}]
  shadow: true               # any group: evaluated, counted and reported, never denies
ip:                          # per client IP (IPv6: per /64), in memory, per instance
  limits: [{limit: 20, window: 1h}]
destinations:
  countries: {deny: [CU, KP]}            # or {allow: [US, CA, GB]}; absent = every country
  block_types: [premium_rate, shared_cost]   # libphonenumber types; this is the default
conversion:                  # budgets for calls that did not convert (see *Outcomes*)
  answered_at_least: 10s     # an answered call this long counts as converted
  pending_after: 15m         # no outcome by then: unconverted (until then it counts as unconverted)
  prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}]}
  country:
    unconverted: [{limit: 50, window: 1h}]
    baseline: {factor: 0.2, floor: 20, window: 1d, history: 14d}  # max(floor, factor × most converted in one window over history)
sweep:                       # distinct numbers per range: pumpers walk consecutive numbers
  prefix: {digits: 3, distinct: [{limit: 10, window: 1h}]}
blocks:                      # automatic blocks (block_after, sweep, conversion) escalate and expire
  escalate: [5m, 1h, 12h]
  decay: 24h                 # quiet this long: back to the first step
safe:
  prefixes: ['+1212555']     # never denied by conversion, sweep or automatic blocks
`;

describe('parsePolicyFile: valid files', () => {
  it("parses docs/protocol.md's example to its rules and ids", () => {
    const result = parsePolicyFile(PROTOCOL_EXAMPLE);
    expect(result).toMatchObject({ ok: true, warnings: [] });
    expect(parsed(PROTOCOL_EXAMPLE)).toEqual({
      number: [rule('number', 2, '1h'), rule('number', 5, '1d')],
      blockAfter: { denials: 3, withinMs: 3_600_000, forMs: 86_400_000 },
      prefix: { digits: 3, rules: [rule('prefix', 10, '1h')] },
      country: {
        rules: [rule('country', 200, '1h')],
        overrides: new Map([
          ['GB', [rule('country', 500, '1h', false, 'GB')]],
          ['NG', [rule('country', 5, '1h', false, 'NG')]],
        ]),
      },
      global: [rule('global', 10000, '1d', true)],
      ip: [rule('ip', 20, '1h')],
      destinations: { countries: { mode: 'deny', regions: ['CU', 'KP'] }, blockTypes: ['premium_rate', 'shared_cost'] },
      conversion: undefined,
      sweep: undefined,
      blocks: undefined,
      safe: { prefixes: [] },
    } satisfies Policy);
  });

  it("parses the contract's whole example, block_after's `for` beside a `blocks` group, without warnings, and prints it back", () => {
    expect(parsePolicyFile(CONTRACT_EXAMPLE)).toMatchObject({ ok: true, warnings: [] });
    const policy = parsed(CONTRACT_EXAMPLE);
    expect(policy.blockAfter).toEqual({ denials: 3, withinMs: 3_600_000, forMs: 86_400_000 });
    expect(policy.blocks).toEqual({ escalateMs: [300_000, 3_600_000, 43_200_000], escalate: ['5m', '1h', '12h'], decayMs: 86_400_000 });
    expect(policy.sweep?.rules.map((r) => r.id)).toEqual(['sweep:prefix:1h']);
    expect(policy.conversion?.country?.baseline?.rule.id).toBe('conversion:country:baseline');
    expect(policy.safe.prefixes).toEqual(['+1212555']);
    expect(policyToYaml(policy)).toContain('  block_after: {denials: 3, within: 1h, for: 1d}\n');
    expect(parsed(policyToYaml(policy))).toEqual(policy);
    expect(parsed(formatPolicy(policy))).toEqual(policy);
  });

  it("parses the example of docs/protocol.md's Policy section as it stands, every group present, without warnings", () => {
    const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
    const yaml = /^## Policy\n[\s\S]*?```yaml\n([\s\S]*?)```/m.exec(doc)?.[1];
    expect(yaml).toBeDefined();
    const result = parsePolicyFile(yaml as string);
    expect(result).toMatchObject({ ok: true, warnings: [] });
    const policy = parsed(yaml as string);
    expect(policy.blockAfter).toEqual({ denials: 3, withinMs: 3_600_000, forMs: 86_400_000 });
    expect(policy.conversion?.prefix?.rules.map((r) => r.id)).toEqual(['conversion:prefix:1h']);
    expect(policy.conversion?.country?.rules.map((r) => r.id)).toEqual(['conversion:country:1h']);
    expect(policy.conversion?.country?.baseline?.rule.id).toBe('conversion:country:baseline');
    expect(policy.sweep?.rules.map((r) => r.id)).toEqual(['sweep:prefix:1h']);
    expect(policy.blocks?.escalate).toEqual(['5m', '1h', '12h']);
    expect(policy.safe.prefixes).toEqual(['+1212555']);
  });

  it('treats every absent group as no rule, and blocks premium_rate and shared_cost by default', () => {
    expect(parsed('ip: {limits: [{limit: 5, window: 30s}]}\n')).toEqual({
      number: [],
      blockAfter: undefined,
      prefix: undefined,
      country: undefined,
      global: [],
      ip: [rule('ip', 5, '30s')],
      destinations: { countries: undefined, blockTypes: ['premium_rate', 'shared_cost', 'non_geographic'] },
      conversion: undefined,
      sweep: undefined,
      blocks: undefined,
      safe: { prefixes: [] },
    });
  });

  it('blocks no number type for an explicit empty block_types, and warns', () => {
    const result = parsePolicyFile('number: {limits: [{limit: 2, window: 1h}]}\ndestinations: {block_types: []}\n');
    expect(result.ok && result.policy.destinations.blockTypes).toEqual([]);
    expect(result.ok && result.warnings.join('\n')).toMatch(/premium_rate[\s\S]*shared_cost/);
  });

  it('accepts an empty file as a policy without rate limits, with a warning', () => {
    const result = parsePolicyFile('# nothing yet\n');
    expect(result).toMatchObject({ ok: true, warnings: [expect.stringMatching(/no rate limit/)] });
  });

  it('reads NO (Norway) as a region, not as false (YAML 1.2, not 1.1)', () => {
    expect(parsed('destinations: {countries: {deny: [NO]}}').destinations.countries).toEqual({ mode: 'deny', regions: ['NO'] });
  });

  it('uses the window as written in ids, plain milliseconds included', () => {
    const policy = parsed('number: {limits: [{limit: 2, window: 90m}, {limit: 3, window: 10800000}, {limit: 9, window: "500ms"}]}');
    expect(policy.number.map((r) => [r.id, r.windowMs])).toEqual([
      ['number:90m', 5_400_000],
      ['number:10800000', 10_800_000],
      ['number:500ms', 500],
    ]);
  });

  it('applies a group shadow flag to every rule of the group, country overrides included', () => {
    const policy = parsed('country: {limits: [{limit: 9, window: 1h}], overrides: {ZZ: [{limit: 1, window: 1h}]}, shadow: true}');
    expect(policy.country?.rules[0]?.shadow).toBe(true);
    expect(policy.country?.overrides.get('ZZ')).toEqual([rule('country', 1, '1h', true, 'ZZ')]);
  });

  it('accepts block_after without number limits, and country overrides without a default list', () => {
    expect(parsed('number: {block_after: {denials: 2, within: 10m, for: 1d}}').blockAfter).toEqual({ denials: 2, withinMs: 600_000, forMs: 86_400_000 });
    expect(parsed('country: {overrides: {NG: [{limit: 5, window: 1h}]}}').country?.rules).toEqual([]);
  });

  it('warns about a rule another rule of its list always outlasts', () => {
    const result = parsePolicyFile('number: {limits: [{limit: 5, window: 1h}, {limit: 3, window: 1d}]}');
    expect(result).toMatchObject({ ok: true, warnings: [expect.stringMatching(/^number:1h .*never decides: number:1d/)] });
  });

  it('parses docs/examples/policy.yaml without warnings, every group present', () => {
    const result = parsePolicyFile(readFileSync(new URL('../../docs/examples/policy.yaml', import.meta.url), 'utf8'));
    expect(result).toMatchObject({ ok: true, warnings: [] });
    const policy = parsed(readFileSync(new URL('../../docs/examples/policy.yaml', import.meta.url), 'utf8'));
    expect(policy.number.length).toBeGreaterThan(0);
    expect(policy.blockAfter).toBeDefined();
    expect(policy.prefix).toBeDefined();
    expect(policy.country?.overrides.size).toBeGreaterThan(0);
    expect(policy.global.every((r) => r.shadow)).toBe(true);
    expect(policy.ip.length).toBeGreaterThan(0);
    expect(policy.destinations.countries?.mode).toBe('allow');
    expect(policy.conversion?.prefix?.rules.length).toBeGreaterThan(0);
    expect(policy.conversion?.country?.baseline).toBeDefined();
    expect(policy.sweep?.rules.length).toBeGreaterThan(0);
    expect(policy.blocks?.escalate.length).toBeGreaterThan(0);
    expect(policy.safe.prefixes.length).toBeGreaterThan(0);
  });
});

describe('parsePolicyFile: every problem, at its line', () => {
  it('reports an unknown top-level key at its line, with the keys it expected', () => {
    expectProblemAt(
      'number:\n  limits: [{limit: 2, window: 1h}]\nglobl:\n  limits: [{limit: 9, window: 1d}]\n',
      3,
      1,
      /unknown key "globl" \(expected number, prefix, country, global, ip, destinations, conversion, sweep, blocks, safe\)/,
    );
  });

  it('reports unknown nested keys at their line, whatever the depth', () => {
    expectProblemAt('number:\n  limits:\n    - {limit: 2, window: 1h, shdow: true}\n', 3, 30, /number\.limits\[0\]\.shdow: unknown key/);
    expectProblemAt(
      'prefix:\n  digits: 3\n  limits: [{limit: 9, window: 1h}]\n  shaddow: true\n',
      4,
      3,
      /prefix\.shaddow: unknown key .*expected digits, limits, shadow/,
    );
    expectProblemAt('destinations:\n  countries: {deny: [CU], alow: [US]}\n', 2, 27, /destinations\.countries\.alow: unknown key/);
  });

  it('refuses block_after anywhere but under number', () => {
    expectProblemAt('ip:\n  limits: [{limit: 9, window: 1h}]\n  block_after: {denials: 3, within: 1h, for: 1d}\n', 3, 3, /ip\.block_after: unknown key/);
  });

  it('reports a bad duration with its value', () => {
    expectProblemAt('number:\n  limits: [{limit: 2, window: 1hr}]\n', 2, 31, /number\.limits\[0\]\.window: "1hr" is not a duration/);
    expectProblemAt('number: {block_after: {denials: 3, within: 1h, for: 400d}}\n', 1, 53, /number\.block_after\.for: "400d" is not a duration/);
    expectProblemAt('ip: {limits: [{limit: 2, window: 0}]}\n', 1, 34, /not a duration/);
  });

  it.each([
    ['0', /must be an integer from 1 to 1000\b/],
    ['-1', /must be an integer from 1 to 1000\b/],
    ['2.5', /must be an integer, not 2.5/],
    ['1001', /must be an integer from 1 to 1000\b/],
    ['"2"', /must be a number, not "2"/],
  ])('reports a bad number limit %s', (limit, message) => {
    expectProblemAt(`# a comment\nnumber:\n  limits: [{limit: ${limit}, window: 1h}]\n`, 3, 20, message);
  });

  it('reports prefix digits out of 3..6', () => {
    expectProblemAt('prefix:\n  digits: 7\n  limits: [{limit: 9, window: 1h}]\n', 2, 11, /prefix\.digits: must be an integer from 3 to 6/);
    expectProblemAt('prefix:\n  digits: 0\n  limits: [{limit: 9, window: 1h}]\n', 2, 11, /prefix\.digits/);
  });

  it('refuses prefix digits 1 and 2 with the 1,000-candidate reason, alongside every other problem', () => {
    for (const digits of [1, 2]) {
      expectProblemAt(
        `prefix:\n  digits: ${digits}\n  limits: [{limit: 9, window: 1h}]\n`,
        2,
        11,
        /prefix\.digits: must be at least 3, not \d: a range must hold at least 1,000 numbers/,
      );
    }
    const both = parsePolicyFile('prefix:\n  digits: 2\n  limits: [{limit: 9, window: 1h}]\nglobal:\n  limits: [{limit: 0, window: 1h}]\n');
    expect(both.ok).toBe(false);
    if (!both.ok) expect(both.problems.map((p) => p.line)).toEqual([2, 5]);
  });

  it('enforces a stored policy with prefix digits below 3 at 3, and says so', () => {
    const stored = parsePolicyFile('prefix:\n  digits: 2\n  limits: [{limit: 9, window: 1h}]\n', { stored: true });
    expect(stored.ok).toBe(true);
    if (!stored.ok) return;
    expect(stored.policy.prefix?.digits).toBe(3);
    expect(stored.adjustments).toEqual([expect.stringMatching(/prefix\.digits 2 is enforced as 3 \(a range must hold at least 1,000 numbers/)]);
    // A valid stored policy is read as it is.
    const fine = parsePolicyFile('prefix:\n  digits: 4\n  limits: [{limit: 9, window: 1h}]\n', { stored: true });
    expect(fine.ok && fine.policy.prefix?.digits).toBe(4);
    expect(fine.ok && fine.adjustments).toEqual([]);
  });

  it('reports unknown regions in overrides (at the key) and in destinations', () => {
    expectProblemAt(
      'country:\n  limits: [{limit: 9, window: 1h}]\n  overrides:\n    XX: [{limit: 1, window: 1h}]\n',
      4,
      5,
      /overrides\.XX: "XX" is not an ISO 3166-1 alpha-2 region/,
    );
    expectProblemAt('country:\n  overrides:\n    gb: [{limit: 1, window: 1h}]\n', 3, 5, /upper case \(GB\)/);
    expectProblemAt('destinations:\n  countries: {deny: [CU, UK]}\n', 2, 26, /countries\.deny\[1\]: "UK" is not an ISO 3166-1 alpha-2 region/);
    expectProblemAt('destinations:\n  countries: {allow: [ZZ]}\n', 2, 23, /"ZZ" is not an ISO/);
  });

  it('refuses a countries control with both allow and deny, or neither', () => {
    expectProblemAt('destinations:\n  countries: {allow: [US], deny: [CU]}\n', 2, 3, /either `allow` or `deny`, not both/);
    expectProblemAt('destinations:\n  countries: {}\n', 2, 3, /either `allow` or `deny`/);
  });

  it('reports a bad block type', () => {
    expectProblemAt(
      'destinations:\n  block_types: [premium_rate, premium]\n',
      2,
      31,
      /block_types\[1\]: "premium" is not a number type; use one of premium_rate/,
    );
  });

  it('reports a duplicate window in one list, by duration, not only by spelling', () => {
    expectProblemAt('global:\n  limits:\n    - {limit: 9, window: 1h}\n    - {limit: 5, window: 60m}\n', 4, 26, /window 60m repeats window 1h/);
    expectProblemAt(
      'country:\n  overrides:\n    GB: [{limit: 9, window: 1d}, {limit: 5, window: 1d}]\n',
      3,
      53,
      /overrides\.GB\[1\]\.window: window 1d repeats/,
    );
  });

  it('reports empty groups and empty limit lists instead of reading them as "no rule"', () => {
    expectProblemAt('global:\nip: {limits: [{limit: 1, window: 1h}]}\n', 1, 1, /global: must be a mapping .*not nothing/);
    expectProblemAt('ip: {limits: []}\n', 1, 6, /needs at least one \{limit, window\}/);
    expectProblemAt('number: {shadow: true}\n', 1, 1, /number: needs `limits` or `block_after`/);
    expectProblemAt('prefix: {limits: [{limit: 1, window: 1h}]}\n', 1, 9, /prefix\.digits: missing/);
  });

  it('refuses YAML that is not a mapping of groups', () => {
    expectProblemAt('- number\n', 1, 1, /must be a mapping/);
  });

  it('reports YAML syntax errors with their lines, all of them', () => {
    const found = problems('number:\n  limits: [{limit: 2, window: 1h}\nip: {limits: [}\n');
    expect(found.length).toBeGreaterThanOrEqual(2);
    expect(found.every((p) => p.message.startsWith('YAML: '))).toBe(true);
    expect(found.map((p) => p.line)).toContain(3);
    expectProblemAt(
      'number: {limits: [{limit: 1, window: 1h}]}\nnumber: {block_after: {denials: 1, within: 1h, for: 1h}}\n',
      2,
      1,
      /YAML: Map keys must be unique/,
    );
    expect(problems('a: 1\n---\nb: 2\n')[0]?.message).toMatch(/^YAML: /);
  });

  it('reports several problems at once, in line order', () => {
    const found = problems(
      [
        'number:',
        '  limits: [{limit: 0, window: 1h}]',
        'prefix:',
        '  digits: 9',
        '  limits: [{limit: 5, window: soon}]',
        'destinations:',
        '  countries: {deny: [CU, XX]}',
        '  block_types: [voip, fax]',
        'extra: true',
      ].join('\n'),
    );
    expect(found.map((p) => [p.line, p.message.split(':')[0]])).toEqual([
      [2, 'number.limits[0].limit'],
      [4, 'prefix.digits'],
      [5, 'prefix.limits[0].window'],
      [7, 'destinations.countries.deny[1]'],
      [8, 'destinations.block_types[1]'],
      [9, 'extra'],
    ]);
  });

  it('refuses an alias bomb instead of expanding it', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 8; i++)
      lines.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(', ')}]`,
      );
    expect(problems(lines.join('\n'))[0]?.message).toMatch(/^YAML: /);
  });
});

const GUARD_EXAMPLE = `conversion:
  answered_at_least: 20s
  pending_after: 30m
  prefix: {digits: 4, unconverted: [{limit: 5, window: 1h}, {limit: 20, window: 1d}]}
  country:
    unconverted: [{limit: 50, window: 1h}]
    baseline: {factor: 0.2, floor: 20, window: 1d, history: 14d}
sweep:
  prefix: {digits: 3, distinct: [{limit: 10, window: 1h}]}
blocks:
  escalate: [5m, 1h, 12h]
  decay: 24h
safe:
  prefixes: ['+1212555', "+4420794"]
`;

describe('parsePolicyFile: conversion, sweep, blocks and safe', () => {
  const sub = (group: 'conversion' | 'sweep', subgroup: string, limit: number, window: string, shadow = false): LimitRule => ({
    ...rule(group, limit, window, shadow),
    id: `${group}:${subgroup}:${window}`,
  });

  it('parses every key to the Policy, with the rule ids of docs/protocol.md', () => {
    expect(parsePolicyFile(GUARD_EXAMPLE)).toMatchObject({ ok: true, warnings: [] });
    const policy = parsed(GUARD_EXAMPLE);
    expect(policy.conversion).toEqual({
      answeredAtLeastMs: 20_000,
      pendingAfterMs: 1_800_000,
      prefix: { digits: 4, rules: [sub('conversion', 'prefix', 5, '1h'), sub('conversion', 'prefix', 20, '1d')] },
      country: {
        rules: [sub('conversion', 'country', 50, '1h')],
        baseline: { factor: 0.2, floor: 20, historyMs: 14 * 86_400_000, rule: { ...rule('conversion', 20, '1d'), id: 'conversion:country:baseline' } },
      },
    } satisfies ConversionPolicy);
    expect(policy.sweep).toEqual({ digits: 3, rules: [sub('sweep', 'prefix', 10, '1h')] });
    expect(policy.blocks).toEqual({ escalateMs: [300_000, 3_600_000, 43_200_000], escalate: ['5m', '1h', '12h'], decayMs: 86_400_000 });
    expect(policy.safe).toEqual({ prefixes: ['+1212555', '+4420794'] });
    expect(formatPolicy(policy).split('\n')[0]).toBe(
      '# rules: conversion:prefix:1h, conversion:prefix:1d, conversion:country:1h, conversion:country:baseline, sweep:prefix:1h, auto:block, destination:premium_rate, destination:shared_cost, destination:non_geographic',
    );
  });

  it('defaults answered_at_least to 10s and pending_after to 15m, and writes them out', () => {
    const policy = parsed('conversion: {prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}]}}');
    expect(policy.conversion).toMatchObject({ answeredAtLeastMs: 10_000, pendingAfterMs: 900_000, country: undefined });
    expect(policyToYaml(policy)).toContain(
      'conversion:\n  answered_at_least: 10s\n  pending_after: 15m\n  prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}]}\n',
    );
  });

  it('takes shadow on a group (covering its subgroups) or on one subgroup', () => {
    const whole = parsed(
      'conversion:\n  shadow: true\n  prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}]}\n  country: {baseline: {factor: 1, floor: 20, window: 1d, history: 14d}}\n',
    );
    expect(whole.conversion?.prefix?.rules.every((r) => r.shadow)).toBe(true);
    expect(whole.conversion?.country?.baseline?.rule.shadow).toBe(true);
    const one = parsed(
      'conversion:\n  prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}], shadow: true}\n  country: {unconverted: [{limit: 9, window: 1h}]}\nsweep: {shadow: true, prefix: {digits: 3, distinct: [{limit: 10, window: 1h}]}}\n',
    );
    expect(one.conversion?.prefix?.rules[0]?.shadow).toBe(true);
    expect(one.conversion?.country?.rules[0]?.shadow).toBe(false);
    expect(one.sweep?.rules[0]?.shadow).toBe(true);
    expect(parsed(policyToYaml(one))).toEqual(one);
    expect(formatPolicy(one).split('\n')[1]).toBe('# shadow (reported, never deny): conversion:prefix:1h, sweep:prefix:1h');
  });

  it('lets block_after leave out `for` when blocks decides (no cap), takes it as a cap beside blocks, and wants one of them', () => {
    const policy = parsed('number: {block_after: {denials: 3, within: 1h}}\nblocks: {escalate: [5m, 1h], decay: 1d}\n');
    expect(policy.blockAfter).toEqual({ denials: 3, withinMs: 3_600_000, forMs: undefined });
    expect(policyToYaml(policy)).toContain('block_after: {denials: 3, within: 1h}\n');
    expect(parsed(policyToYaml(policy))).toEqual(policy);
    const capped = parsePolicyFile('number:\n  block_after: {denials: 3, within: 1h, for: 2h}\nblocks: {escalate: [5m, 1h, 12h], decay: 1d}\n');
    expect(capped).toMatchObject({ ok: true, warnings: [], policy: { blockAfter: { denials: 3, withinMs: 3_600_000, forMs: 7_200_000 } } });
    if (capped.ok) {
      expect(policyToYaml(capped.policy)).toContain('block_after: {denials: 3, within: 1h, for: 2h}\n');
      expect(parsed(policyToYaml(capped.policy))).toEqual(capped.policy);
    }
    expectProblemAt('number:\n  block_after: {denials: 3, within: 1h}\n', 2, 3, /number\.block_after: needs `for` .*or a `blocks` group/);
    // Reported beside the other problems of the file, not instead of them.
    const both = problems('number:\n  block_after: {denials: 3, within: 1h}\nsweep: {prefix: {digits: 3, distinct: []}}\n');
    expect(both.map((p) => p.line)).toEqual([2, 3]);
  });

  it('warns when block_after.for caps every escalation step, so that its blocks never grow', () => {
    const result = parsePolicyFile('number:\n  block_after: {denials: 3, within: 1h, for: 5m}\nblocks: {escalate: [5m, 1h], decay: 1d}\n');
    expect(result).toMatchObject({ ok: true, warnings: [expect.stringMatching(/^number\.block_after\.for \(5m\) caps every blocks\.escalate step/)] });
    expect(parsePolicyFile('number:\n  block_after: {denials: 3, within: 1h, for: 6m}\nblocks: {escalate: [5m, 1h], decay: 1d}\n')).toMatchObject({
      ok: true,
      warnings: [],
    });
  });

  it('refuses ranges narrower than 1,000 numbers in conversion and sweep, with the reason, stored or not', () => {
    for (const stored of [false, true]) {
      const result = parsePolicyFile('sweep:\n  prefix: {digits: 2, distinct: [{limit: 10, window: 1h}]}\n', { stored });
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.problems[0]?.message).toMatch(/sweep\.prefix\.digits: must be at least 3, not 2: a range must hold at least 1,000 numbers/);
    }
    expectProblemAt(
      'conversion:\n  prefix: {digits: 7, unconverted: [{limit: 5, window: 1h}]}\n',
      2,
      20,
      /conversion\.prefix\.digits: must be an integer from 3 to 6/,
    );
  });

  it('requires a rule in every group and subgroup, and refuses unknown keys in each', () => {
    expectProblemAt('conversion: {answered_at_least: 10s}\n', 1, 1, /conversion: needs `prefix` or `country`/);
    expectProblemAt('conversion:\n  country: {shadow: true}\n', 2, 3, /conversion\.country: needs `unconverted` or `baseline`/);
    expectProblemAt('sweep: {shadow: true}\n', 1, 8, /sweep\.prefix: missing/);
    // The other group's key is not a synonym: unknown, and the right one missing.
    expect(problems('sweep:\n  prefix: {digits: 3, limits: [{limit: 10, window: 1h}]}\n').map((p) => p.message)).toEqual([
      'sweep.prefix.distinct: missing',
      'sweep.prefix.limits: unknown key "limits" (expected digits, distinct, shadow)',
    ]);
    expect(problems('conversion:\n  prefix: {digits: 3, distinct: [{limit: 5, window: 1h}]}\n').map((p) => p.message)).toEqual([
      'conversion.prefix.unconverted: missing',
      'conversion.prefix.distinct: unknown key "distinct" (expected digits, unconverted, shadow)',
    ]);
    expectProblemAt('blocks: {escalate: [5m], decay: 1d, max: 12h}\n', 1, 37, /blocks\.max: unknown key "max" \(expected escalate, decay\)/);
    expectProblemAt('blocks: {escalate: [5m]}\n', 1, 9, /blocks\.decay: missing/);
    expect(problems("safe: {prefix: ['+1212555']}\n").map((p) => p.message)).toEqual([
      'safe.prefixes: missing',
      'safe.prefix: unknown key "prefix" (expected prefixes)',
    ]);
  });

  it('checks the baseline: factor a ratio in (0, 10], floor a positive integer, history at least a window', () => {
    const base = (b: string) => `conversion:\n  country:\n    baseline: {${b}}\n`;
    expectProblemAt(base('factor: 0, floor: 20, window: 1d, history: 14d'), 3, 24, /factor: must be a ratio above 0/);
    expectProblemAt(
      base('factor: 20, floor: 20, window: 1d, history: 14d'),
      3,
      24,
      /factor: must be a ratio above 0 and at most 10, not 20 \(for 20% write 0\.2\)/,
    );
    expectProblemAt(base('factor: 0.2, floor: 0, window: 1d, history: 14d'), 3, 36, /floor: must be an integer from 1/);
    expectProblemAt(base('factor: 0.2, floor: 20, window: 1d, history: 12h'), 3, 61, /history: 12h is shorter than the window 1d/);
    expectProblemAt(base('factor: 0.2, floor: 20, window: 1d'), 3, 15, /baseline\.history: missing/);
    expect(parsed(base('factor: 10, floor: 1, window: 1d, history: 1d')).conversion?.country?.baseline?.historyMs).toBe(86_400_000);
  });

  it('bounds pending_after by the 7 days outcomes are accepted for', () => {
    expectProblemAt(
      'conversion:\n  pending_after: 8d\n  prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}]}\n',
      2,
      18,
      /pending_after: must be at most 7d/,
    );
    expect(parsed('conversion:\n  pending_after: 7d\n  prefix: {digits: 3, unconverted: [{limit: 5, window: 1h}]}\n').conversion?.pendingAfterMs).toBe(
      7 * 86_400_000,
    );
  });

  it('wants escalation steps shortest first, each longer than the last, at least one and at most ten', () => {
    expectProblemAt('blocks: {escalate: [1h, 5m], decay: 1d}\n', 1, 25, /blocks\.escalate\[1\]: 5m is not longer than 1h before it/);
    expectProblemAt('blocks: {escalate: [1h, 60m], decay: 1d}\n', 1, 25, /60m is not longer than 1h/);
    expectProblemAt('blocks: {escalate: [], decay: 1d}\n', 1, 10, /blocks\.escalate: list at least one block length/);
    expectProblemAt(`blocks: {escalate: [${Array.from({ length: 11 }, (_, i) => `${i + 1}m`).join(', ')}], decay: 1d}\n`, 1, 10, /at most 10 block lengths/);
    expectProblemAt('blocks: {escalate: [5m, soon], decay: 1d}\n', 1, 25, /blocks\.escalate\[1\]: "soon" is not a duration/);
  });

  it('takes safe prefixes in E.164 form, quoted, each a range of at least 1,000 numbers, duplicates once', () => {
    expect(parsed("safe: {prefixes: ['+1212555', '+1212555', '+44']}\nsweep: {prefix: {digits: 3, distinct: [{limit: 1, window: 1h}]}}").safe).toEqual({
      prefixes: ['+1212555', '+44'],
    });
    expectProblemAt('safe:\n  prefixes: [+1212555]\n', 2, 14, /safe\.prefixes\[0\]: is a number: write prefixes in quotes \('\+1212555'\)/);
    expectProblemAt("safe:\n  prefixes: ['1212555']\n", 2, 14, /safe\.prefixes\[0\]: is not an E\.164 prefix/);
    expectProblemAt("safe:\n  prefixes: ['+1 212 555']\n", 2, 14, /is not an E\.164 prefix/);
    expectProblemAt("safe:\n  prefixes: ['+0123']\n", 2, 14, /is not an E\.164 prefix/);
    expectProblemAt('safe:\n  prefixes: [null]\n', 2, 14, /must be an E\.164 prefix in quotes/);
    // A number (or 10 of them) in the clear in the stored policy: refused, pointing at the allow
    // list, and not repeated in the problem (which is printed).
    expectProblemAt(
      "safe:\n  prefixes: ['+12125550123']\n",
      2,
      14,
      /^safe\.prefixes\[0\]: is too long: numbers under it have at most 11 digits, so it leaves fewer than 3 .*Use at most 8 digits, or for one number `ratelimit allow <number>`/,
    );
    expect(
      problems("safe:\n  prefixes: ['+12125550123', '+1 415 555 2671', 14155552671]\n")
        .map((p) => p.message)
        .join('\n'),
    ).not.toMatch(/\d{9}|2671/);
    expectProblemAt("safe:\n  prefixes: ['+121255501']\n", 2, 14, /too long/);
    expect(parsed("safe:\n  prefixes: ['+12125550']\nsweep: {prefix: {digits: 3, distinct: [{limit: 1, window: 1h}]}}").safe.prefixes).toEqual(['+12125550']);
    const many = Array.from({ length: 10_001 }, (_, i) => `'+44${String(i).padStart(5, '0')}'`).join(', ');
    expectProblemAt(`safe:\n  prefixes: [${many}]\n`, 2, 3, /safe\.prefixes: list at most 10000 prefixes/);
  });

  it('never throws on any value under the new groups: a policy or problems, each with a line', () => {
    const value = fc.oneof(
      fc.anything({ maxDepth: 3 }),
      fc.constantFrom('5m', '1h', '+1212555', 3, 0.2, -1, null, [], {}, ['5m', '1h'], { limit: 5, window: '1h' }),
    );
    const group = fc.dictionary(
      fc.constantFrom(
        'answered_at_least',
        'pending_after',
        'prefix',
        'country',
        'baseline',
        'digits',
        'unconverted',
        'distinct',
        'escalate',
        'decay',
        'prefixes',
        'shadow',
        'x',
      ),
      fc.oneof(value, fc.dictionary(fc.constantFrom('digits', 'unconverted', 'distinct', 'baseline', 'factor', 'floor', 'window', 'history', 'shadow'), value)),
    );
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom('conversion', 'sweep', 'blocks', 'safe', 'number'), group), (doc) => {
        const result = parsePolicyFile(stringify(doc));
        if (!result.ok) for (const p of result.problems) expect(p.line).toBeGreaterThanOrEqual(1);
      }),
      { numRuns: 300 },
    );
  });

  it('prints a long safe list one prefix a line, quoted, and reads it back', () => {
    const list = Array.from({ length: 1000 }, (_, i) => `+44${String(i).padStart(5, '0')}`);
    const policy = parsed(`safe:\n  prefixes: [${list.map((p) => `'${p}'`).join(', ')}]\nsweep: {prefix: {digits: 3, distinct: [{limit: 1, window: 1h}]}}\n`);
    const yaml = policyToYaml(policy);
    expect(yaml).toContain('safe:\n  prefixes:\n    - "+4400000"\n    - "+4400001"\n');
    expect(parsed(yaml)).toEqual(policy);
  });

  it('warns when blocks has nothing to escalate, and when safe prefixes exempt from nothing', () => {
    const blocksOnly = parsePolicyFile('number: {limits: [{limit: 2, window: 1h}]}\nblocks: {escalate: [5m], decay: 1d}\n');
    expect(blocksOnly).toMatchObject({ ok: true, warnings: [expect.stringMatching(/^blocks has nothing to escalate/)] });
    const shadowSweep = parsePolicyFile(
      'sweep: {shadow: true, prefix: {digits: 3, distinct: [{limit: 10, window: 1h}]}}\nblocks: {escalate: [5m], decay: 1d}\n',
    );
    expect(shadowSweep).toMatchObject({ ok: true, warnings: [expect.stringMatching(/^blocks has nothing to escalate/)] });
    const safeOnly = parsePolicyFile("number: {limits: [{limit: 2, window: 1h}]}\nsafe: {prefixes: ['+1212555']}\n");
    expect(safeOnly).toMatchObject({ ok: true, warnings: [expect.stringMatching(/^safe\.prefixes .* changes nothing/)] });
    // A policy with only a sweep rule has a rate limit.
    expect(parsePolicyFile('sweep: {prefix: {digits: 3, distinct: [{limit: 10, window: 1h}]}}\n')).toMatchObject({ ok: true, warnings: [] });
  });
});

// Random valid policies, built the way a file describes them (one shadow flag per group).
const windowArb = fc
  .oneof(
    fc.tuple(fc.integer({ min: 1, max: 300 }), fc.constantFrom('ms', 's', 'm', 'h', 'd')).map(([n, unit]) => `${n}${unit}`),
    fc.integer({ min: 1, max: 31_622_400_000 }).map(String),
  )
  .filter((w) => parseDurationMs(w) !== null);

const listArb = (group: GroupName, maxLimit: number, shadow: boolean, region?: string, minLength = 1) =>
  fc
    .uniqueArray(fc.tuple(windowArb, fc.integer({ min: 1, max: maxLimit })), { minLength, maxLength: 3, selector: ([w]) => parseDurationMs(w) })
    .map((pairs) => pairs.map(([w, limit]) => rule(group, limit, w, shadow, region)));

const regionArb = fc.constantFrom(...getCountries());

// A `{limit, window}` list of a conversion or sweep subgroup: ids `conversion:prefix:1h`, ...
const subgroupListArb = (group: 'conversion' | 'sweep', subgroup: string, shadow: boolean, minLength = 1) =>
  listArb(group, 1e9, shadow, undefined, minLength).map((rules) => rules.map((r) => ({ ...r, id: `${group}:${subgroup}:${r.window}` })));

const durationMsArb = (maxMs: number) => fc.integer({ min: 1, max: maxMs });

const conversionArb = (prefixShadow: boolean, countryShadow: boolean): fc.Arbitrary<ConversionPolicy> =>
  fc
    .record({
      answeredAtLeastMs: durationMsArb(31_622_400_000),
      pendingAfterMs: durationMsArb(7 * 86_400_000),
      prefix: fc.option(fc.record({ digits: fc.integer({ min: 3, max: 6 }), rules: subgroupListArb('conversion', 'prefix', prefixShadow) }), {
        nil: undefined,
      }),
      country: fc.option(
        fc
          .record({
            rules: subgroupListArb('conversion', 'country', countryShadow, 0),
            baseline: fc.option(
              fc
                .record({
                  factor: fc.double({ min: Number.MIN_VALUE, max: 10, noNaN: true }),
                  floor: fc.integer({ min: 1, max: 1e9 }),
                  window: windowArb,
                  extraMs: fc.integer({ min: 0, max: 31_622_400_000 }),
                })
                .filter(({ window, extraMs }) => (parseDurationMs(window) as number) + extraMs <= 31_622_400_000)
                .map(({ factor, floor, window, extraMs }) => ({
                  factor,
                  floor,
                  historyMs: (parseDurationMs(window) as number) + extraMs,
                  rule: { ...rule('conversion', floor, window, countryShadow), id: 'conversion:country:baseline' },
                })),
              { nil: undefined },
            ),
          })
          .filter((c) => c.rules.length > 0 || c.baseline !== undefined),
        { nil: undefined },
      ),
    })
    .filter((c) => c.prefix !== undefined || c.country !== undefined);

const blocksArb: fc.Arbitrary<BlocksPolicy> = fc
  .record({ steps: fc.uniqueArray(windowArb, { minLength: 1, maxLength: 4, selector: (w) => parseDurationMs(w) }), decayMs: durationMsArb(31_622_400_000) })
  .map(({ steps, decayMs }) => {
    const escalate = [...steps].sort((a, b) => (parseDurationMs(a) as number) - (parseDurationMs(b) as number));
    return { escalate, escalateMs: escalate.map((w) => parseDurationMs(w) as number), decayMs };
  });

// Prefixes that leave at least 3 digits of any number under them: a calling code and a few digits.
const safePrefixArb = fc
  .tuple(fc.constantFrom('1', '44', '33', '49', '234', '91', '61'), fc.stringMatching(/^[0-9]{0,4}$/))
  .map(([code, rest]) => `+${code}${rest}`);

const policyArb: fc.Arbitrary<Policy> = fc
  .record({
    shadow: fc.record({
      number: fc.boolean(),
      prefix: fc.boolean(),
      country: fc.boolean(),
      global: fc.boolean(),
      ip: fc.boolean(),
      conversionPrefix: fc.boolean(),
      conversionCountry: fc.boolean(),
      sweep: fc.boolean(),
    }),
    blocks: fc.option(blocksArb, { nil: undefined }),
  })
  .chain(({ shadow, blocks }) =>
    fc.record({
      number: listArb('number', 1000, shadow.number, undefined, 0),
      blockAfter: fc.option(
        fc.record({
          denials: fc.integer({ min: 1, max: 1000 }),
          withinMs: fc.integer({ min: 1, max: 31_622_400_000 }),
          // Without a blocks group `for` is required (the block's length); with one it is an
          // optional cap on each step.
          forMs: blocks ? fc.option(fc.integer({ min: 1, max: 31_622_400_000 }), { nil: undefined }) : fc.integer({ min: 1, max: 31_622_400_000 }),
        }),
        { nil: undefined },
      ),
      prefix: fc.option(fc.record({ digits: fc.integer({ min: 3, max: 6 }), rules: listArb('prefix', 1e9, shadow.prefix) }), { nil: undefined }),
      country: fc.option(
        fc
          .tuple(listArb('country', 1e9, shadow.country, undefined, 0), fc.uniqueArray(fc.oneof(regionArb, fc.constant('ZZ')), { maxLength: 3 }))
          .chain(([rules, codes]) =>
            fc.tuple(...codes.map((code) => listArb('country', 1e9, shadow.country, code))).map((lists) => ({
              rules,
              overrides: new Map(codes.map((code, i) => [code, lists[i] as LimitRule[]])),
            })),
          )
          .filter((c) => c.rules.length > 0 || c.overrides.size > 0),
        { nil: undefined },
      ),
      global: listArb('global', 1e9, shadow.global, undefined, 0),
      ip: listArb('ip', 1_000_000, shadow.ip, undefined, 0),
      destinations: fc.record({
        countries: fc.option(
          fc.record({ mode: fc.constantFrom('allow' as const, 'deny' as const), regions: fc.uniqueArray(regionArb, { minLength: 1, maxLength: 5 }) }),
          { nil: undefined },
        ),
        blockTypes: fc.uniqueArray(fc.constantFrom(...NUMBER_TYPES), { maxLength: 4 }),
      }),
      conversion: fc.option(conversionArb(shadow.conversionPrefix, shadow.conversionCountry), { nil: undefined }),
      sweep: fc.option(fc.record({ digits: fc.integer({ min: 3, max: 6 }), rules: subgroupListArb('sweep', 'prefix', shadow.sweep) }), { nil: undefined }),
      blocks: fc.constant(blocks),
      safe: fc.record({ prefixes: fc.uniqueArray(safePrefixArb, { maxLength: 5 }) }),
    }),
  );

describe('policyToYaml', () => {
  it("prints docs/protocol.md's example back to the same policy, in its layout", () => {
    const policy = parsed(PROTOCOL_EXAMPLE);
    const yaml = policyToYaml(policy);
    expect(yaml).toContain('  limits: [{limit: 2, window: 1h}, {limit: 5, window: 1d}]\n');
    expect(yaml).toContain('  block_after: {denials: 3, within: 1h, for: 1d}\n');
    expect(yaml).toContain('    GB: [{limit: 500, window: 1h}]\n');
    expect(parsed(yaml)).toEqual(policy);
  });

  it('round-trips every valid policy through parsePolicyFile', () => {
    fc.assert(
      fc.property(policyArb, (policy) => {
        expect(parsed(policyToYaml(policy))).toEqual(policy);
        expect(parsed(formatPolicy(policy))).toEqual(policy);
      }),
      { numRuns: 300 },
    );
  });

  it('formatPolicy names every rule id and the shadow ones in a header', () => {
    const text = formatPolicy(parsed(PROTOCOL_EXAMPLE));
    expect(text.split('\n')[0]).toBe(
      '# rules: number:1h, number:1d, number:block_after, prefix:1h, country:1h, country:GB:1h, country:NG:1h, global:1d, ip:1h, destination:country, destination:premium_rate, destination:shared_cost',
    );
    expect(text.split('\n')[1]).toBe('# shadow (reported, never deny): global:1d');
  });

  it('refuses to print a group mixing shadow and enforcing rules, which no file can say', () => {
    const policy = parsed('global: {limits: [{limit: 9, window: 1h}, {limit: 99, window: 1d}]}');
    const mixed: Policy = { ...policy, global: [policy.global[0] as LimitRule, { ...(policy.global[1] as LimitRule), shadow: true }] };
    expect(() => policyToYaml(mixed)).toThrow(/global mixes shadow and enforcing/);
  });
});

describe('defaultPolicy', () => {
  it('is the RATE_LIMIT_* number and ip rules, the default destination block, and the conversion, sweep and blocks groups of docs/protocol.md', () => {
    const policy = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 90_000 });
    expect(policy).toEqual({
      number: [rule('number', 2, '1h')],
      blockAfter: undefined,
      prefix: undefined,
      country: undefined,
      global: [],
      ip: [rule('ip', 20, '90s')],
      destinations: { countries: undefined, blockTypes: ['premium_rate', 'shared_cost', 'non_geographic'] },
      conversion: {
        answeredAtLeastMs: 10_000,
        pendingAfterMs: 900_000,
        prefix: { digits: 3, rules: [{ ...rule('conversion', 5, '1h'), id: 'conversion:prefix:1h' }] },
        country: {
          rules: [],
          baseline: { factor: 1, floor: 10, historyMs: 14 * 86_400_000, rule: { ...rule('conversion', 10, '1h'), id: 'conversion:country:baseline' } },
        },
      },
      sweep: { digits: 3, rules: [{ ...rule('sweep', 10, '1h'), id: 'sweep:prefix:1h' }] },
      blocks: { escalateMs: [300_000, 3_600_000, 43_200_000], escalate: ['5m', '1h', '12h'], decayMs: 86_400_000 },
      safe: { prefixes: [] },
    });
    expect(parsed(policyToYaml(policy))).toEqual(policy);
    expect(formatDurationMs(policy.number[0]?.windowMs as number)).toBe(policy.number[0]?.window);
  });

  it('is what docs/choosing-limits.md says it is, rule by rule', () => {
    const doc = readFileSync(new URL('../../docs/choosing-limits.md', import.meta.url), 'utf8');
    const yaml = /^## \d+\. The default policy[\s\S]*?```yaml\n([\s\S]*?)```/m.exec(doc)?.[1];
    expect(yaml).toBeDefined();
    const policy = defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 3_600_000 });
    const documented = parsed(yaml as string);
    expect({ conversion: documented.conversion, sweep: documented.sweep, blocks: documented.blocks }).toEqual({
      conversion: policy.conversion,
      sweep: policy.sweep,
      blocks: policy.blocks,
    });
  });
});

describe('describePolicyChanges', () => {
  const base = parsed(PROTOCOL_EXAMPLE);
  const edit = (from: string, to: string): Policy => {
    expect(PROTOCOL_EXAMPLE).toContain(from);
    return parsed(PROTOCOL_EXAMPLE.replace(from, to));
  };

  it('says nothing when nothing changed', () => {
    expect(describePolicyChanges(base, parsed(policyToYaml(base)))).toEqual([]);
  });

  it('names a changed limit by rule id', () => {
    expect(describePolicyChanges(base, edit('{limit: 10, window: 1h}', '{limit: 20, window: 1h}'))).toEqual(['prefix:1h limit 10 -> 20']);
  });

  it('names added and removed rules, a shadow switch, block_after and prefix digits', () => {
    const after = edit('{limit: 5, window: 1d}]', '{limit: 5, window: 2d}]');
    expect(describePolicyChanges(base, after)).toEqual(['removed number:1d (5 per 1d)', 'added number:2d (5 per 2d)']);
    expect(describePolicyChanges(base, edit('  shadow: true ', '  shadow: false'))).toEqual(['global:1d shadow -> enforcing']);
    expect(describePolicyChanges(base, edit('{denials: 3, within: 1h, for: 24h}', '{denials: 5, within: 1h, for: 2d}'))).toEqual([
      'number:block_after denials 3 -> 5, for 1d -> 2d',
    ]);
    expect(describePolicyChanges(base, edit('digits: 3', 'digits: 4'))).toEqual(['prefix digits 3 -> 4 (prefix counts start over)']);
  });

  it('names destination changes', () => {
    const after = edit('countries: {deny: [CU, KP]}', 'countries: {allow: [US]}');
    expect(describePolicyChanges(base, after)).toEqual(['destination:country deny CU, KP -> allow US']);
    expect(describePolicyChanges(base, edit('[CU, KP]', '[KP, CU]'))).toEqual([]);
    expect(describePolicyChanges(base, edit('block_types: [premium_rate, shared_cost]', 'block_types: [premium_rate, voip]'))).toEqual([
      'removed destination:shared_cost (shared_cost numbers can be called)',
      'added destination:voip (voip numbers are denied)',
    ]);
  });

  it('names changes to conversion, sweep, blocks and safe', () => {
    const from = parsed(GUARD_EXAMPLE);
    const to = (a: string, b: string): Policy => {
      expect(GUARD_EXAMPLE).toContain(a);
      return parsed(GUARD_EXAMPLE.replace(a, b));
    };
    expect(describePolicyChanges(from, parsed(policyToYaml(from)))).toEqual([]);
    expect(describePolicyChanges(from, to('factor: 0.2, floor: 20', 'factor: 0.5, floor: 30'))).toEqual([
      'conversion:country:baseline factor 0.2 -> 0.5, floor 20 -> 30',
    ]);
    expect(describePolicyChanges(from, to('{limit: 10, window: 1h}', '{limit: 12, window: 1h}'))).toEqual(['sweep:prefix:1h limit 10 -> 12']);
    expect(describePolicyChanges(from, to('digits: 4', 'digits: 3'))).toEqual(['conversion.prefix digits 4 -> 3 (conversion.prefix counts start over)']);
    expect(describePolicyChanges(from, to('escalate: [5m, 1h, 12h]', 'escalate: [5m, 1h, 1d]'))).toEqual([
      'automatic blocks escalate 5m, 1h, 12h -> 5m, 1h, 1d',
    ]);
    expect(describePolicyChanges(from, to('answered_at_least: 20s', 'answered_at_least: 30s'))).toEqual(['conversion answered_at_least 20s -> 30s']);
    expect(describePolicyChanges(from, to(`['+1212555', "+4420794"]`, `['+1212555', '+33612']`))).toEqual([
      'added safe prefixes +33612 (never denied by conversion, sweep or automatic blocks)',
      'removed safe prefixes +4420794',
    ]);
    expect(describePolicyChanges(from, to('blocks:\n  escalate: [5m, 1h, 12h]\n  decay: 24h\n', ''))).toEqual([
      'removed automatic blocks (blocks last 5m, then 1h, then 12h; 1d without one starts over): ranges are no longer blocked by sweep and conversion rules',
    ]);
    const uncapped = parsed(`number: {block_after: {denials: 3, within: 1h}}\n${GUARD_EXAMPLE}`);
    const capped = parsed(`number: {block_after: {denials: 3, within: 1h, for: 2h}}\n${GUARD_EXAMPLE}`);
    expect(describePolicyChanges(from, uncapped)).toEqual(['added number:block_after (3 denials within 1h block for the escalation step)']);
    expect(describePolicyChanges(uncapped, capped)).toEqual(['number:block_after for the escalation step -> the escalation step, at most 2h']);
    const lines = describePolicyChanges(base, from);
    expect(lines).toContain('added conversion:country:baseline (max(20, 0.2 x most converted in 1d over 14d) per 1d)');
    expect(lines).toContain('added sweep:prefix:1h (10 per 1h)');
  });

  it('describes the switch from the default policy to a file', () => {
    const lines = describePolicyChanges(defaultPolicy({ phoneMax: 2, phoneWindowMs: 3_600_000, ipMax: 20, ipWindowMs: 3_600_000 }), base);
    expect(lines).toContain('added number:1d (5 per 1d)');
    expect(lines).toContain('added global:1d (10000 per 1d, shadow)');
    expect(lines).toContain('destination:country every country -> deny CU, KP');
    expect(lines).not.toContainEqual(expect.stringMatching(/number:1h|ip:1h/));
  });
});
