// `ratelimit serve` as an operator starts it: production without tokens, tokens too short, or a
// plain-text URL to a public database exits 1 before opening anything, with every problem in one
// line that says what to set.
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/fixture.js';

const TOKEN = 'serve-refusals-token-0123456789';

describe('ratelimit serve refuses to run open', () => {
  it('NODE_ENV=production without RATELIMIT_API_TOKENS: exit 1, naming both variables', async () => {
    const r = await runCli(['serve'], { NODE_ENV: 'production', DATABASE_URL: 'postgres://u:p@db.internal:5432/x', PORT: '0' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ratelimit: .*RATELIMIT_API_TOKENS is not set and NODE_ENV=production/);
    expect(r.stderr).toContain('RATELIMIT_ALLOW_ANONYMOUS=1');
    expect(r.stdout).not.toMatch(/listening/);
  });

  it('a non-loopback --host without tokens: exit 1', async () => {
    const r = await runCli(['serve', '--host', '0.0.0.0'], { DATABASE_URL: 'postgres://u:p@db.internal:5432/x', PORT: '0' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--host=0.0.0.0 is not a loopback address');
  });

  it('reports a short token, a short key and a plain-text public URL together, echoing no secret', async () => {
    const r = await runCli(['serve'], {
      NODE_ENV: 'production',
      DATABASE_URL: 'postgres://u:hunter2-password@db.example.com:5432/x',
      PHONE_ENCRYPTION_KEY: 'too-short-key',
      RATELIMIT_API_TOKENS: 'tiny-token',
      PORT: '0',
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('shorter than 16 characters');
    expect(r.stderr).toContain('PHONE_ENCRYPTION_KEY must be set to at least 32 characters');
    expect(r.stderr).toContain('sslmode=verify-full');
    for (const secret of ['hunter2-password', 'too-short-key', 'tiny-token']) expect(r.stderr).not.toContain(secret);
  });

  it('an admin command with a short key and a DATABASE_URL refuses too (exit 2, a configuration error)', async () => {
    const r = await runCli(['stats'], { DATABASE_URL: 'postgres://u:p@db.internal:5432/x', PHONE_ENCRYPTION_KEY: 'k'.repeat(31), RATELIMIT_API_TOKENS: TOKEN });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('with a database named (DATABASE_URL)');
  });
});
