// The newcomer's path: `ratelimit serve` with no configuration at all, and `ratelimit status`
// in another terminal seeing the counts it made.
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, spawnDaemon, trackDaemon } from '../helpers/fixture.js';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dirs: string[] = [];

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function cleanEnv(): NodeJS.ProcessEnv {
  // No DATABASE_URL, no key: the embedded default.
  return { PATH: process.env.PATH, HOME: process.env.HOME };
}

describe('embedded default', () => {
  it('serve starts with no configuration; status in another process sees its counts; SIGTERM exits 0', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'ratelimit-newcomer-'));
    dirs.push(cwd);
    await chmod(cwd, 0o755);
    // The daemon as a newcomer starts it: a folder of its own, this environment only, `--port 0`.
    const daemon = trackDaemon(await spawnDaemon({ cwd, baseEnv: cleanEnv(), args: ['--port', '0'], startTimeoutMs: 90_000 }));
    const { port } = daemon;
    const lines = daemon.stdout().split('\n');
    expect(lines.join('\n')).toMatch(/generated a key/);

    for (let i = 0; i < 3; i++) {
      await fetch(`http://127.0.0.1:${port}/v1/consume`, { method: 'POST', body: JSON.stringify({ phoneNumber: '+1 415 555 2671' }) });
    }

    const status = () =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [BIN, 'status', '+14155552671', '--json'], { cwd, env: cleanEnv() }, (err, stdout, stderr) =>
          resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
        ),
      );
    const first = await status();
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ used: 2, limit: 2, allowed: false });
    // The third call was denied from the daemon's cache of numbers at their limit; that denial
    // reaches the database with the next background flush (about a second).
    await expect
      .poll(async () => (JSON.parse((await status()).stdout) as { deniedInWindow: number }).deniedInWindow, { timeout: 10_000, interval: 250 })
      .toBe(1);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
