// Group commit: requests that arrive while a statement is in flight wait for it and then go
// together in the next one. A lone request never waits for company, so latency at low load is
// one round trip; at high load one commit serves hundreds of decisions.

interface Waiter<Req, Res> {
  req: Req;
  resolve: (res: Res) => void;
  reject: (err: unknown) => void;
}

export interface BatcherOptions {
  maxBatch: number;
  /** Statements in flight at once. More overlap helps throughput until row locks serialise them. */
  maxInFlight: number;
}

export class Batcher<Req, Res> {
  private queue: Waiter<Req, Res>[] = [];
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly run: (reqs: Req[]) => Promise<Res[]>,
    private readonly opts: BatcherOptions,
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

  private pump(): void {
    while (this.inFlight < this.opts.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.opts.maxBatch);
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
          this.inFlight--;
          this.pump();
          if (this.pending === 0) this.idleWaiters.splice(0).forEach((f) => f());
        });
    }
  }
}
