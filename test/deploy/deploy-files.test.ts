// Dockerfile, .dockerignore and docs/deploy-fly.md: static checks that keep them in line with
// the code's defaults and the deployment requirements (no Docker daemon needed).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PORT, MIGRATE_COMMAND, MIN_KEY_LENGTH, MIN_TOKEN_LENGTH } from '../../src/core/defaults.js';
import { ROUTES } from '../../src/protocol/wire.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(`${ROOT}${path}`, 'utf8');

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function instructions(text: string): string[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

describe('Dockerfile', () => {
  const lines = instructions(read('Dockerfile'));
  const froms = lines.filter((line) => /^FROM\s/i.test(line));
  const lastStage = lines.slice(lines.lastIndexOf(froms[froms.length - 1]!));
  const pkg = JSON.parse(read('package.json')) as {
    engines: { node: string };
    bin: Record<string, string>;
  };

  it('is multi-stage on one maintained Node LTS, pinned by digest, within engines', () => {
    expect(froms.length).toBeGreaterThanOrEqual(2);
    // Every stage on the same base: the global ARG (a FROM may only use ARGs declared before the first FROM).
    const args = Object.fromEntries(
      lines
        .slice(0, lines.indexOf(froms[0]!))
        .filter((l) => /^ARG\s/.test(l))
        .map((l) => l.slice(4).trim().split('=') as [string, string]),
    );
    const images = froms.map((from) => from.split(/\s+/)[1]!.replace(/^\$\{(\w+)\}$/, (_, name: string) => args[name] ?? ''));
    expect(new Set(images).size).toBe(1);
    // Node 20 is end of life since 2026-04-30; 22 and 24 are LTS.
    expect(images[0]).toMatch(/^node:(22|24)-bookworm-slim@sha256:[0-9a-f]{64}$/);
    expect(pkg.engines.node).toBe('>=20');
  });

  it('makes RATELIMIT_DATA_DIR for the runtime user, 0700, outside the read-only /app', () => {
    const env = lastStage.filter((l) => /^ENV\s/.test(l)).join(' ');
    const dataDir = /RATELIMIT_DATA_DIR=(\S+)/.exec(env)?.[1];
    expect(dataDir).toBe('/data');
    const user = lastStage
      .filter((l) => /^USER\s/.test(l))
      .at(-1)!
      .split(/\s+/)[1];
    expect(lastStage.join('\n')).toContain(`install -d -o ${user} -g ${user} -m 0700 ${dataDir}`);
  });

  it('installs only production dependencies, without scripts, in the final stage', () => {
    const installs = lastStage.filter((line) => /\bnpm (ci|install)\b/.test(line));
    expect(installs.length).toBeGreaterThan(0);
    for (const line of installs) {
      expect(line).toContain('npm ci');
      expect(line).toContain('--omit=dev');
      expect(line).toContain('--ignore-scripts');
    }
  });

  it('copies the compiled code, the entry point and the SQL migrations from the build', () => {
    const copies = lastStage.filter((line) => /^COPY --from=/.test(line)).join('\n');
    expect(copies).toMatch(/\/app\/dist\b/);
    expect(copies).toMatch(/\/app\/bin\b/);
    expect(copies).toMatch(/\/app\/src\/db\/migrations\b/);
  });

  it('puts `ratelimit` on PATH, pointing at the package bin', () => {
    expect(pkg.bin.ratelimit).toBe('bin/ratelimit.js');
    expect(lastStage.join('\n')).toContain('ln -s /app/bin/ratelimit.js /usr/local/bin/ratelimit');
  });

  it('runs as a non-root user', () => {
    const users = lastStage.filter((line) => /^USER\s/.test(line));
    expect(users.length).toBeGreaterThan(0);
    expect(users[users.length - 1]).not.toMatch(/^USER\s+(root|0)(:|\s|$)/);
  });

  it('execs the daemon without a shell so SIGTERM reaches it', () => {
    const entrypoint = lastStage.find((line) => /^ENTRYPOINT\s/.test(line));
    const cmd = lastStage.find((line) => /^CMD\s/.test(line));
    // Exec (JSON) form: no /bin/sh -c in between swallowing signals.
    expect(entrypoint).toMatch(/^ENTRYPOINT \[.*\]$/);
    expect(JSON.parse(entrypoint!.slice('ENTRYPOINT'.length))).toEqual(['/usr/bin/tini', '--']);
    expect(JSON.parse(cmd!.slice('CMD'.length))).toEqual(['ratelimit', 'serve']);
    expect(lastStage).toContain('STOPSIGNAL SIGTERM');
  });

  it('exposes the default port and sets production mode', () => {
    expect(lastStage).toContain(`EXPOSE ${DEFAULT_PORT}`);
    expect(lastStage.join('\n')).toMatch(/NODE_ENV=production/);
    expect(lastStage.join('\n')).toMatch(new RegExp(`PORT=${DEFAULT_PORT}\\b`));
  });
});

describe('.dockerignore', () => {
  const entries = read('.dockerignore')
    .split('\n')
    .map((line) => line.trim());

  it('keeps local state, builds and secrets out of the image context', () => {
    for (const entry of ['node_modules', 'dist', '.git', '.ratelimit', '.env', '.env.*']) {
      expect(entries).toContain(entry);
    }
  });

  it('keeps what the build stage needs', () => {
    for (const entry of ['src', 'bin', 'package.json', 'package-lock.json', 'tsconfig.json']) {
      expect(entries).not.toContain(entry);
    }
  });
});

describe('docs/deploy-fly.md', () => {
  const doc = read('docs/deploy-fly.md');

  it('covers create, attach, secret, deploy and verification with the real commands', () => {
    for (const text of [
      'fly postgres create',
      'fly postgres attach',
      'fly secrets set',
      'PHONE_ENCRYPTION_KEY',
      'DATABASE_URL',
      'fly deploy',
      ROUTES.health,
      `fly ssh console`,
      MIGRATE_COMMAND,
      'ratelimit stats',
      'scripts/setup-database.sh',
      'Troubleshooting',
      'Security',
    ]) {
      expect(doc, `mentions ${text}`).toContain(text);
    }
  });

  it('states the minimum key length the code enforces', () => {
    expect(doc).toContain(`${MIN_KEY_LENGTH} characters`);
  });

  it('says how the app authenticates, how to reach a database with TLS, and what happens to the spool', () => {
    for (const text of [
      'Authorization: Bearer',
      '?token=',
      'RATELIMIT_API_TOKENS',
      'RATELIMIT_ALLOW_ANONYMOUS',
      'sslmode=verify-full',
      '## The spool on Fly',
      'forgets what it allowed',
      'RATELIMIT_METRICS_PORT',
    ]) {
      expect(doc, `mentions ${text}`).toContain(text);
    }
    expect(doc).toContain(`${MIN_TOKEN_LENGTH} characters`);
  });
});
