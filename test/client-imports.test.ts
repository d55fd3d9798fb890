// The client package entry (`phone-ratelimit/client`) must not drag in the daemon's or the CLI's
// dependencies. A fresh node process imports the built entry with a loader hook recording every
// module it resolves; the daemon entry, loaded the same way, proves the recorder sees them.

import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './daemon/helpers.js';

const FORBIDDEN = ['zod', 'ink', 'react', 'pg', 'prom-client', 'pino'];
const RECORDER = path.join(ROOT, 'test/helpers/import-recorder.mjs');

/** The packages under node_modules that importing `specifier` loaded, in a fresh process. */
function packagesLoadedBy(specifier: string): Set<string> {
  const script = `const urls = await globalThis.importAndRecord(${JSON.stringify(specifier)}); process.stdout.write(JSON.stringify(urls));`;
  const out = execFileSync(process.execPath, ['--import', RECORDER, '--input-type=module', '--eval', script], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const urls = JSON.parse(out) as string[];
  expect(urls.length).toBeGreaterThan(0);
  const names = new Set<string>();
  for (const url of urls) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
    if (m) names.add(m[1]!);
  }
  return names;
}

describe('client entry', () => {
  it('loads ws and none of the daemon or CLI dependencies', () => {
    // Resolved through package.json `exports["./client"]`, as an application would import it.
    const loaded = packagesLoadedBy('phone-ratelimit/client');
    expect(loaded.has('ws')).toBe(true);
    expect(FORBIDDEN.filter((p) => loaded.has(p))).toEqual([]);
  });

  it('the recorder does see them when the daemon entry is loaded', () => {
    const loaded = packagesLoadedBy(path.join(ROOT, 'dist/src/daemon/index.js'));
    expect(loaded.has('pg')).toBe(true);
    expect(loaded.has('zod')).toBe(true);
    expect(loaded.has('prom-client')).toBe(true);
  });
});
