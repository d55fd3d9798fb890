// The batcher as it was before issue #12 (it rescanned and rebuilt its whole queue on every take),
// kept only as bench/batcher.ts's baseline.

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
   * Requests with one key are decided in arrival order: a request never joins a statement
   * while an earlier one with its key is in flight. (Statements waiting on one row lock are not
   * served in the order they were sent, so a later consume could otherwise take the slot.)
   */
  keyOf?: (req: Req) => string;
}

export class Batcher<Req, Res> {
  private queue: Waiter<Req, Res>[] = [];
  private inFlight = 0;
  /** Keys of requests in statements now in flight, with how many. */
  private readonly busy = new Map<string, number>();
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly run: (reqs: Req[]) => Promise<Res[]>,
    private readonly opts: BatcherOptions<Req>,
  ) {}

  submit(req: Req): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      this.queue.push({ req, resolve, reject });
      this.pump();
    });
  }

  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  /** Resolves once nothing is queued or in flight. */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The next statement's requests, in queue order, skipping keys that are in flight. */
  private take(): Waiter<Req, Res>[] {
    const keyOf = this.opts.keyOf;
    if (!keyOf) return this.queue.splice(0, this.opts.maxBatch);
    const batch: Waiter<Req, Res>[] = [];
    const rest: Waiter<Req, Res>[] = [];
    // A key held back once stays held back for the rest of the scan, keeping its order.
    const held = new Set<string>();
    for (const w of this.queue) {
      const key = keyOf(w.req);
      if (batch.length < this.opts.maxBatch && !this.busy.has(key) && !held.has(key)) batch.push(w);
      else {
        held.add(key);
        rest.push(w);
      }
    }
    this.queue = rest;
    return batch;
  }

  private pump(): void {
    while (this.inFlight < this.opts.maxInFlight && this.queue.length > 0) {
      const batch = this.take();
      if (batch.length === 0) return;
      const keys = this.opts.keyOf ? batch.map((w) => this.opts.keyOf!(w.req)) : [];
      for (const k of keys) this.busy.set(k, (this.busy.get(k) ?? 0) + 1);
      this.inFlight++;
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
          for (const k of keys) {
            const n = this.busy.get(k)! - 1;
            if (n === 0) this.busy.delete(k);
            else this.busy.set(k, n);
          }
          this.inFlight--;
          this.pump();
          if (this.pending === 0) this.idleWaiters.splice(0).forEach((f) => f());
        });
    }
  }
}
