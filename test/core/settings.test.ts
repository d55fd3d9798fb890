// The one table of settings (src/core/settings.ts) against everything else that names them:
// the variables resolveConfig reads and the defaults it resolves to, README.md's configuration
// table and docs/protocol.md's. A setting added, dropped or changed in one place alone fails here.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveConfig, type Config } from '../../src/core/config.js';
import { parseDurationMs } from '../../src/core/duration.js';
import { SETTINGS, settingNamed, type Setting } from '../../src/core/settings.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
// Set by Fly on its machines, never by an operator: read, but not settings.
const PLATFORM = ['FLY_REGION', 'FLY_APP_NAME', 'FLY_MACHINE_ID'];

/** What a written default means: durations by their length (`60s` is `1m`), the rest as written. */
function meaning(s: Setting, text: string): string {
  return s.kind === 'duration' ? String(parseDurationMs(text)) : text;
}

interface Row {
  settings: Setting[];
  unknown: string[];
  flags: string;
  defaults: string;
}

/** The rows of the markdown table under `heading` whose first cell names variables. */
function tableRows(markdown: string, heading: string): Row[] {
  const start = markdown.indexOf(heading);
  expect(start, heading).toBeGreaterThanOrEqual(0);
  const lines = markdown.slice(start).split('\n');
  const first = lines.findIndex((l) => l.startsWith('|'));
  const rows: Row[] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    const cells = line
      .slice(1, -1)
      .split(/(?<!\\)\|/)
      .map((c) => c.trim());
    const names = [...cells[0]!.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!);
    const settings = [...new Set(names.map(settingNamed).filter((s): s is Setting => s !== undefined))];
    rows.push({ settings, unknown: names.filter((n) => !settingNamed(n)), flags: cells[1] ?? '', defaults: cells[2] ?? '' });
  }
  expect(rows.length, heading).toBeGreaterThan(5);
  return rows;
}

/** Every disagreement between a documented table and the settings it is meant to list. */
function disagreements(rows: Row[], expected: readonly Setting[]): string[] {
  const out: string[] = [];
  for (const row of rows) {
    for (const name of row.unknown) out.push(`${name}: documented, but not in src/core/settings.ts`);
    // The leading `value`s of the default cell, one per setting of the row, in order.
    const values = /^`/.test(row.defaults) ? [...row.defaults.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).slice(0, row.settings.length) : [];
    row.settings.forEach((s, i) => {
      const documented = values[i];
      if (s.default === undefined && documented !== undefined) out.push(`${s.env}: documented default \`${documented}\`, none in the table`);
      if (s.default !== undefined && (documented === undefined || meaning(s, documented) !== meaning(s, s.default))) {
        out.push(`${s.env}: documented default ${documented === undefined ? 'missing' : `\`${documented}\``}, the table's is \`${s.default}\``);
      }
      if (s.flag && !row.flags.includes(`\`${s.flag}\``)) out.push(`${s.env}: flag ${s.flag} not documented`);
    });
    if (row.settings.every((s) => !s.flag) && row.flags.includes('--'))
      out.push(`${row.settings.map((s) => s.env).join(', ')}: a flag is documented, none in the table`);
  }
  const listed = new Set(rows.flatMap((r) => r.settings));
  for (const s of expected) if (!listed.has(s)) out.push(`${s.env}: in the table, not documented`);
  for (const s of listed) if (!expected.includes(s)) out.push(`${s.env}: documented, but not meant to be here`);
  return out;
}

describe('the table of settings', () => {
  it('names each variable and flag once', () => {
    const names = SETTINGS.flatMap((s) => [s.env, s.alias, s.flag].filter((n): n is string => n !== undefined));
    expect(names.length).toBe(new Set(names).size);
  });

  it('README.md lists every setting with its flag and default', async () => {
    const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
    expect(disagreements(tableRows(readme, '## Configuration'), SETTINGS)).toStrictEqual([]);
  });

  it("docs/protocol.md lists the contract's settings with their flags and defaults", async () => {
    const protocol = await readFile(path.join(ROOT, 'docs', 'protocol.md'), 'utf8');
    expect(
      disagreements(
        tableRows(protocol, '## Configuration'),
        SETTINGS.filter((s) => s.contract),
      ),
    ).toStrictEqual([]);
  });

  it('the check sees a missing setting, a wrong default and a stray flag (so the two above can fail)', () => {
    const table =
      '## Configuration\n\n| variable | flag | default |\n|---|---|---|\n| `PORT`, `HOST` | `--port` | `8080`, `127.0.0.1` |\n| `NO_SUCH` | | |\n| `LOG_LEVEL` | `--log` | `info` |\n| `A` | | |\n| `B` | | |\n| `C` | | |\n';
    const expected = [settingNamed('PORT')!, settingNamed('HOST')!, settingNamed('LOG_LEVEL')!, settingNamed('RATELIMIT_DB_TIMEOUT')!];
    expect(disagreements(tableRows(table, '## Configuration'), expected)).toStrictEqual([
      "PORT: documented default `8080`, the table's is `8081`",
      'HOST: flag --host not documented',
      'NO_SUCH: documented, but not in src/core/settings.ts',
      'LOG_LEVEL: a flag is documented, none in the table',
      'RATELIMIT_DB_TIMEOUT: in the table, not documented',
    ]);
  });

  it('names every variable resolveConfig reads, and every setting is read somewhere in src', async () => {
    const source = await readFile(path.join(ROOT, 'src', 'core', 'config.ts'), 'utf8');
    const read = new Set([...source.matchAll(/(?:env\.|')([A-Z][A-Z0-9]*_[A-Z0-9_]+|PORT|HOST|DEBUG)\b(?!\s+is)/g)].map((m) => m[1]!));
    expect(read.size).toBeGreaterThan(25);
    expect([...read].filter((n) => !settingNamed(n) && !PLATFORM.includes(n))).toStrictEqual([]);

    const files = (await readdir(path.join(ROOT, 'src'), { recursive: true, withFileTypes: true })).filter(
      (e) => e.isFile() && /\.tsx?$/.test(e.name) && !['settings.ts', 'serve-env.ts'].includes(e.name),
    );
    const everything = (await Promise.all(files.map((e) => readFile(path.join(e.parentPath, e.name), 'utf8')))).join('\n');
    expect(SETTINGS.filter((s) => !new RegExp(`\\b${s.env}\\b`).test(everything)).map((s) => s.env)).toStrictEqual([]);
  });

  it("resolveConfig's defaults are the table's", () => {
    const config = resolveConfig({}, {});
    const resolved: Record<string, (c: Config) => string | number | undefined> = {
      PORT: (c) => c.port,
      HOST: (c) => c.host,
      RATELIMIT_DATA_DIR: (c) => c.dataDir,
      RATE_LIMIT_PHONE_MAX: (c) => c.defaultPolicy.number[0]!.limit,
      RATE_LIMIT_PHONE_WINDOW: (c) => c.defaultPolicy.number[0]!.windowMs,
      RATE_LIMIT_IP_MAX: (c) => c.defaultPolicy.ip[0]!.limit,
      RATE_LIMIT_IP_WINDOW: (c) => c.defaultPolicy.ip[0]!.windowMs,
      RATELIMIT_TRUST_PROXY: (c) => c.trustProxy,
      LOG_LEVEL: (c) => c.logLevel,
      RATELIMIT_MAX_FRAME_BYTES: (c) => c.maxFrameBytes,
      RATELIMIT_MAX_CONNECTIONS_PER_IP: (c) => c.maxConnectionsPerIp,
      RATELIMIT_WS_IDLE_TIMEOUT: (c) => c.wsIdleTimeoutMs,
      RATELIMIT_MESSAGES_PER_SECOND: (c) => c.messagesPerSecond,
      RATELIMIT_DB_TIMEOUT: (c) => c.dbStatementTimeoutMs,
      RATELIMIT_CLI_TIMEOUT: (c) => c.cliTimeoutMs,
      RATELIMIT_DB_POOL_SIZE: (c) => c.dbPoolSize,
      RATELIMIT_SHUTDOWN_TIMEOUT: (c) => c.shutdownTimeoutMs,
      RATELIMIT_SPOOL_MAX_BYTES: (c) => c.spoolMaxBytes,
      RATELIMIT_HEARTBEAT_INTERVAL: (c) => c.heartbeatIntervalMs,
      RATELIMIT_AUDIT_RETENTION: (c) => c.auditRetentionMs,
      RATELIMIT_DENY_CACHE: (c) => (c.denyCache ? 'on' : 'off'),
      // Unset: resolved to nothing here, filled in at run time.
      DATABASE_URL: (c) => c.databaseUrl,
      RATELIMIT_LISTEN_URL: (c) => c.listenUrl,
      RATELIMIT_METRICS_PORT: (c) => c.metricsPort,
      RATELIMIT_MAX_CONNECTIONS: (c) => c.maxConnections,
      PHONE_ENCRYPTION_KEY: (c) => c.phoneKey,
    };
    const wrong: string[] = [];
    for (const [env, read] of Object.entries(resolved)) {
      const s = settingNamed(env)!;
      const value = read(config);
      // RATELIMIT_LISTEN_URL's default is DATABASE_URL's value: unset here.
      const expected = s.default === undefined || s.env === 'RATELIMIT_LISTEN_URL' ? undefined : meaning(s, s.default);
      const got = value === undefined ? undefined : String(value);
      if (got !== expected) wrong.push(`${env}: resolveConfig gives ${got}, the table says ${expected}`);
    }
    expect(wrong).toStrictEqual([]);
    // Every setting with a default resolveConfig applies is compared above.
    const unchecked = SETTINGS.filter((s) => s.default !== undefined && !(s.env in resolved)).map((s) => s.env);
    expect(unchecked).toStrictEqual(['RATELIMIT_PG_SEARCH', 'RATELIMIT_OPERATOR']);
  });
});
