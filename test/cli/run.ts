// Runs the CLI in process (src/cli/main.ts runCli) with captured output: no build needed.
import { runCli } from '../../src/cli/main.js';

export const TEST_KEY = 'operator-cli-test-key-0123456789abcdefgh';

export interface InProcessRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function cli(args: string[], databaseUrl: string, env: Record<string, string | undefined> = {}): Promise<InProcessRun> {
  let stdout = '';
  let stderr = '';
  const code = await runCli([...args, '--database-url', databaseUrl], {
    out: (t) => (stdout += `${t}\n`),
    err: (t) => (stderr += `${t}\n`),
    env: { PHONE_ENCRYPTION_KEY: TEST_KEY, RATELIMIT_OPERATOR: 'tester', ...env },
    isTTY: false,
  });
  return { code, stdout, stderr };
}
