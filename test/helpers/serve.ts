// `ratelimit serve` started the way a newcomer starts it (a folder of its own, a given
// environment, port 0), for the tests of the embedded default: resolves once the daemon logs the
// port it listens on, with everything it printed so far.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const BIN = join(import.meta.dirname, '..', '..', 'bin', 'ratelimit.js');

export interface ServeProcess {
  daemon: ChildProcess;
  port: number;
  /** stdout lines so far (and later: the array keeps filling). */
  lines: string[];
  exited: Promise<number | null>;
}

export async function spawnServe(cwd: string, env: NodeJS.ProcessEnv, onSpawn: (c: ChildProcess) => void, startTimeoutMs = 90_000): Promise<ServeProcess> {
  const daemon = spawn(process.execPath, [BIN, 'serve', '--port', '0'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  onSpawn(daemon);
  const exited = new Promise<number | null>((resolve) => daemon.on('exit', (code) => resolve(code)));
  const lines: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start:\n${lines.join('\n')}`)), startTimeoutMs);
    createInterface({ input: daemon.stdout! }).on('line', (line) => {
      lines.push(line);
      const entry = JSON.parse(line) as { msg?: string; port?: number };
      if (entry.msg?.startsWith('ratelimit listening') && entry.port) {
        clearTimeout(timer);
        resolve(entry.port);
      }
    });
    daemon.on('exit', () => reject(new Error(`daemon exited:\n${lines.join('\n')}`)));
  });
  return { daemon, port, lines, exited };
}
