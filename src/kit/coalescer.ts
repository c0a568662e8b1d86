// Coalesces concurrent requests for the same key (a campaign, a table) into one batch: while a
// batch for a key is in flight, newcomers queue; when it ends, everything queued goes in the next
// batch. Under load one round trip serves dozens of requests (64 connections → batches of ~64), so
// throughput is bounded by HTTP, not by PostgreSQL round trips; at low load a request runs at
// once, alone, with no added wait. Correctness never rests on this class: callers' SQL must be
// safe with any number of processes batching side by side.

interface Pending<Req, Res> {
  req: Req;
  resolve(res: Res): void;
  reject(err: unknown): void;
}

interface Lane<Req, Res> {
  queue: Pending<Req, Res>[];
  running: number;
}

/** Runs one batch; answers one result (or Error) per request, in order. */
export type BatchRunner<Req, Res> = (key: string, reqs: Req[]) => Promise<(Res | Error)[]>;

export interface CoalescerOptions {
  /** Most requests in one batch. */
  maxBatch: number;
  /** Batches in flight per key whatever the queue. */
  maxInflight: number;
  /**
   * Optional: more batches in flight (up to `burstInflight`) while at least `burstWhenQueued`
   * requests wait. Each batch in flight costs a round trip; a few big batches carry more than
   * many small ones, so extra parallelism is taken only when the queue is long enough to fill it.
   */
  burstInflight?: number;
  burstWhenQueued?: number;
}

export class Coalescer<Req, Res> {
  private readonly lanes = new Map<string, Lane<Req, Res>>();

  constructor(
    private readonly run: BatchRunner<Req, Res>,
    private readonly opts: CoalescerOptions = { maxBatch: 1000, maxInflight: 1 },
  ) {}

  private canStart(lane: Lane<Req, Res>): boolean {
    if (lane.queue.length === 0) return false;
    if (lane.running < this.opts.maxInflight) return true;
    const { burstInflight, burstWhenQueued } = this.opts;
    return (
      burstInflight !== undefined &&
      lane.running < burstInflight &&
      lane.queue.length >= (burstWhenQueued ?? this.opts.maxBatch)
    );
  }

  submit(key: string, req: Req): Promise<Res> {
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = { queue: [], running: 0 };
      this.lanes.set(key, lane);
    }
    const l = lane;
    return new Promise<Res>((resolve, reject) => {
      l.queue.push({ req, resolve, reject });
      this.pump(key, l);
    });
  }

  private pump(key: string, lane: Lane<Req, Res>): void {
    while (this.canStart(lane)) {
      const batch = lane.queue.splice(0, this.opts.maxBatch);
      lane.running++;
      this.run(
        key,
        batch.map((p) => p.req),
      )
        .then(
          (results) =>
            batch.forEach((p, i) => {
              const r = results[i];
              if (r instanceof Error) p.reject(r);
              else p.resolve(r as Res);
            }),
          (err) => {
            for (const p of batch) p.reject(err);
          },
        )
        .finally(() => {
          lane.running--;
          if (lane.queue.length > 0) this.pump(key, lane);
          else if (lane.running === 0) this.lanes.delete(key);
        });
    }
  }
}
