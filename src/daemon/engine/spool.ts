// The durable spool: decisions made from memory, written to the data dir (one fsync per batch)
// before their replies are sent, so a daemon that stops or crashes while the database is down
// loses none of them. A restarted daemon replays its predecessors' spools into memory before it
// answers and hands them to the write-behind; each spool is emptied once the database holds it.
//
// Layout: <dataDir>/spool/<scope>/<instance>.<startMs>.log, JSON lines, one decision each. The
// scope is a digest of the database URL and the phone key, so daemons of another database (or
// another key) sharing the data dir never replay into the wrong one. Each file is locked with
// proper-lockfile (a directory whose mtime the owner refreshes): a daemon takes over only files
// whose lock went stale (owner gone for LOCK_STALE_MS), never a live peer's, at start and then
// every LOCK_STALE_MS. A crash mid-write leaves at most a torn last line, skipped on replay.
//
// Written events are dropped by compaction (truncate when everything is written, or rewrite the
// unwritten tail once the file is mostly written). Between a database write and the compaction
// a crash replays those events again: the database then counts them twice (over, never under).

import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import lockfile from 'proper-lockfile';
import type { DecisionEvent } from '../../db/decisions.js';

const LOCK_STALE_MS = 10_000;
const LOCK_UPDATE_MS = 2_000;
/** Compaction rewrites the unwritten tail once the file is this many times its size (and big). */
const REWRITE_RATIO = 2;
const REWRITE_MIN_BYTES = 1 << 20;

export interface SpoolOptions {
  dataDir: string;
  /** Identifies the database and key the decisions belong to (not stored in the clear). */
  scope: { databaseUrl: string; phoneKey: string };
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

  private constructor(
    private readonly opts: SpoolOptions,
    readonly dir: string,
    readonly file: string,
    private fh: fs.FileHandle,
    private readonly unlock: () => Promise<void>,
  ) {}

  /** Creates and locks this instance's spool file. Throws when the data dir is not writable. */
  static async open(opts: SpoolOptions): Promise<Spool> {
    const scope = createHash('sha256').update(`${opts.scope.databaseUrl}\0${opts.scope.phoneKey}`).digest('hex').slice(0, 16);
    const dir = path.join(path.resolve(opts.dataDir), 'spool', scope);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const safeId = opts.instanceId.replace(/[^A-Za-z0-9_.-]/g, '_');
    const file = path.join(dir, `${safeId}.${Date.now()}.log`);
    const fh = await fs.open(file, 'a', 0o600);
    const release = await lockfile.lock(file, {
      realpath: false,
      stale: LOCK_STALE_MS,
      update: LOCK_UPDATE_MS,
      retries: 0,
      // The default throws from a timer. A lost lock means a peer may take this spool over and
      // write it too: over-counting, never under-counting; keep going and say so.
      onCompromised: (err) => opts.logger.error({ err, file }, 'spool lock lost: another daemon may replay this spool too'),
    });
    return new Spool(opts, dir, file, fh, release);
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
  append(events: readonly DecisionEvent[]): { lastSeq: number; durable: Promise<void> } {
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
  async takeOver(adopt: (events: DecisionEvent[], from: string) => Promise<void>): Promise<number> {
    let adopted = 0;
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      const file = path.join(this.dir, name);
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

/** Compact and self-contained: a spool may be replayed under another policy. */
interface Encoded {
  h: string;
  r: string | null;
  m: string;
  t: number;
  a: boolean;
  c?: Array<[DecisionEvent['counters'][number]['rule'], string]>;
}

function encode(e: DecisionEvent): Encoded {
  const out: Encoded = { h: e.hash, r: e.region ?? null, m: e.masked, t: e.atMs, a: e.allowed };
  if (e.allowed && e.counters.length > 0) out.c = e.counters.map((c) => [c.rule, c.key]);
  return out;
}

export function decodeAll(text: string): { events: DecisionEvent[]; torn: number } {
  const events: DecisionEvent[] = [];
  let torn = 0;
  for (const line of text.split('\n')) {
    if (line.length === 0) continue;
    try {
      const x = JSON.parse(line) as Encoded;
      if (typeof x.h !== 'string' || typeof x.t !== 'number' || typeof x.a !== 'boolean') throw new Error('not a decision');
      events.push({ hash: x.h, region: x.r ?? undefined, masked: x.m, atMs: x.t, allowed: x.a, counters: (x.c ?? []).map(([rule, key]) => ({ rule, key })) });
    } catch {
      torn++;
    }
  }
  return { events, torn };
}
