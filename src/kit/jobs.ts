// Durable jobs and cron in PostgreSQL through graphile-worker: enqueue inside the caller's own
// transaction (SQL-level add_job), LISTEN/NOTIFY pick-up, exponential-backoff retries, failed jobs
// kept, and a distributed-safe crontab (exactly one run per tick however many schedulers run).
// graphile-worker over pg-boss: pg-boss 10+ needs Node 22, and graphile's add_job is plain SQL we
// can call on any client mid-transaction.
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Tracer } from '@opentelemetry/api';
import {
  type CronItem,
  Logger as GraphileLogger,
  parseCronItems,
  type Runner,
  run,
  runMigrations,
  type TaskList,
  type WorkerEvents,
} from 'graphile-worker';
import { BAD_SCHEMA_RATE, type Chaos, CRON_TIMEOUT_MS, InjectedDbError, SLOW_WORKER_MS } from './chaos.ts';
import { WORKER_HEARTBEAT_TIMEOUT_DEFAULT_MS } from './config.ts';
import { isConnectionError, type Pool, type Queryable } from './db.ts';
import { conflict, HttpError, notFound } from './errors.ts';
import { BEATS_PER_TIMEOUT, WorkerLiveness } from './job-workers.ts';
import { type Logger, moduleLogger } from './log.ts';
import { type KitMetrics, prom } from './metrics.ts';
import { traced } from './telemetry.ts';

/** Job payloads by job name; modules add theirs with `declare module` (one central typed map). */
// biome-ignore lint/suspicious/noEmptyInterface: augmented by modules
export interface JobPayloads {}
export type JobName = keyof JobPayloads & string;

/** The reason a cancelled watched job is aborted with (Jobs#cancelTracked). */
export class JobCancelled extends Error {
  constructor(id: string) {
    super(`job ${id} was cancelled`);
  }
}

export interface JobContext {
  log: Logger;
  jobId: string;
  attempt: number;
  maxAttempts: number;
  /** Set when the job was started with `startTracked`: what GET /api/jobs/:jobId reports. */
  trackedId?: string;
  progress(done: number, total?: number): Promise<void>;
  /**
   * WORKER_FAILURE_MODE=bad_schema: for ~50% of calls, where the mode was set (Chaos#origin), to
   * put in the item's error; the module treats that item as unparseable. Otherwise false.
   */
  injectBadSchema(): string | false;
  signal: AbortSignal;
}

export interface JobDefinition<N extends JobName = JobName> {
  name: N;
  /** Return value is stored as the tracked job's result. */
  run(payload: JobPayloads[N], ctx: JobContext): Promise<unknown>;
  maxAttempts?: number;
  /**
   * What a cancelled watched job leaves behind, stored as its result (a generation: the codes its
   * committed parts wrote), so the job view says it rather than `result: null`. Called once the
   * runner has stopped (run has settled), or at the cancel for a job that was waiting in the queue.
   */
  cancelled?(payload: JobPayloads[N], trackedId: string): Promise<unknown>;
}

export interface CronDefinition {
  /** module:task, e.g. events:cleanup */
  name: string;
  /** crontab pattern, minute resolution */
  schedule: string;
  run(ctx: { log: Logger }): Promise<void>;
  /**
   * Called when a tick fails, injected failures (CRON_FAILURE_MODE) included, so the module can
   * record it where its status is read. Its own error is logged, never thrown: the tick's is.
   */
  onFailure?(err: Error, ctx: { log: Logger }): Promise<void>;
}

export interface EnqueueOptions {
  runAt?: Date;
  jobKey?: string;
  maxAttempts?: number;
  queue?: string;
  priority?: number;
}

export type JobState = 'queued' | 'running' | 'retrying' | 'failed';
export const JOB_STATES: JobState[] = ['queued', 'running', 'retrying', 'failed'];

interface RunningPool {
  runner: Runner;
  poolId: string;
  liveness: WorkerLiveness;
  running: { jobs: number };
}

interface StartOptions {
  jobs: boolean;
  cron: boolean;
  concurrency: number;
  role: string;
  heartbeatTimeoutMs: number;
}

const moduleOf = (name: string) => name.split(':')[0] ?? name;

/**
 * A watched job's state as it stands. `running` is what the job last wrote; if no runner holds its
 * queue row now, it waits for its next attempt (`retrying`, at `runAt`); if its runner has missed
 * two heartbeats (or never registered), it is `stalled`: another runner takes it over once the
 * heartbeat timeout has passed (job-workers.ts).
 */
function heldState(state: string, locked: boolean | null, silent: boolean | null): string {
  if (state !== 'running' || locked === null) return state; // not running, or no queue row to read
  if (!locked) return 'retrying';
  return silent ? 'stalled' : 'running';
}

export class Jobs {
  private readonly defs = new Map<string, JobDefinition>();
  private readonly crons = new Map<string, CronDefinition>();
  private current?: RunningPool;
  /** What start() runs; cleared by stop(), which also ends a restart in progress. */
  private launchArgs?: { opts: StartOptions; taskList: TaskList; cronItems: CronItem[] };

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly metrics: KitMetrics,
    private readonly chaos: Chaos,
    private readonly tracer?: Tracer,
  ) {
    const jobs = this;
    // Read at scrape time; a slow or absent database keeps the last value rather than stall /metrics.
    new prom.Gauge({
      name: 'tessera_jobs_queue_depth',
      help: 'Durable jobs waiting or running (not yet out of attempts)',
      registers: [metrics.registry],
      async collect() {
        const depth = await Promise.race([jobs.depth(), sleep(1000).then(() => undefined)]).catch(
          () => undefined,
        );
        if (depth !== undefined) this.set(depth);
      },
    });
  }

  define<N extends JobName>(def: JobDefinition<N>): void {
    this.defs.set(def.name, def as unknown as JobDefinition);
  }

  cron(def: CronDefinition): void {
    this.crons.set(def.name, def);
  }

  /** Enqueue on `db`: pass the client of an open transaction so the job commits with the business write. */
  async enqueue<N extends JobName>(
    db: Queryable,
    name: N,
    payload: JobPayloads[N],
    opts: EnqueueOptions = {},
  ): Promise<string> {
    const { rows } = await db.query<{ id: string }>(
      `SELECT id FROM graphile_worker.add_job($1, $2::json, queue_name => $3, run_at => $4,
         max_attempts => $5, job_key => $6, priority => $7)`,
      [
        name,
        JSON.stringify(payload),
        opts.queue ?? null,
        opts.runAt ?? null,
        opts.maxAttempts ?? this.defs.get(name)?.maxAttempts ?? 10,
        opts.jobKey ?? null,
        opts.priority ?? null,
      ],
    );
    return String(rows[0]!.id);
  }

  /** A long job a user watches: returns the id for GET /api/jobs/:jobId. */
  async startTracked<N extends JobName>(
    db: Queryable,
    name: N,
    payload: JobPayloads[N],
    total: number,
    opts: EnqueueOptions = {},
  ) {
    const { rows } = await db.query<{ id: string }>(
      `INSERT INTO tessera_job_runs (name, module, total, payload) VALUES ($1, $2, $3, $4) RETURNING id`,
      [name, moduleOf(name), total, JSON.stringify(payload)],
    );
    const trackedId = rows[0]!.id;
    const queueJobId = await this.enqueue(
      db,
      name,
      { ...(payload as object), __trackedId: trackedId } as unknown as JobPayloads[N],
      opts,
    );
    await db.query('UPDATE tessera_job_runs SET queue_job_id = $2 WHERE id = $1', [trackedId, queueJobId]);
    return trackedId;
  }

  async getTracked(id: string) {
    if (!/^[0-9a-f-]{36}$/i.test(id))
      throw notFound(`job ${id} not found: job ids are UUIDs as returned by the request that started it`);
    // The row as the job last wrote it, and who holds its queue row now: a runner that died leaves
    // `running` behind, so that state is read against the lock and the holder's heartbeat.
    const { rows } = await this.pool.query(
      `SELECT r.id, r.name, r.module, r.state, r.done, r.total, r.result, r.error,
         r.created_at AS "createdAt", r.updated_at AS "updatedAt",
         j.attempts AS attempt, j.run_at AS "runAt",
         CASE WHEN j.id IS NOT NULL THEN j.locked_at IS NOT NULL END AS locked,
         w.heartbeat_at < now() - make_interval(secs => coalesce(w.timeout_ms, $2)::double precision / 1000 * $3)
           OR (j.locked_at IS NOT NULL AND w.worker_id IS NULL) AS silent
       FROM tessera_job_runs r
       LEFT JOIN graphile_worker._private_jobs j ON j.id = r.queue_job_id
       LEFT JOIN tessera_job_workers w ON w.worker_id = j.locked_by
       WHERE r.id = $1`,
      // Silent: two beats missed (job-workers.ts beats BEATS_PER_TIMEOUT times per timeout).
      [
        id,
        this.launchArgs?.opts.heartbeatTimeoutMs ?? WORKER_HEARTBEAT_TIMEOUT_DEFAULT_MS,
        2 / BEATS_PER_TIMEOUT,
      ],
    );
    const row = rows[0];
    if (!row) throw notFound(`job ${id} not found`);
    const { locked, silent, attempt, runAt, ...view } = row;
    const state = heldState(row.state, locked, silent);
    return {
      ...view,
      state,
      attempt: attempt ?? null,
      runAt: state === 'retrying' && runAt ? runAt : null,
      percent: row.total > 0 ? Math.min(100, Math.round((row.done / row.total) * 1000) / 10) : null,
    };
  }

  /**
   * Cancels a watched job: one waiting in the queue leaves it now; one running stops at its next
   * progress report (its runner aborts it, and the part it was writing rolls back). What it
   * committed before stays. 409 for a job that already ended.
   */
  async cancelTracked(id: string) {
    await this.getTracked(id); // 404 for an id never started
    const { rowCount } = await this.pool.query(
      `UPDATE tessera_job_runs SET state = 'cancelled', error = 'cancelled', updated_at = now()
       WHERE id = $1 AND state NOT IN ('completed', 'failed', 'cancelled')`,
      [id],
    );
    if (!rowCount) {
      const { state } = await this.getTracked(id); // as it ended, not as it was read above
      throw conflict(`job ${id} has already ended (${state}): there is nothing to cancel`);
    }
    // Out of the queue, as a cancelled running job leaves it (its runner returns). Found by the
    // payload's watched id (the public jobs view has none), so a job queued before queue_job_id
    // was recorded (kit migration 006) is found too; cancels are rare, unlike progress polls.
    const { rows } = await this.pool.query<{ name: string; payload: unknown }>(
      `WITH removed AS (
         SELECT 1 FROM graphile_worker.complete_jobs((
           SELECT array_agg(id) FROM graphile_worker._private_jobs
           WHERE payload->>'__trackedId' = $1::text AND locked_at IS NULL))
       )
       SELECT name, payload FROM tessera_job_runs WHERE id = $1::uuid AND EXISTS (SELECT 1 FROM removed)`,
      [id],
    );
    // Taken from the queue, so nothing runs it now: what it leaves is known at once. (A running
    // one's runner records it when it stops.)
    if (rows[0]) await this.recordCancelled(rows[0].name, rows[0].payload, id);
    return this.getTracked(id);
  }

  /** The result a cancelled job's definition says it left (see JobDefinition.cancelled). */
  private async recordCancelled(name: string, payload: unknown, trackedId: string): Promise<void> {
    const def = this.defs.get(name);
    if (!def?.cancelled) return;
    try {
      const result = await def.cancelled(payload as never, trackedId);
      await this.pool.query(
        `UPDATE tessera_job_runs SET result = $2, updated_at = now() WHERE id = $1 AND state = 'cancelled'`,
        [trackedId, JSON.stringify(result)],
      );
    } catch (err) {
      // The cancel itself stands; only the count of what stayed is missing from the view.
      moduleLogger(this.log, 'jobs').warn({ err, trackedId }, 'JOB_CANCELLED_RESULT_FAILED');
    }
  }

  /**
   * Whether a runner still holds the watched job (a cancelled one until its part has rolled back),
   * through its queue row's id: the CLI asks every 250 ms, and the payload has no index.
   */
  async trackedIsRunning(id: string): Promise<boolean> {
    const { rows } = await this.pool.query(
      `SELECT 1 FROM tessera_job_runs r JOIN graphile_worker._private_jobs j ON j.id = r.queue_job_id
       WHERE r.id = $1 AND j.locked_at IS NOT NULL`,
      [id],
    );
    return rows.length > 0;
  }

  /** Queue state by graphile-worker's own columns; `failed` = out of attempts, kept for inspection. */
  async list(state: JobState | undefined, limit: number) {
    const where = {
      queued: 'locked_at IS NULL AND attempts = 0',
      running: 'locked_at IS NOT NULL',
      retrying: 'locked_at IS NULL AND attempts > 0 AND attempts < max_attempts',
      failed: 'attempts >= max_attempts',
    };
    const cond = state ? where[state] : 'true';
    const { rows } = await this.pool.query(
      `SELECT id::text, task_identifier AS task, attempts, max_attempts AS "maxAttempts", last_error AS "lastError",
         run_at AS "runAt", created_at AS "createdAt", locked_by AS "lockedBy",
         CASE WHEN attempts >= max_attempts THEN 'failed' WHEN locked_at IS NOT NULL THEN 'running'
              WHEN attempts > 0 THEN 'retrying' ELSE 'queued' END AS state
       FROM graphile_worker.jobs WHERE ${cond} ORDER BY id DESC LIMIT $1`,
      [limit],
    );
    return rows;
  }

  async depth(): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE attempts < max_attempts',
    );
    return rows[0]?.n ?? 0;
  }

  /** Jobs that used every attempt: kept in the queue table for inspection. */
  async failedCount(): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE attempts >= max_attempts',
    );
    return rows[0]?.n ?? 0;
  }

  async migrate(): Promise<void> {
    await runMigrations({ pgPool: this.pool, logger: this.graphileLogger() });
  }

  /**
   * Starts a runner for what this role does: module jobs (worker), cron (scheduler), or both, and
   * registers it for heartbeats so its jobs are released soon if it dies (job-workers.ts).
   */
  async start(opts: StartOptions): Promise<void> {
    if (opts.jobs) this.crashIfAsked();
    const taskList: TaskList = {};
    if (opts.jobs)
      for (const def of this.defs.values()) taskList[def.name] = (p, h) => this.runJob(def, p, h);
    const cronItems: CronItem[] = [];
    if (opts.cron) {
      for (const def of this.crons.values()) {
        taskList[def.name] = () => this.runCron(def);
        cronItems.push({
          task: def.name,
          match: def.schedule,
          identifier: def.name,
          options: { maxAttempts: 1, backfillPeriod: 0 },
        });
      }
    }
    if (Object.keys(taskList).length === 0) return;
    this.launchArgs = { opts, taskList, cronItems };
    await this.launch();
  }

  /**
   * WORKER_FAILURE_MODE=crash (or a stored override) when a worker starts: seed 003's test plan
   * starts the worker in this mode and expects it to exit at once with FAILURE_INJECTION, not to
   * wait for work. Set at run time, the mode hits when a job is picked up instead (runJob).
   */
  private crashIfAsked(): void {
    const modules = new Set([...this.defs.keys()].map(moduleOf));
    const crashing = [...modules].find((m) => this.chaos.mode(m, 'worker') === 'crash');
    if (crashing === undefined) return;
    this.chaos.record(crashing, 'worker', 'crash', { at: 'start' });
    process.exit(1);
  }

  /** Runs a graphile-worker pool for start()'s task list, watched so that its failure replaces it. */
  private async launch(): Promise<string> {
    const { opts, taskList, cronItems } = this.launchArgs!;
    // Jobs of this pool still inside their task function: a failed pool's jobs are handed back only
    // once none is, so no job runs twice at once.
    const running = { jobs: 0 };
    const counted: TaskList = {};
    for (const [name, task] of Object.entries(taskList)) {
      if (!task) continue;
      counted[name] = async (payload, helpers) => {
        running.jobs++;
        try {
          return await task(payload, helpers);
        } finally {
          running.jobs--;
        }
      };
    }
    // The pool id is what graphile-worker writes to jobs.locked_by; it is only told in an event.
    const events: WorkerEvents = new EventEmitter();
    let poolId: string | undefined;
    events.on('pool:create', ({ workerPool }) => {
      poolId = workerPool.id;
    });
    const runner = await run({
      pgPool: this.pool,
      taskList: counted,
      parsedCronItems: parseCronItems(cronItems),
      concurrency: opts.concurrency,
      noHandleSignals: true,
      pollInterval: 1000,
      logger: this.graphileLogger(),
      events,
      // graphile-worker 0.17 records a job's end without awaiting it unless these are batched: with
      // PostgreSQL gone mid-job, that record's rejection went unhandled and killed the process. The
      // batcher reports such a failure as the pool's fatal error instead (below).
      preset: { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
    });
    if (!poolId) throw new Error('graphile-worker started without announcing its pool id');
    const liveness = new WorkerLiveness({
      pool: this.pool,
      log: moduleLogger(this.log, 'jobs'),
      metrics: this.metrics,
      role: opts.role,
      timeoutMs: opts.heartbeatTimeoutMs,
    });
    try {
      await liveness.start(poolId);
    } catch (err) {
      // Not registered, so no other process would ever release its jobs: do not keep it running.
      await runner.stop().catch(() => undefined);
      throw err;
    }
    const pool: RunningPool = { runner, poolId, liveness, running };
    this.current = pool;
    // A pool that could not record a job's end (PostgreSQL gone mid-job) stops taking jobs, and its
    // shutdown can wait forever (0.17's batcher miscounts after repeated failures). Unwatched, an
    // `all` process lost its worker for good, or died with its API; watched, the pool is replaced.
    events.on('pool:fatalError', ({ error }) => void this.replace(pool, error));
    runner.promise.catch((err) => this.replace(pool, err));
    return poolId;
  }

  /** Replaces a failed pool: once its jobs have left their code and PostgreSQL answers. */
  private async replace(failed: RunningPool, err: unknown): Promise<void> {
    if (this.current !== failed) return; // replaced already, or stopped on purpose
    this.current = undefined;
    const log = moduleLogger(this.log, 'jobs');
    log.error({ err, poolId: failed.poolId }, 'JOBS_RUNNER_FAILED');
    failed.runner.stop().catch(() => undefined); // may never settle; nothing waits on it
    await failed.liveness.stop(); // no more beats; its row goes below if PostgreSQL is down now
    // A job still in its code is waited for, up to the heartbeat timeout: the window after which any
    // silent pool's jobs are handed back anyway (job-workers.ts).
    const waitUntil = Date.now() + (this.launchArgs?.opts.heartbeatTimeoutMs ?? 0);
    while (failed.running.jobs > 0 && Date.now() < waitUntil) await sleep(100);
    for (let delayMs = 250; this.launchArgs; delayMs = Math.min(delayMs * 2, 5000)) {
      try {
        // Its jobs stay locked by it: hand them back now, since this process knows that pool is gone
        // and none of its jobs is running (or, past the timeout, would be presumed dead anyway).
        await this.pool.query(
          `WITH gone AS (DELETE FROM tessera_job_workers WHERE worker_id = $1)
           SELECT graphile_worker.force_unlock_workers(ARRAY[$1])`,
          [failed.poolId],
        );
        const poolId = await this.launch();
        if (!this.launchArgs) return void (await this.stop()); // stop() came during the launch
        log.warn({ poolId, failedPoolId: failed.poolId }, 'JOBS_RUNNER_RESTARTED');
        return;
      } catch (retryErr) {
        log.debug({ err: retryErr, delayMs }, 'JOBS_RUNNER_RESTART_WAITING');
        await sleep(delayMs);
      }
    }
  }

  /** Graceful: waits for running jobs (graphile-worker's own shutdown), then returns. */
  async stop(): Promise<void> {
    this.launchArgs = undefined;
    const current = this.current;
    this.current = undefined;
    if (!current) return;
    await current.runner.stop();
    // stop() can resolve while a job that just finished still records its completion; the runner's
    // promise settles only when all of that is done, so the pool is not closed under it.
    await current.runner.promise.catch(() => undefined);
    await current.liveness.stop();
  }

  private async runJob(
    def: JobDefinition,
    payload: unknown,
    helpers: { job: { id: string; attempts: number; max_attempts: number }; abortSignal: AbortSignal },
  ) {
    const module = moduleOf(def.name);
    const trackedId = (payload as { __trackedId?: string } | null)?.__trackedId;
    const log = moduleLogger(this.log, module).child({
      job: def.name,
      jobId: helpers.job.id,
      ...(trackedId ? { trackedId } : {}),
    });
    const mode = this.chaos.mode(module, 'worker');
    if (mode === 'crash') {
      this.chaos.record(module, 'worker', mode, { at: 'job', job: def.name, jobId: helpers.job.id });
      // Switched on at run time (crashIfAsked covers a start in this mode). The job stays locked until
      // another runner sees this one's heartbeat go stale (WORKER_HEARTBEAT_TIMEOUT_MS) and releases it.
      process.exit(1);
    }
    if (mode === 'slow') {
      this.chaos.record(module, 'worker', mode, {
        job: def.name,
        jobId: helpers.job.id,
        delayMs: SLOW_WORKER_MS,
      });
      await sleep(SLOW_WORKER_MS);
    }
    const started = process.hrtime.bigint();
    // Aborted on shutdown (graphile-worker's signal) or when the watched job is cancelled, which the
    // job learns from its own progress reports, whichever process holds it.
    const cancel = new AbortController();
    const cancelled = () => cancel.abort(new JobCancelled(trackedId!));
    const ctx: JobContext = {
      log,
      jobId: helpers.job.id,
      attempt: helpers.job.attempts,
      maxAttempts: helpers.job.max_attempts,
      trackedId,
      signal: AbortSignal.any([helpers.abortSignal, cancel.signal]),
      progress: async (done, total) => {
        if (trackedId && !(await this.updateTracked(trackedId, { state: 'running', done, total })))
          cancelled();
      },
      injectBadSchema: () => {
        if (this.chaos.mode(module, 'worker') !== 'bad_schema' || Math.random() >= BAD_SCHEMA_RATE)
          return false;
        this.chaos.record(module, 'worker', 'bad_schema', { job: def.name, jobId: helpers.job.id });
        return this.chaos.origin(module, 'worker');
      },
    };
    try {
      if (trackedId && !(await this.updateTracked(trackedId, { state: 'running' }))) {
        cancelled();
        throw cancel.signal.reason;
      }
      const result = await traced(
        this.tracer,
        `job ${def.name}`,
        { 'job.id': helpers.job.id, 'job.attempt': helpers.job.attempts },
        () => def.run(payload as never, ctx),
      );
      if (trackedId) await this.updateTracked(trackedId, { state: 'completed', result });
      this.metrics.jobsTotal.inc({ task: def.name, outcome: 'success' });
    } catch (err) {
      // (Unread when PostgreSQL is what failed: the error below is then the one to report.)
      if (trackedId && (await this.trackedState(trackedId).catch(() => undefined)) === 'completed') {
        // Another attempt finished the job while this one ran (this runner was presumed dead, or
        // the other was): whether this one was stopped or failed on its own (on codes the other
        // wrote), nothing is left to do. Returning ends it as done, so no failed job is listed.
        log.warn({ attempt: helpers.job.attempts }, 'JOB_SUPERSEDED');
        return;
      }
      if (cancel.signal.aborted) {
        // Cancelled: returning takes it out of the queue (never retried), and the watched row keeps
        // saying cancelled.
        this.metrics.jobsTotal.inc({ task: def.name, outcome: 'cancelled' });
        log.info({ attempt: helpers.job.attempts }, 'JOB_CANCELLED');
        await this.recordCancelled(def.name, payload, trackedId!);
        return;
      }
      this.metrics.jobsTotal.inc({ task: def.name, outcome: 'failure' });
      // A client error (a 4xx: the campaign would pass 1% density, it was deleted) fails the same way
      // on every retry, so the job fails now: out of attempts, it is kept and listed as failed.
      // graphile-worker has no call for this on a running job; its own fail step keeps the cap.
      const permanent =
        err instanceof HttpError && err.statusCode < 500 && (await this.lastAttempt(helpers.job.id));
      const final = permanent || helpers.job.attempts >= helpers.job.max_attempts;
      log.error({ err, attempt: helpers.job.attempts, final }, final ? 'JOB_FAILED' : 'JOB_RETRY');
      if (trackedId) {
        await this.updateTracked(trackedId, {
          state: final ? 'failed' : 'retrying',
          error: (err as Error).message,
        }).catch(() => undefined);
      }
      throw err;
    } finally {
      this.metrics.jobDuration.observe({ task: def.name }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private async trackedState(id: string): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ state: string }>(
      'SELECT state FROM tessera_job_runs WHERE id = $1',
      [id],
    );
    return rows[0]?.state;
  }

  /** Caps a running job's attempts at the current one; false (it is retried as usual) if that fails. */
  private async lastAttempt(jobId: string): Promise<boolean> {
    return this.pool
      .query('UPDATE graphile_worker._private_jobs SET max_attempts = attempts WHERE id = $1', [jobId])
      .then(
        (r) => r.rowCount === 1,
        () => false,
      );
  }

  private async runCron(def: CronDefinition): Promise<void> {
    const module = moduleOf(def.name);
    const log = moduleLogger(this.log, module).child({ cron: def.name });
    log.info({ task: def.name }, 'CRON_JOB_START');
    const mode = this.chaos.mode(module, 'cron');
    try {
      if (mode === 'timeout') {
        this.chaos.record(module, 'cron', mode, { cron: def.name, delayMs: CRON_TIMEOUT_MS });
        await sleep(CRON_TIMEOUT_MS);
      }
      if (mode === 'db_fail') {
        this.chaos.record(module, 'cron', mode, { cron: def.name });
        throw new InjectedDbError(this.chaos.origin(module, 'cron'));
      }
      await def.run({ log });
      this.metrics.jobsTotal.inc({ task: def.name, outcome: 'success' });
    } catch (err) {
      this.metrics.jobsTotal.inc({ task: def.name, outcome: 'failure' });
      log.error({ err, task: def.name }, isConnectionError(err) ? 'CRON_DB_ERROR' : 'CRON_FAILED');
      await def
        .onFailure?.(err as Error, { log })
        .catch((recordErr) => log.warn({ err: recordErr, task: def.name }, 'CRON_FAILURE_NOT_RECORDED'));
      throw err;
    }
  }

  /**
   * False when the row is final: cancelled, or completed by another attempt (a runner presumed dead
   * that came back and finished first). Either way it keeps saying so: the losing attempt's failure
   * overwrote "completed" with "retrying", with no queued job left to ever run again.
   */
  private async updateTracked(
    id: string,
    u: { state: string; done?: number; total?: number; result?: unknown; error?: string },
  ): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      `UPDATE tessera_job_runs SET state = $2, done = coalesce($3, CASE WHEN $2 = 'completed' THEN total ELSE done END),
         total = coalesce($4, total), result = coalesce($5, result), error = $6, updated_at = now()
       WHERE id = $1 AND state NOT IN ('cancelled', 'completed')`,
      [
        id,
        u.state,
        u.done ?? null,
        u.total ?? null,
        u.result === undefined ? null : JSON.stringify(u.result),
        u.error ?? null,
      ],
    );
    return rowCount === 1;
  }

  private graphileLogger(): GraphileLogger {
    // graphile-worker's chatter goes to debug; its warnings and errors stay visible.
    const log = moduleLogger(this.log, 'jobs');
    return new GraphileLogger(() => (level, message, meta) => {
      if (level === 'error') log.error({ meta }, message);
      else if (level === 'warning') log.warn({ meta }, message);
      else log.debug(message);
    });
  }
}
