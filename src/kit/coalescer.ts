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
  /** Start times of the batches in flight, oldest first. */
  running: number[];
  /** Re-checks the lane when a burst may start by time alone. */
  timer?: NodeJS.Timeout;
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
  /**
   * Optional: also burst when every batch in flight has been out this long, so a slow call (or a
   * stalled worker) never holds up the calls queued behind it for more than this.
   */
  burstAfterMs?: number;
}

export class Coalescer<Req, Res> {
  private readonly lanes = new Map<string, Lane<Req, Res>>();

  constructor(
    private readonly run: BatchRunner<Req, Res>,
    private readonly opts: CoalescerOptions = { maxBatch: 1000, maxInflight: 1 },
  ) {}

  private canStart(lane: Lane<Req, Res>): boolean {
    if (lane.queue.length === 0) return false;
    const running = lane.running.length;
    if (running < this.opts.maxInflight) return true;
    const { burstInflight, burstWhenQueued, burstAfterMs } = this.opts;
    if (burstInflight === undefined || running >= burstInflight) return false;
    if (lane.queue.length >= (burstWhenQueued ?? this.opts.maxBatch)) return true;
    return burstAfterMs !== undefined && performance.now() - lane.running.at(-1)! >= burstAfterMs;
  }

  submit(key: string, req: Req): Promise<Res> {
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = { queue: [], running: [] };
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
      const started = performance.now();
      lane.running.push(started);
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
          lane.running.splice(lane.running.indexOf(started), 1);
          if (lane.queue.length > 0) this.pump(key, lane);
          else if (lane.running.length === 0) {
            clearTimeout(lane.timer);
            this.lanes.delete(key);
          }
        });
    }
    this.armBurstTimer(key, lane);
  }

  /** With requests waiting behind full slots, look again when the newest batch turns burstAfterMs old. */
  private armBurstTimer(key: string, lane: Lane<Req, Res>): void {
    const { burstAfterMs, burstInflight } = this.opts;
    if (burstAfterMs === undefined || lane.timer || lane.queue.length === 0) return;
    if (lane.running.length >= (burstInflight ?? 0)) return;
    const wait = Math.max(0, burstAfterMs - (performance.now() - lane.running.at(-1)!));
    lane.timer = setTimeout(() => {
      lane.timer = undefined;
      this.pump(key, lane);
    }, wait);
    lane.timer.unref();
  }
}
