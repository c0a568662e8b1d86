// Events (seed 003): ingestion (REST and Segment), an aggregation worker that counts each event
// exactly once, analytics from rollups, and a cron that cleans up and writes a heartbeat.
//
// How the worker is woken: after each committed insert the API process enqueues `events:drain`
// with a fixed jobKey (so at most one drain waits; graphile-worker's NOTIFY starts it at once),
// at most every WAKE_MS per process. The drain job loops over batches until the backlog is
// empty. The cron re-enqueues it every minute while a backlog exists, so a wake-up lost to a
// crash only delays processing, never loses it. A process that runs jobs enqueues it as it starts
// when a backlog waits, so a worker started after one died does not wait for that minute.
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { JobContext } from '../../kit/jobs.ts';
import { defineModule, type ModuleContext } from '../../kit/module.ts';
import { recordCronFailure, runCleanupCron } from './cron.ts';
import { registerDeadLetterRoutes } from './dead-letters.ts';
import { Ingestor } from './ingest.ts';
import { countBacklog, createEventsMetrics, type EventsMetrics } from './metrics.ts';
import { registerEventRoutes } from './routes.ts';
import { processBatch } from './worker.ts';

declare module '../../kit/jobs.ts' {
  interface JobPayloads {
    'events:drain': Record<string, never>;
  }
}

export const DRAIN_JOB = 'events:drain';
const WAKE_MS = 100;
/** A drain job hands over to a fresh one after this long, so shutdowns and retries stay prompt. */
const DRAIN_BUDGET_MS = 30_000;

/** Enqueues the drain job at most once per WAKE_MS, with a trailing call so the last insert is never missed. */
class Waker {
  private last = 0;
  private timer?: NodeJS.Timeout;
  constructor(private readonly ctx: ModuleContext) {}

  wake(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.last + WAKE_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.last = Date.now();
      this.enqueue().catch((err) => this.ctx.log.warn({ err }, 'EVENTS_WAKE_FAILED'));
    }, wait);
  }

  enqueue(): Promise<string> {
    return this.ctx.jobs.enqueue(this.ctx.pool, DRAIN_JOB, {}, { jobKey: DRAIN_JOB, maxAttempts: 25 });
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

async function drain(ctx: ModuleContext, metrics: EventsMetrics, waker: Waker, job: JobContext) {
  const started = Date.now();
  let processed = 0;
  let failed = 0;
  for (;;) {
    const r = await processBatch({
      pool: ctx.pool,
      log: job.log,
      metrics,
      batchSize: ctx.config.eventsBatchSize,
      injectBadSchema: job.injectBadSchema,
    });
    processed += r.processed;
    failed += r.failed;
    if (r.claimed === 0) break;
    // Seed 003's slow mode is "5 s per batch": the kit sleeps before each job, so one batch per job.
    const slow = ctx.chaos.mode('events', 'worker') === 'slow';
    if (slow || job.signal.aborted || Date.now() - started > DRAIN_BUDGET_MS) {
      await waker.enqueue();
      break;
    }
    // A small batch means the worker is ahead: wait for more to arrive instead of spinning
    // tiny transactions that compete with ingestion for PostgreSQL (latency ≤ ~200 ms).
    const fill = r.claimed / ctx.config.eventsBatchSize;
    if (fill < 0.1) await sleep(200);
    else if (fill < 1) await sleep(20);
  }
  return { processed, failed };
}

/**
 * Queues a drain when events wait as a job-running process starts: a worker killed mid-drain left
 * no job to run (or one locked by the dead process; add_job with the key queues a new one then),
 * and the backlog sat until the next ingest or cron tick. A failure only delays: the cron is the
 * safety net, so it is logged, not thrown.
 */
async function wakeIfBacklog(ctx: ModuleContext, waker: Waker): Promise<void> {
  try {
    const backlog = await countBacklog(ctx.pool);
    if (backlog === 0) return;
    await waker.enqueue();
    ctx.log.info({ backlog }, 'EVENTS_BACKLOG_AT_START');
  } catch (err) {
    ctx.log.warn({ err }, 'EVENTS_WAKE_FAILED');
  }
}

// setup(), routes() and stop() receive the same context object per platform; tests build several.
const ingestors = new WeakMap<ModuleContext, Ingestor>();
const wakers = new WeakMap<ModuleContext, Waker>();

export const eventsModule = defineModule({
  name: 'events',
  scope: 'events',
  migrationsDir: path.join(import.meta.dirname, 'migrations'),
  async setup(ctx) {
    const metrics = createEventsMetrics(ctx.metrics.registry, ctx.pool);
    const waker = new Waker(ctx);
    const ingestor = new Ingestor(ctx.pool, ctx.log, metrics, () => waker.wake());
    ingestors.set(ctx, ingestor);
    wakers.set(ctx, waker);
    ctx.jobs.define({
      name: DRAIN_JOB,
      maxAttempts: 25,
      run: (_payload, job) => drain(ctx, metrics, waker, job),
    });
    ctx.jobs.cron({
      name: 'events:cleanup',
      schedule: '* * * * *',
      run: ({ log }) =>
        runCleanupCron({
          pool: ctx.pool,
          log,
          retentionHours: ctx.config.eventsRetentionHours,
          version: ctx.version,
          wakeWorker: async () => {
            await waker.enqueue();
          },
        }),
      onFailure: (err) => recordCronFailure(ctx.pool, ctx.version, err),
    });
    // Only where drain jobs run: an api process's wake-ups come from its own ingests.
    if (ctx.role === 'all' || ctx.role === 'worker') await wakeIfBacklog(ctx, waker);
  },
  routes(app, ctx) {
    registerEventRoutes(app, ctx, ingestors.get(ctx)!);
    registerDeadLetterRoutes(app, ctx, () => wakers.get(ctx)!.wake());
  },
  async stop(ctx) {
    wakers.get(ctx)?.stop();
  },
});
