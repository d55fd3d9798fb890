// `node dist/bench/profile-summary.js <dir>`: the daemon's CPU per decision by category, baseline
// against this checkout, from the profiles an A/B run wrote into <dir> (BENCH_PROFILE_DIR; see
// BENCHMARKS.md, "Where the microseconds went"). Prints one markdown table per scenario.
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { categoryShares, compareProfiles, renderProfileComparison, type CpuProfile, type ProfileMeta } from './lib/profile.js';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node dist/bench/profile-summary.js <BENCH_PROFILE_DIR of an A/B run>');
  process.exit(2);
}

/** Every run folder: <dir>/<side>/<scenario>/run<N>, holding meta.json and the daemon's .cpuprofile files. */
async function runFolders(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(root, { recursive: true })) {
    if (path.basename(entry) === 'meta.json') out.push(path.join(root, path.dirname(entry)));
  }
  return out.sort();
}

const runs: Array<{ meta: ProfileMeta; shares: Map<string, number> }> = [];
for (const folder of await runFolders(dir)) {
  const meta = JSON.parse(await readFile(path.join(folder, 'meta.json'), 'utf8')) as ProfileMeta;
  const files = (await readdir(folder)).filter((f) => f.endsWith('.cpuprofile'));
  if (!files.length) {
    console.error(`${folder}: no .cpuprofile (did the daemon exit cleanly?); skipped`);
    continue;
  }
  // A scenario that restarts its daemon leaves two: the measured window is in the last one's life.
  const sized = await Promise.all(files.map(async (f) => ({ f, mtimeMs: (await stat(path.join(folder, f))).mtimeMs })));
  const newest = sized.sort((a, b) => b.mtimeMs - a.mtimeMs)[0]!.f;
  const profile = JSON.parse(await readFile(path.join(folder, newest), 'utf8')) as CpuProfile;
  const window = meta.windowStartUs !== undefined && meta.windowEndUs !== undefined ? { startUs: meta.windowStartUs, endUs: meta.windowEndUs } : undefined;
  runs.push({ meta, shares: categoryShares(profile, window) });
}
if (!runs.length) {
  console.error(`no profiled runs under ${dir}`);
  process.exit(1);
}
console.log(compareProfiles(runs).map(renderProfileComparison).join('\n\n'));
