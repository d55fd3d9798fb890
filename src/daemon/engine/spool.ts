// Longer than 350 lines because the spool's scope (database id, index, provisional scopes) and
// its files' locking and replay must agree on one layout; both halves are kept in this file.
// The durable spool: decisions made from memory, written to the data dir (one fsync per batch)
// before their replies are sent, so a daemon that stops or crashes while the database is down
// loses none of them. A restarted daemon replays its predecessors' spools into memory before it
// answers and hands them to the write-behind; each spool is emptied once the database holds it.
//
// Outcomes reported while the database is away (src/daemon/outcomes.ts) are kept here too, as a
// second kind of line (`k: "o"`); writing one twice is harmless (one row per decision id).
//
// Layout: <dataDir>/spool/<scope>/<instance>.<startMs>.log, JSON lines, one event each. The
// scope is an HMAC under the phone key of the database's own id (src/db/identity.ts; a promoted
// standby has its primary's id), so daemons of another database (or another key) sharing the data
// dir never replay into the wrong one, a new URL to the same database (after a failover) replays
// its spool, and a directory name cannot confirm a guessed key without the database's id.
//
// A daemon that starts while the database is down cannot read the id: <dataDir>/spool-index.json
// maps an HMAC (under the key) of each URL that reached a database to that database's scope, so a
// URL seen before finds its spool. A URL never seen before spools into a provisional scope (an
// HMAC of the URL), which every later daemon with that URL also takes over; once the database
// answers, identify() adds the real scope. Each file is locked with
// proper-lockfile (a directory whose mtime the owner refreshes): a daemon takes over only files
// whose lock went stale (owner gone for LOCK_STALE_MS), never a live peer's, at start and then
// every LOCK_STALE_MS. A crash mid-write leaves at most a torn last line, skipped on replay.
//
// Written events are dropped by compaction (truncate when everything is written, or rewrite the
// unwritten tail once the file is mostly written). Between a database write and the compaction
// a crash replays those events again: the database then counts them twice (over, never under).

import { createHmac } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import lockfile from 'proper-lockfile';
import type { DecisionEvent } from '../../db/decisions.js';
import type { OutcomeEvent } from '../../db/outcomes.js';
import { OUTCOMES, OUTCOME_SOURCES, type Outcome, type OutcomeSource } from '../../protocol/wire.js';

/** What a spool keeps: decisions made from memory, and outcomes reported while the database was away. */
export type SpoolEvent = DecisionEvent | OutcomeEvent;

export function isOutcomeEvent(e: SpoolEvent): e is OutcomeEvent {
  return 'decisionId' in e;
}

const LOCK_STALE_MS = 10_000;
const LOCK_UPDATE_MS = 2_000;
/** Compaction rewrites the unwritten tail once the file is this many times its size (and big). */
const REWRITE_RATIO = 2;
const REWRITE_MIN_BYTES = 1 << 20;

export interface SpoolOptions {
  dataDir: string;
  /**
   * Identifies the database and key the decisions belong to (neither stored in the clear):
   * `databaseId` when the database could be read at start, else the URL through the index.
   */
  scope: { databaseUrl: string; phoneKey: string; databaseId?: string };
  instanceId: string;
  maxBytes: number;
  logger: Logger;
}

/** Why a memory decision could not be made durable: the consume is refused (fail closed). */
export class SpoolUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SpoolUnavailableError';
  }
}

interface Entry {
  seq: number;
  line: string;
}

export class Spool {
  private seq = 0;
  /** Events appended (or being appended) that the database does not hold yet, in order. */
  private unwritten: Entry[] = [];
  private unwrittenBytes = 0;
  private fileBytes = 0;
  private chain: Promise<void> = Promise.resolve();
  private queued: Array<{ lines: string; resolve: () => void; reject: (err: unknown) => void }> = [];
  private broken: unknown;
  private closed = false;

  /** Directories whose abandoned spools this daemon takes over (its own first). */
  private readonly dirs: string[];
  /** How the scope was found: the database's id, the index (an assumption until identify()), or provisional. */
  private basis: 'database' | 'index' | 'provisional';

  private constructor(
    private readonly opts: SpoolOptions,
    readonly dir: string,
    readonly file: string,
    private fh: fs.FileHandle,
    private readonly unlock: () => Promise<void>,
    basis: 'database' | 'index' | 'provisional',
  ) {
    this.basis = basis;
    const provisional = path.join(path.dirname(dir), scopeNames(opts).provisional);
    this.dirs = provisional === dir ? [dir] : [dir, provisional];
  }

  /** Creates and locks this instance's spool file. Throws when the data dir is not writable. */
  static async open(opts: SpoolOptions): Promise<Spool> {
    const root = path.join(path.resolve(opts.dataDir), 'spool');
    await fs.mkdir(root, { recursive: true, mode: 0o700 });
    const names = scopeNames(opts);
    let scope: string;
    let basis: 'database' | 'index' | 'provisional';
    if (opts.scope.databaseId !== undefined) {
      scope = names.forDatabase(opts.scope.databaseId);
      basis = 'database';
      await remember(root, names.urlKey, scope);
    } else {
      const known = (await readIndex(root))[names.urlKey];
      scope = known ?? names.provisional;
      basis = known ? 'index' : 'provisional';
    }
    const dir = path.join(root, scope);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const safeId = opts.instanceId.replace(/[^A-Za-z0-9_.-]/g, '_');
    const file = path.join(dir, `${safeId}.${Date.now()}.log`);
    // Locked before it exists: a peer adopting stale spools of this scope lists the directory, and
    // a file it saw before its lock was taken would look abandoned and be taken over.
    const release = await lockfile.lock(file, {
      realpath: false,
      stale: LOCK_STALE_MS,
      update: LOCK_UPDATE_MS,
      retries: 0,
      // The default throws from a timer. A lost lock means a peer may take this spool over and
      // write it too: over-counting, never under-counting; keep going and say so.
      onCompromised: (err) => opts.logger.error({ err, file }, 'spool lock lost: another daemon may replay this spool too'),
    });
    const fh = await fs.open(file, 'a', 0o600).catch(async (err: unknown) => {
      await release().catch(() => undefined);
      throw err;
    });
    return new Spool(opts, dir, file, fh, release, basis);
  }

  /**
   * The database answered with its id. Returns false when this spool was assumed (from the
   * index) to belong to another database: its events must not be written there.
   */
  async identify(databaseId: string): Promise<boolean> {
    const names = scopeNames(this.opts);
    const scope = names.forDatabase(databaseId);
    const dir = path.join(path.dirname(this.dir), scope);
    if (this.basis === 'index' && dir !== this.dir) return false;
    if (!this.dirs.includes(dir)) this.dirs.push(dir);
    this.basis = 'database';
    await remember(path.dirname(this.dir), names.urlKey, scope);
    return true;
  }

  /** Events in the spool (or on their way to it) that the database does not hold yet. */
  get size(): number {
    return this.unwritten.length;
  }

  /** Set once a write failed: nothing more can be made durable. */
  get failed(): boolean {
    return this.broken !== undefined;
  }

  /**
   * Would `n` more events fit? Checked before a memory decision is made, so a full spool
   * refuses consumes instead of admitting calls it cannot record.
   */
  hasRoomFor(n: number): boolean {
    return !this.broken && !this.closed && this.unwrittenBytes + n * 512 <= this.opts.maxBytes;
  }

  /**
   * Appends events; resolves once they are on disk (one write and one fdatasync for everything
   * queued meanwhile). Returns their last sequence number, for release().
   */
  append(events: readonly SpoolEvent[]): { lastSeq: number; durable: Promise<void> } {
    if (this.broken || this.closed) {
      return { lastSeq: this.seq, durable: Promise.reject(new SpoolUnavailableError('the spool cannot be written', { cause: this.broken })) };
    }
    const lines = events.map((e) => {
      const entry = { seq: ++this.seq, line: `${JSON.stringify(encode(e))}\n` };
      this.unwritten.push(entry);
      this.unwrittenBytes += entry.line.length;
      return entry.line;
    });
    const durable = new Promise<void>((resolve, reject) => this.queued.push({ lines: lines.join(''), resolve, reject }));
    this.enqueue(() => this.writeQueued());
    return { lastSeq: this.seq, durable };
  }

  /** The database now holds every event up to `seq`: they need not survive a restart any more. */
  release(seq: number): void {
    let i = 0;
    while (i < this.unwritten.length && this.unwritten[i]!.seq <= seq) this.unwrittenBytes -= this.unwritten[i++]!.line.length;
    if (i === 0) return;
    this.unwritten = this.unwritten.slice(i);
    this.enqueue(() => this.compact());
  }

  /**
   * Spools of this scope whose owner is gone: each is locked, read, handed to `adopt` (which
   * must make its events durable again, through append()), then deleted.
   */
  async takeOver(adopt: (events: SpoolEvent[], from: string) => Promise<void>): Promise<number> {
    let adopted = 0;
    const files: string[] = [];
    for (const dir of this.dirs) files.push(...(await fs.readdir(dir).catch(() => [] as string[])).map((name) => path.join(dir, name)));
    for (const file of files) {
      const name = path.basename(file);
      if (!name.endsWith('.log') || file === this.file) continue;
      let release: () => Promise<void>;
      try {
        release = await lockfile.lock(file, { realpath: false, stale: LOCK_STALE_MS, update: LOCK_UPDATE_MS, retries: 0, onCompromised: () => undefined });
      } catch (err) {
        // ELOCKED: a live daemon's spool. ENOENT: another daemon took it over meanwhile.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ELOCKED' && code !== 'ENOENT') this.opts.logger.warn({ err, file }, 'cannot lock a spool to take it over');
        continue;
      }
      try {
        const text = await fs.readFile(file, 'utf8').catch(() => undefined);
        if (text === undefined) continue;
        const { events, torn } = decodeAll(text);
        if (torn > 0) this.opts.logger.warn({ file, torn }, 'skipped unreadable spool lines (a write cut short by a crash)');
        if (events.length > 0) await adopt(events, file);
        await fs.rm(file, { force: true });
        adopted += events.length;
      } finally {
        await release().catch(() => undefined);
      }
    }
    return adopted;
  }

  /**
   * Stops writing and releases the lock. With nothing unwritten the file is deleted; otherwise
   * it stays for the next daemon. Returns how many events it keeps.
   */
  async close(): Promise<number> {
    if (this.closed) return this.unwritten.length;
    this.closed = true;
    await this.chain;
    const kept = this.unwritten.length;
    await this.fh.close().catch(() => undefined);
    if (kept === 0 && !this.broken) await fs.rm(this.file, { force: true });
    await this.unlock().catch(() => undefined);
    return kept;
  }

  private enqueue(op: () => Promise<void>): void {
    this.chain = this.chain.then(op).catch((err: unknown) => {
      if (!this.broken) this.opts.logger.error({ err, file: this.file }, 'cannot write the spool: consumes decided from memory are refused from now on');
      this.broken ??= err;
    });
  }

  private async writeQueued(): Promise<void> {
    const batch = this.queued.splice(0);
    if (batch.length === 0) return;
    try {
      if (this.broken) throw this.broken;
      const buf = Buffer.from(batch.map((b) => b.lines).join(''), 'utf8');
      await this.fh.write(buf);
      await this.fh.datasync();
      this.fileBytes += buf.length;
    } catch (err) {
      const wrapped = new SpoolUnavailableError(`cannot write the spool ${this.file}: ${(err as Error).message}`, { cause: err });
      batch.forEach((b) => b.reject(wrapped));
      throw wrapped;
    }
    batch.forEach((b) => b.resolve());
  }

  private async compact(): Promise<void> {
    if (this.broken) return;
    if (this.unwritten.length === 0) {
      if (this.fileBytes === 0) return;
      await this.fh.truncate(0);
      await this.fh.datasync();
      this.fileBytes = 0;
      return;
    }
    if (this.fileBytes < REWRITE_MIN_BYTES || this.fileBytes < REWRITE_RATIO * this.unwrittenBytes) return;
    // Only events already on disk may move (appends still queued come after this op anyway).
    const tmp = `${this.file}.tmp`;
    const content = this.unwritten.map((e) => e.line).join('');
    await fs.writeFile(tmp, content, { mode: 0o600, flush: true });
    await fs.rename(tmp, this.file);
    await this.fh.close();
    this.fh = await fs.open(this.file, 'a', 0o600);
    const dir = await fs.open(this.dir, 'r');
    await dir.sync().finally(() => dir.close());
    this.fileBytes = Buffer.byteLength(content);
  }
}

// Beside the spool directory, not in it: everything in <dataDir>/spool is a scope directory.
const INDEX_FILE = 'spool-index.json';

function hmac(key: string, label: string, value: string): string {
  return createHmac('sha256', key).update(`${label}\0${value}`).digest('hex').slice(0, 32);
}

function scopeNames(opts: SpoolOptions) {
  const { phoneKey, databaseUrl } = opts.scope;
  return {
    forDatabase: (databaseId: string) => hmac(phoneKey, 'ratelimit spool scope', databaseId),
    provisional: hmac(phoneKey, 'ratelimit provisional spool scope', databaseUrl),
    urlKey: hmac(phoneKey, 'ratelimit spool index', databaseUrl),
  };
}

async function readIndex(root: string): Promise<Record<string, string>> {
  try {
    const parsed = JSON.parse(await fs.readFile(path.join(path.dirname(root), INDEX_FILE), 'utf8')) as unknown;
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return {};
    return Object.fromEntries(
      Object.entries(parsed as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string' && /^[0-9a-f]{32}$/.test(e[1])),
    );
  } catch {
    return {};
  }
}

/** Records url -> scope (write then rename: a crash leaves the old index or the new one). */
async function remember(root: string, urlKey: string, scope: string): Promise<void> {
  const index = await readIndex(root);
  if (index[urlKey] === scope) return;
  index[urlKey] = scope;
  const tmp = path.join(path.dirname(root), `${INDEX_FILE}.${process.pid}.tmp`);
  await fs.writeFile(tmp, JSON.stringify(index), { mode: 0o600 });
  await fs.rename(tmp, path.join(path.dirname(root), INDEX_FILE));
}

/** Compact and self-contained: a spool may be replayed under another policy. */
interface Encoded {
  h: string;
  r: string | null;
  m: string;
  t: number;
  a: boolean;
  c?: Array<[DecisionEvent['counters'][number]['rule'], string]>;
}

/** An outcome's line: `k` tells it from a decision's (older spools have decisions only). */
interface EncodedOutcome {
  k: 'o';
  d: string;
  h: string;
  r: string | null;
  g: string;
  T: number;
  o: Outcome;
  u?: number;
  s: OutcomeSource;
  t: number;
  /** The counters its call is taken back from (OutcomeEvent.takeBack), when any. */
  b?: Array<[DecisionEvent['counters'][number]['rule'], string]>;
}

const OUTCOME_SET: ReadonlySet<string> = new Set(OUTCOMES);
const OUTCOME_SOURCE_SET: ReadonlySet<string> = new Set(OUTCOME_SOURCES);

function encode(e: SpoolEvent): Encoded | EncodedOutcome {
  if (isOutcomeEvent(e)) {
    const o: EncodedOutcome = { k: 'o', d: e.decisionId, h: e.hash, r: e.region ?? null, g: e.range, T: e.decidedAtMs, o: e.outcome, s: e.source, t: e.atMs };
    if (e.durationMs !== undefined) o.u = e.durationMs;
    if (e.takeBack && e.takeBack.length > 0) o.b = e.takeBack.map((c) => [c.rule, c.key]);
    return o;
  }
  const out: Encoded = { h: e.hash, r: e.region ?? null, m: e.masked, t: e.atMs, a: e.allowed };
  if (e.allowed && e.counters.length > 0) out.c = e.counters.map((c) => [c.rule, c.key]);
  return out;
}

function decodeOutcome(x: EncodedOutcome): OutcomeEvent {
  if (
    typeof x.d !== 'string' ||
    typeof x.h !== 'string' ||
    typeof x.g !== 'string' ||
    typeof x.T !== 'number' ||
    typeof x.t !== 'number' ||
    !OUTCOME_SET.has(x.o) ||
    !OUTCOME_SOURCE_SET.has(x.s)
  ) {
    throw new Error('not an outcome');
  }
  return {
    decisionId: x.d,
    hash: x.h,
    region: x.r ?? undefined,
    range: x.g,
    decidedAtMs: x.T,
    outcome: x.o,
    durationMs: typeof x.u === 'number' ? x.u : undefined,
    source: x.s,
    atMs: x.t,
    takeBack: Array.isArray(x.b) ? x.b.map(([rule, key]) => ({ rule, key })) : [],
  };
}

export function decodeAll(text: string): { events: SpoolEvent[]; torn: number } {
  const events: SpoolEvent[] = [];
  let torn = 0;
  for (const line of text.split('\n')) {
    if (line.length === 0) continue;
    try {
      const parsed = JSON.parse(line) as Encoded | EncodedOutcome;
      if ('k' in parsed) {
        events.push(decodeOutcome(parsed));
        continue;
      }
      const x = parsed;
      if (typeof x.h !== 'string' || typeof x.t !== 'number' || typeof x.a !== 'boolean') throw new Error('not a decision');
      events.push({ hash: x.h, region: x.r ?? undefined, masked: x.m, atMs: x.t, allowed: x.a, counters: (x.c ?? []).map(([rule, key]) => ({ rule, key })) });
    } catch {
      torn++;
    }
  }
  return { events, torn };
}
