// The environment `ratelimit serve` reads, for the end of its --help: support staff reaching a
// production daemon need the variables (auth above all) as much as the flags. Rendered from the
// one table of settings (src/core/settings.ts), which README.md's configuration table follows.
import { SETTING_GROUPS, SETTINGS, type Setting } from '../core/settings.js';

function line(s: Setting): string {
  const extras = [s.alias ? `or ${s.alias}` : undefined, s.flag, s.default !== undefined ? `default ${s.default}` : undefined].filter(Boolean);
  return extras.length > 0 ? `${s.help} (${extras.join('; ')})` : s.help;
}

export function serveEnvironmentHelp(): string {
  const served = SETTINGS.filter((s) => !s.adminOnly);
  const width = Math.max(...served.map((s) => s.env.length));
  const lines = ['', 'Environment (flags override variables):'];
  for (const group of SETTING_GROUPS) {
    lines.push(`  ${group}:`);
    for (const s of served.filter((x) => x.group === group)) lines.push(`    ${s.env.padEnd(width)}  ${line(s)}`);
  }
  return lines.join('\n');
}

/** A flag's help, from the setting it sets: what it means, its variable and its default. */
export function flagHelp(env: string): string {
  const s = SETTINGS.find((x) => x.env === env);
  if (!s) throw new Error(`no setting ${env} in src/core/settings.ts`);
  const vars = [s.env, s.alias].filter(Boolean).join(', ');
  return `${s.help} (env ${vars}${s.default !== undefined ? `, default ${s.default}` : ''})`;
}
