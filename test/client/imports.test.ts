// The client package entries must not drag in the daemon's or the CLI's dependencies, and the
// browser entry (`phone-ratelimit/client/browser`) nothing a browser cannot load. A fresh node
// process imports the built entry with a loader hook recording every module it resolves; the
// daemon entry, loaded the same way, proves the recorder sees them.

import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/fixture.js';

const FORBIDDEN = ['zod', 'ink', 'react', 'pg', 'prom-client', 'pino'];
const RECORDER = path.join(ROOT, 'test/helpers/import-recorder.mjs');

/** Every module URL that importing `specifier` resolved, in a fresh process. */
function urlsLoadedBy(specifier: string): string[] {
  const script = `const urls = await globalThis.importAndRecord(${JSON.stringify(specifier)}); process.stdout.write(JSON.stringify(urls));`;
  const out = execFileSync(process.execPath, ['--import', RECORDER, '--input-type=module', '--eval', script], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const urls = JSON.parse(out) as string[];
  expect(urls.length).toBeGreaterThan(0);
  return urls;
}

/** The packages under node_modules that importing `specifier` loaded, in a fresh process. */
function packagesLoadedBy(specifier: string): Set<string> {
  const urls = urlsLoadedBy(specifier);
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

  it('the browser entry loads only its own files: no package (not even ws) and no node: builtin', () => {
    // A browser resolves neither bare names nor node: without an import map, so the whole graph
    // must be relative paths inside dist/. Resolved through exports["./client/browser"].
    const urls = urlsLoadedBy('phone-ratelimit/client/browser');
    const dist = pathToFileURL(path.join(ROOT, 'dist')).href + '/';
    const foreign = urls.filter((u) => !u.startsWith(dist));
    expect(foreign).toEqual([]);
    expect(urls.some((u) => u.endsWith('/dist/src/client/browser.js'))).toBe(true);
    expect(urls.some((u) => u.endsWith('/dist/src/client/core.js'))).toBe(true);
  });

  it('the recorder sees node: builtins and ws when the Node entry is loaded', () => {
    const urls = urlsLoadedBy('phone-ratelimit/client');
    expect(urls).toContain('node:events');
    expect(urls.some((u) => u.includes('/node_modules/ws/'))).toBe(true);
  });

  it('the recorder does see them when the daemon entry is loaded', () => {
    const loaded = packagesLoadedBy(path.join(ROOT, 'dist/src/daemon/start.js'));
    expect(loaded.has('pg')).toBe(true);
    expect(loaded.has('zod')).toBe(true);
    expect(loaded.has('prom-client')).toBe(true);
  });
});
