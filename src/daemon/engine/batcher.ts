// The group-commit queue in front of the engine's statements; separate because it knows nothing
// of phones or policies, only of batching requests and keeping one key's requests in order.
//
// Group commit: requests that arrive while a statement is in flight wait for it and then go
// together in the next one. A lone request never waits for company, so latency at low load is
// one round trip; at high load one commit serves hundreds of decisions.
//
// Cost per request is O(1) amortised however deep the queue (issue #12: rescanning one queue
// on every take made 8192 pipelined requests on one number quadratic): each key has its own
// FIFO, and a FIFO of ready keys (waiting requests, none in flight) says who may go next.

interface Waiter<Req, Res> {
  req: Req;
  resolve: (res: Res) => void;
  reject: (err: unknown) => void;
}

export interface BatcherOptions<Req = unknown> {
  maxBatch: number;
  /** Statements in flight at once. More overlap helps throughput until row locks serialise them. */
  maxInFlight: number;
  /**
   * With this set, a further statement starts only once every statement in flight has run this
   * long. Normally, then, one statement at a time, and the requests arriving meanwhile make the
   * next batch bigger (cheaper per request); a statement stuck on a row lock still does not
   * hold up everything behind it for longer than this.
   */
  overlapAfterMs?: number;
  /**
   * Requests with one key are decided in arrival order: a request never joins a statement
   * while an earlier one with its key is in flight. (Statements waiting on one row lock are not
   * served in the order they were sent, so a later consume could otherwise take the slot.)
   */
  keyOf?: (req: Req) => string;
}

/** A FIFO whose shift is O(1): a head index over an array, compacted once half is spent. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head]!;
    this.items[this.head++] = undefined as T; // let the item be collected
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

/** One key's state; it exists while the key has requests waiting or in flight. */
interface KeyState<Req, Res> {
  key: string;
  waiting: Fifo<Waiter<Req, Res>>;
  /** Statements in flight holding requests of this key (0 or 1, by construction). */
  inFlight: number;
}

export class Batcher<Req, Res> {
  private readonly keys = new Map<string, KeyState<Req, Res>>();
  /** Keys with waiting requests and none in flight, in the order they became so. */
  private readonly ready = new Fifo<KeyState<Req, Res>>();
  /** Without keyOf every request is independent: one FIFO, no in-flight exclusion. */
  private readonly unkeyed = new Fifo<Waiter<Req, Res>>();
  private waiting = 0;
  private inFlight = 0;
  /** When the youngest statement in flight started (performance.now()). */
  private youngestStartMs = 0;
  private overlapTimer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly run: (reqs: Req[]) => Promise<Res[]>,
    private readonly opts: BatcherOptions<Req>,
  ) {}

  submit(req: Req): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      const waiter = { req, resolve, reject };
      this.waiting++;
      const keyOf = this.opts.keyOf;
      if (!keyOf) this.unkeyed.push(waiter);
      else {
        const key = keyOf(req);
        let state = this.keys.get(key);
        if (!state) {
          state = { key, waiting: new Fifo(), inFlight: 0 };
          this.keys.set(key, state);
        }
        // A key that already waits is in `ready` or in flight; only its first waiter makes it ready.
        if (state.waiting.length === 0 && state.inFlight === 0) this.ready.push(state);
        state.waiting.push(waiter);
      }
      this.pump();
    });
  }

  get pending(): number {
    return this.waiting + this.inFlight;
  }

  /**
   * Rejects every request not yet sent (statements in flight are left alone), e.g. when the
   * engine stops deciding in the database: those requests must be decided elsewhere instead.
   */
  cancelWaiting(err: unknown): number {
    const cancelled: Waiter<Req, Res>[] = [];
    while (this.unkeyed.length > 0) cancelled.push(this.unkeyed.shift()!);
    while (this.ready.length > 0) this.ready.shift();
    for (const state of [...this.keys.values()]) {
      while (state.waiting.length > 0) cancelled.push(state.waiting.shift()!);
      if (state.inFlight === 0) this.keys.delete(state.key);
    }
    this.waiting -= cancelled.length;
    for (const w of cancelled) w.reject(err);
    if (this.pending === 0) this.idleWaiters.splice(0).forEach((f) => f());
    return cancelled.length;
  }

  /** Resolves once nothing is queued or in flight. */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * The next statement's requests: whole runs of ready keys, each key's in arrival order and
   * its keys in the order they became ready. A key cut off by maxBatch keeps its rest waiting
   * until this statement is done.
   */
  private take(): { batch: Waiter<Req, Res>[]; states: KeyState<Req, Res>[] } {
    const batch: Waiter<Req, Res>[] = [];
    const states: KeyState<Req, Res>[] = [];
    const max = this.opts.maxBatch;
    if (!this.opts.keyOf) {
      while (batch.length < max && this.unkeyed.length > 0) batch.push(this.unkeyed.shift()!);
    } else {
      while (batch.length < max && this.ready.length > 0) {
        const state = this.ready.shift()!;
        while (batch.length < max && state.waiting.length > 0) batch.push(state.waiting.shift()!);
        state.inFlight++;
        states.push(state);
      }
    }
    this.waiting -= batch.length;
    return { batch, states };
  }

  private hasWork(): boolean {
    return this.opts.keyOf ? this.ready.length > 0 : this.unkeyed.length > 0;
  }

  /** Whether overlapAfterMs lets another statement start now; if not, pump() runs again when it does. */
  private mayOverlap(): boolean {
    const after = this.opts.overlapAfterMs;
    if (after === undefined || this.inFlight === 0) return true;
    const waitMs = this.youngestStartMs + after - performance.now();
    if (waitMs <= 0) return true;
    this.overlapTimer ??= setTimeout(() => {
      this.overlapTimer = undefined;
      this.pump();
    }, waitMs);
    return false;
  }

  private pump(): void {
    while (this.inFlight < this.opts.maxInFlight && this.hasWork() && this.mayOverlap()) {
      const { batch, states } = this.take();
      this.inFlight++;
      this.youngestStartMs = performance.now();
      let results: Promise<Res[]>;
      try {
        results = this.run(batch.map((w) => w.req));
      } catch (err) {
        results = Promise.reject(err);
      }
      results
        .then(
          (res) => batch.forEach((w, i) => w.resolve(res[i]!)),
          (err: unknown) => batch.forEach((w) => w.reject(err)),
        )
        .finally(() => {
          for (const state of states) {
            state.inFlight--;
            if (state.waiting.length > 0) this.ready.push(state);
            else this.keys.delete(state.key);
          }
          this.inFlight--;
          this.pump();
          if (this.pending === 0) this.idleWaiters.splice(0).forEach((f) => f());
        });
    }
  }
}
