// The baseline checkout of an A/B run (bench/lib/ab.ts): a git ref exported and built once into
// the bench's cache (reused by later runs of the same commit), or a checkout someone built.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { BaselineSpec } from './ab.js';

export interface Baseline {
  /** The checkout's folder (package.json, bin/, dist/). */
  root: string;
  /** What the report calls it: the ref as given and its commit. */
  label: string;
  commit: string;
}

/** What the bench starts from a checkout: its binary's entry point, its helper and its workers. */
const NEEDED = ['dist/src/cli/main.js', 'dist/test/helpers/daemon.js', 'dist/bench/store-worker.js', 'dist/bench/policy-store-worker.js'];
const BUILT_MARK = '.bench-built';
const BUILD_TIMEOUT_MS = 900_000;

function git(root: string, args: string[]): string {
  return execFileSync('git', args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    .toString()
    .trim();
}

function run(cmd: string, args: string[], cwd: string, log: (line: string) => void): void {
  log(`  baseline: ${cmd} ${args.join(' ')} (in ${cwd})`);
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: BUILD_TIMEOUT_MS, maxBuffer: 64 * 2 ** 20 });
  if (r.status !== 0) {
    throw new Error(
      `baseline: \`${cmd} ${args.join(' ')}\` in ${cwd} failed (${r.error?.message ?? r.signal ?? `exit ${r.status}`})\n${String(r.stdout ?? '').slice(-4000)}${String(r.stderr ?? '').slice(-4000)}`,
      { cause: r.error },
    );
  }
}

function assertBuilt(root: string): void {
  const missing = NEEDED.filter((f) => !existsSync(path.join(root, f)));
  if (missing.length) throw new Error(`baseline checkout ${root} is not built (missing ${missing.join(', ')}): run \`npm ci && npm run build\` there`);
}

/**
 * BENCH_BASELINE=<ref>: `git archive` of that commit into `<cacheDir>/baseline-<commit>`, its
 * node_modules linked to this checkout's when the lockfiles are equal (else `npm ci`), then built.
 * The folder is marked once built, so the next run of the same commit starts at once.
 */
export async function prepareBaseline(spec: BaselineSpec, opts: { root: string; cacheDir: string; log: (line: string) => void }): Promise<Baseline> {
  if (spec.kind === 'dir') {
    assertBuilt(spec.dir);
    let commit = 'unknown';
    try {
      commit = git(spec.dir, ['rev-parse', '--short', 'HEAD']);
      if (git(spec.dir, ['status', '--porcelain', '--untracked-files=no'])) commit += ' (with uncommitted changes)';
    } catch {
      // not a git checkout: the folder is its name
    }
    return { root: spec.dir, label: `${spec.dir} (${commit})`, commit };
  }
  let commit: string;
  try {
    commit = git(opts.root, ['rev-parse', '--verify', '--end-of-options', `${spec.ref}^{commit}`]);
  } catch (err) {
    throw new Error(`BENCH_BASELINE=${spec.ref}: not a commit this checkout knows (git fetch it first?)`, { cause: err });
  }
  const short = commit.slice(0, 12);
  const dir = path.join(opts.cacheDir, `baseline-${short}`);
  const label = spec.ref === short || commit.startsWith(spec.ref) ? short : `${spec.ref} (${short})`;
  // A linked node_modules dangles once the checkout that lent it is gone: then build afresh.
  if (existsSync(path.join(dir, BUILT_MARK)) && existsSync(path.join(dir, 'node_modules', 'pg', 'package.json'))) {
    assertBuilt(dir);
    opts.log(`  baseline: ${label}, built earlier in ${dir}`);
    return { root: dir, label, commit: short };
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  opts.log(`  baseline: exporting ${label} to ${dir}`);
  run('sh', ['-c', 'git archive --format=tar "$1" | tar -x -C "$2"', 'sh', commit, dir], opts.root, opts.log);
  const ourLock = await readFile(path.join(opts.root, 'package-lock.json'), 'utf8').catch(() => undefined);
  const theirLock = await readFile(path.join(dir, 'package-lock.json'), 'utf8').catch(() => undefined);
  if (ourLock !== undefined && ourLock === theirLock && existsSync(path.join(opts.root, 'node_modules'))) {
    // Same lockfile, same packages: a link spares minutes of `npm ci` and a few hundred MB.
    await symlink(path.join(opts.root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  } else {
    run('npm', ['ci', '--no-audit', '--no-fund'], dir, opts.log);
  }
  run('npm', ['run', 'build'], dir, opts.log);
  assertBuilt(dir);
  await writeFile(path.join(dir, BUILT_MARK), `${commit}\n`);
  return { root: dir, label, commit: short };
}
