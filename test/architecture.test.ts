// The shape of the code as tests: no import circles in src/, the layers import only downwards,
// only src/db talks to PostgreSQL, a file in src/, test/ or bench/ over MAX_LINES says at its top
// why it is that long, and comments name only files, documents and migrations that exist.
//
// Circles come from madge (the graph as the compiler resolves it, `.js` specifiers to `.ts`
// files); the layer rules read each file's import declarations with the TypeScript parser,
// because they must tell `import type` from a runtime import and name the packages imported,
// which madge leaves out when it cannot resolve them (ink's ESM-only exports, for one).
import { describe, expect, it } from 'vitest';
import madge from 'madge';
import ts from 'typescript';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');
const SRC = path.join(ROOT, 'src');
const MAX_LINES = 350;
// What an oversized file's opening comment must say: why it is longer than MAX_LINES.
const LENGTH_JUSTIFICATION = /longer than|over \d+ lines|\d+ lines because/i;

const LAYERS = ['core', 'db', 'daemon', 'cli', 'client', 'protocol'] as const;
type Layer = (typeof LAYERS)[number];

interface Import {
  from: string;
  specifier: string;
  /** `import type` / `export type`: erased at compile time. */
  typeOnly: boolean;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && /\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts'))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

function importsOf(file: string, text: string): Import[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, file.endsWith('.tsx') ? ts.ScriptKind.TSX : ts.ScriptKind.TS);
  const out: Import[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const clause = node.importClause;
      const named = clause?.namedBindings && ts.isNamedImports(clause.namedBindings) ? clause.namedBindings.elements : undefined;
      const typeOnly =
        clause !== undefined &&
        (clause.isTypeOnly || (clause.name === undefined && named !== undefined && named.length > 0 && named.every((e) => e.isTypeOnly)));
      out.push({ from: file, specifier: node.moduleSpecifier.text, typeOnly });
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push({ from: file, specifier: node.moduleSpecifier.text, typeOnly: node.isTypeOnly });
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] &&
      ts.isStringLiteral(node.arguments[0])
    ) {
      out.push({ from: file, specifier: node.arguments[0].text, typeOnly: false });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

function layerOf(file: string): Layer | undefined {
  const top = path.relative(SRC, file).split(path.sep)[0];
  return LAYERS.find((l) => l === top);
}

/** The layer a relative import lands in, or the package a bare one names (`node:` builtins: undefined). */
function target(imp: Import): { layer: Layer | undefined; pkg: string | undefined } {
  if (imp.specifier.startsWith('.')) return { layer: layerOf(path.resolve(path.dirname(imp.from), imp.specifier)), pkg: undefined };
  if (imp.specifier.startsWith('node:')) return { layer: undefined, pkg: undefined };
  const parts = imp.specifier.split('/');
  return { layer: undefined, pkg: imp.specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0] };
}

async function allImports(): Promise<Import[]> {
  const files = await sourceFiles(SRC);
  return (await Promise.all(files.map(async (f) => importsOf(f, await readFile(f, 'utf8'))))).flat();
}

function show(imps: readonly Import[]): string[] {
  return imps.map((i) => `${path.relative(ROOT, i.from)} imports ${i.specifier}${i.typeOnly ? ' (type only)' : ''}`);
}

async function circles(dir: string): Promise<string[][]> {
  const graph = await madge(dir, {
    fileExtensions: ['ts', 'tsx'],
    tsConfig: path.join(ROOT, 'tsconfig.json'),
    // A circle through types alone is still two files that cannot be understood apart.
    detectiveOptions: { ts: { skipTypeImports: false }, tsx: { skipTypeImports: false } },
  });
  return graph.circular();
}

describe('import graph', () => {
  it('madge sees a circle through `.js` specifiers (so the next test can fail)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'ratelimit-circle-'));
    try {
      await writeFile(path.join(dir, 'a.ts'), "import { b } from './b.js';\nexport const a = (): number => b() + 1;\n");
      await writeFile(path.join(dir, 'b.ts'), "import { a } from './a.js';\nexport const b = (): number => a() - 1;\n");
      expect(await circles(dir)).toStrictEqual([['a.ts', 'b.ts']]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('src has no import circle', async () => {
    expect(await circles(SRC)).toStrictEqual([]);
  });

  type Rule = (t: ReturnType<typeof target>, i: Import) => boolean;
  const rules: Array<[string, Layer, Rule]> = [
    // core is pure: no other layer, no database, no terminal UI.
    [
      'core imports no other layer, nor pg, ink or react',
      'core',
      (t) => (t.layer !== undefined && t.layer !== 'core') || ['pg', 'ink', 'react'].includes(t.pkg ?? ''),
    ],
    ['db imports nothing from daemon, cli or client', 'db', (t) => t.layer === 'daemon' || t.layer === 'cli' || t.layer === 'client'],
    // The wire contract stands alone; it may name core's types (a decision's shape), nothing at run time.
    [
      'protocol imports no other layer (core: types only)',
      'protocol',
      (t, i) => (t.layer !== undefined && t.layer !== 'protocol' && t.layer !== 'core') || (t.layer === 'core' && !i.typeOnly),
    ],
    // What services install: the protocol, ws and Node, nothing of the daemon's.
    [
      'client imports only protocol, ws and node builtins',
      'client',
      (t) => (t.layer !== undefined && t.layer !== 'client' && t.layer !== 'protocol') || (t.pkg !== undefined && t.pkg !== 'ws'),
    ],
    ['daemon imports nothing from cli or client', 'daemon', (t) => t.layer === 'cli' || t.layer === 'client'],
  ];
  it.each(rules)('%s', async (_name, layer, rule) => {
    const imports = await allImports();
    expect(show(imports.filter((i) => layerOf(i.from) === layer && rule(target(i), i)))).toStrictEqual([]);
  });

  it("top's views import no database types: model.ts maps the rows", async () => {
    const imports = await allImports();
    const views = imports.filter(
      (i) => path.dirname(i.from) === path.join(SRC, 'cli', 'top') && !['model.ts', 'run.ts', 'command.ts'].includes(path.basename(i.from)),
    );
    expect(views.length).toBeGreaterThan(0);
    expect(show(views.filter((i) => target(i).layer === 'db'))).toStrictEqual([]);
  });

  it('only src/db imports pg', async () => {
    const imports = await allImports();
    expect(show(imports.filter((i) => layerOf(i.from) !== 'db' && target(i).pkg === 'pg'))).toStrictEqual([]);
  });

  // bench/ runs from dist/ with plain node, and shares the daemon spawner with the tests
  // (test/helpers/daemon.ts): nothing it loads may need vitest, which only exists under a test run.
  it('bench/ and every test file it imports load no vitest', async () => {
    const seen = new Set<string>();
    const offenders: Import[] = [];
    const queue = await sourceFiles(path.join(ROOT, 'bench'));
    expect(queue.length).toBeGreaterThan(0);
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      if (seen.has(file)) continue;
      seen.add(file);
      for (const imp of importsOf(file, await readFile(file, 'utf8'))) {
        if (target(imp).pkg === 'vitest' || imp.specifier.startsWith('vitest/')) offenders.push(imp);
        const resolved = path.resolve(path.dirname(file), imp.specifier.replace(/\.js$/, '.ts'));
        // src/ is the product and imports no test tooling; bench's own files and what they borrow from test/ are followed.
        if (imp.specifier.startsWith('.') && !imp.typeOnly && !resolved.startsWith(SRC + path.sep)) queue.push(resolved);
      }
    }
    expect([...seen].some((f) => f.startsWith(path.join(ROOT, 'test') + path.sep))).toBe(true);
    expect(show(offenders)).toStrictEqual([]);
  });

  it('the rules above see every layer that exists', async () => {
    const tops = new Set((await readdir(SRC, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name));
    expect([...tops].filter((t) => !LAYERS.includes(t as Layer))).toStrictEqual([]);
  });
});

describe('file length', () => {
  it(`a file in src, test or bench over ${MAX_LINES} lines says at its top why`, async () => {
    const unexplained: string[] = [];
    const files = (await Promise.all(['src', 'test', 'bench'].map((d) => sourceFiles(path.join(ROOT, d))))).flat();
    for (const file of files) {
      const text = await readFile(file, 'utf8');
      const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
      if (lines <= MAX_LINES) continue;
      const opening = ts.getLeadingCommentRanges(text, 0) ?? [];
      const comment = opening.map((r) => text.slice(r.pos, r.end)).join('\n');
      if (!LENGTH_JUSTIFICATION.test(comment)) unexplained.push(`${path.relative(ROOT, file)} (${lines} lines)`);
    }
    expect(unexplained).toStrictEqual([]);
  });
});

// ---- comments that name files -------------------------------------------------------------
// A comment naming a file, a migration or a document that does not exist sends the reader
// nowhere. Migrations are committed history (never edited), so their own comments are not read.

const SCANNED = ['src', 'test', 'bench'];
const FROZEN = [path.join('src', 'db', 'migrations')];
const COMMENTED = /\.(tsx?|mjs|sql)$/;
const ROOTED_PATH = /(?<![\w/.:-])((?:src|test|bench|docs|ops|scripts|bin|examples)\/[\w./-]*[\w-])/g;
const FILE_NAME = /(?<![\w/.-])([\w-]+(?:\.[\w-]+)*\.(?:ts|tsx|mjs|sql|md|yaml|yml|sh))\b/g;
const MIGRATIONS = /\bmigrations? ((?:\d{3})(?:(?:, | and | or |-|–)\d{3})*)/g;

/** The comment text of a file: `//` and block comments, `--` lines in SQL (strings are not parsed: close enough). */
function commentsOf(file: string, text: string): string[] {
  if (file.endsWith('.sql')) return [...text.matchAll(/--(.*)$/gm)].map((m) => m[1]!);
  const out: string[] = [];
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, false, file.endsWith('.tsx') ? ts.LanguageVariant.JSX : ts.LanguageVariant.Standard, text);
  for (let kind = scanner.scan(); kind !== ts.SyntaxKind.EndOfFileToken; kind = scanner.scan()) {
    if (kind === ts.SyntaxKind.SingleLineCommentTrivia || kind === ts.SyntaxKind.MultiLineCommentTrivia) out.push(scanner.getTokenText());
  }
  return out;
}

async function repoFiles(): Promise<{ paths: Set<string>; names: Set<string> }> {
  const paths = new Set<string>();
  const names = new Set<string>();
  for (const top of await readdir(ROOT, { withFileTypes: true })) {
    if (['node_modules', 'dist', '.git'].includes(top.name)) continue;
    if (top.isFile()) {
      paths.add(top.name);
      names.add(top.name);
      continue;
    }
    for (const e of await readdir(path.join(ROOT, top.name), { recursive: true, withFileTypes: true })) {
      const rel = path.relative(ROOT, path.join(e.parentPath, e.name));
      if (rel.split(path.sep).includes('node_modules')) continue;
      paths.add(rel.split(path.sep).join('/'));
      if (e.isFile()) names.add(e.name);
    }
    paths.add(top.name);
  }
  return { paths, names };
}

/** Every reference in `comments` that names nothing in the repository. */
function danglingIn(comments: readonly string[], repo: { paths: Set<string>; names: Set<string> }, migrationIds: Set<string>): string[] {
  const out: string[] = [];
  const exists = (p: string) => repo.paths.has(p) || (p.endsWith('.js') && (repo.paths.has(`${p.slice(0, -3)}.ts`) || repo.paths.has(`${p.slice(0, -3)}.tsx`)));
  for (const c of comments) {
    for (const m of c.matchAll(ROOTED_PATH)) {
      const p = m[1]!.replace(/\/$/, '');
      if (!exists(p) && !p.includes('*')) out.push(p);
    }
    for (const m of c.matchAll(FILE_NAME)) {
      const name = m[1]!;
      if (!repo.names.has(name) && !name.includes('/')) out.push(name);
    }
    for (const m of c.matchAll(MIGRATIONS)) {
      for (const id of m[1]!.split(/, | and | or |-|–/)) if (!migrationIds.has(id)) out.push(`migration ${id}`);
    }
  }
  return out;
}

async function migrationIds(): Promise<Set<string>> {
  return new Set((await readdir(path.join(SRC, 'db', 'migrations'))).map((f) => f.slice(0, 3)));
}

describe('comments', () => {
  it('the reference check sees a missing file, document and migration (so the next test can fail)', async () => {
    const repo = await repoFiles();
    const comments = ['// see src/core/no-such-file.ts and policy-design.md, from migration 999', '// src/core/policy/log.ts, docs/protocol.md, migration 001'];
    expect(danglingIn(comments, repo, await migrationIds())).toStrictEqual(['src/core/no-such-file.ts', 'policy-design.md', 'migration 999']);
  });

  it('in src, test and bench name only files, documents and migrations that exist', async () => {
    const repo = await repoFiles();
    const ids = await migrationIds();
    const dangling: string[] = [];
    for (const dir of SCANNED) {
      for (const e of await readdir(path.join(ROOT, dir), { recursive: true, withFileTypes: true })) {
        const file = path.join(e.parentPath, e.name);
        const rel = path.relative(ROOT, file);
        if (!e.isFile() || !COMMENTED.test(e.name) || FROZEN.some((f) => rel.startsWith(f)) || rel.includes(`${path.sep}fixtures${path.sep}`)) continue;
        for (const d of danglingIn(commentsOf(file, await readFile(file, 'utf8')), repo, ids)) dangling.push(`${rel}: ${d}`);
      }
    }
    expect(dangling).toStrictEqual([]);
  });
});
