// Releases the jobs of dead workers. graphile-worker locks a job to its pool (jobs.locked_by) and, if
// that process dies without unlocking (kill -9, WORKER_FAILURE_MODE=crash, a drain that timed out),
// leaves it locked for 4 hours. Each Tessera runner registers its pool in tessera_job_workers and
// heartbeats; every runner, on each beat, deletes the pools whose heartbeat is older than
// WORKER_HEARTBEAT_TIMEOUT_MS and hands their jobs back with graphile_worker.force_unlock_workers.
//
// What this trades: a worker that is alive but cannot heartbeat for the whole timeout (event loop
// blocked, cut off from PostgreSQL) is presumed dead, and its running jobs may run a second time
// elsewhere. Jobs are at-least-once with graphile-worker anyway (a retry after a failure re-runs
// them); Tessera's jobs are written to be repeatable. Two guards keep a live worker from being
// presumed dead: the timeout is several beats long, and a process judges others only after it has
// itself beaten without a miss for a whole timeout, so after a PostgreSQL outage every survivor has
// had its chance to beat before anyone is judged. A worker that finds its own row gone re-registers
// and says so (JOB_WORKER_PRESUMED_DEAD).
import { hostname } from 'node:os';
import type { Pool, Queryable } from './db.ts';
import type { Logger } from './log.ts';
import type { KitMetrics } from './metrics.ts';

/** Beats per timeout: three missed beats in a row before a worker is presumed dead. */
export const BEATS_PER_TIMEOUT = 3;

export interface WorkerLivenessOptions {
  pool: Pool;
  log: Logger;
  metrics: KitMetrics;
  role: string;
  timeoutMs: number;
}

/**
 * Before a dead pool's jobs are unlocked, settles the ones that will never run again (attempts used
 * up), so the failed list holds only real failures:
 * - Superseded: graphile-worker's add_job, given the key of a job that is locked, clears the key and
 *   sets attempts = max_attempts ("it must have already started; run a new one"), and the new job
 *   carries the work on. The old job would be deleted when its run ended; its runner died, so
 *   unlocked it would read as failed, 25 of 25 attempts and no error, though nothing failed. Told
 *   apart by updated_at: add_job sets it, taking a job to run does not, so only a superseded job
 *   was updated after it was locked. Deleted, as its run's end would have.
 * - Its last attempt: the runner died during it, and the error shown was the attempt before's (or
 *   none). The error says so, and what the previous one was.
 */
async function settleFinalJobs(db: Queryable, workers: string[]): Promise<void> {
  await db.query(
    `DELETE FROM graphile_worker._private_jobs
     WHERE locked_by = ANY($1::text[]) AND key IS NULL AND attempts >= max_attempts AND updated_at > locked_at`,
    [workers],
  );
  await db.query(
    `UPDATE graphile_worker._private_jobs
     SET last_error = 'its worker (' || locked_by || ') stopped heartbeating during the last attempt'
           || coalesce('; the attempt before failed with: ' || last_error, ''),
         updated_at = now()
     WHERE locked_by = ANY($1::text[]) AND attempts >= max_attempts`,
    [workers],
  );
}

export class WorkerLiveness {
  private timer?: NodeJS.Timeout;
  private beating?: Promise<void>;
  /** Since when this process has beaten without a miss (null after a miss, until the next beat). */
  private healthySince: number | null = null;
  private workerId?: string;

  constructor(private readonly opts: WorkerLivenessOptions) {}

  /** Registers graphile-worker's pool id and starts beating. */
  async start(workerId: string): Promise<void> {
    this.workerId = workerId;
    await this.register();
    this.healthySince = Date.now();
    const interval = Math.max(100, Math.floor(this.opts.timeoutMs / BEATS_PER_TIMEOUT));
    this.timer = setInterval(() => {
      if (this.beating) return; // a slow beat is still out; never stack them
      this.beating = this.beat().finally(() => {
        this.beating = undefined;
      });
    }, interval);
    this.timer.unref();
  }

  /** Graceful stop: graphile-worker has released our jobs; the row goes too. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.beating;
    if (!this.workerId) return;
    await this.opts.pool
      .query('DELETE FROM tessera_job_workers WHERE worker_id = $1', [this.workerId])
      .catch(() => undefined);
    this.workerId = undefined;
  }

  private async register(): Promise<void> {
    await this.opts.pool.query(
      `INSERT INTO tessera_job_workers (worker_id, role, host, pid, timeout_ms) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now()`,
      [this.workerId, this.opts.role, hostname(), process.pid, this.opts.timeoutMs],
    );
  }

  private async beat(): Promise<void> {
    const { pool, log } = this.opts;
    try {
      const { rowCount } = await pool.query(
        'UPDATE tessera_job_workers SET heartbeat_at = now() WHERE worker_id = $1',
        [this.workerId],
      );
      if (rowCount === 0) {
        log.warn({ workerId: this.workerId }, 'JOB_WORKER_PRESUMED_DEAD');
        await this.register();
      }
      this.healthySince ??= Date.now();
      if (Date.now() - this.healthySince >= this.opts.timeoutMs) await this.releaseDead();
    } catch (err) {
      this.healthySince = null;
      log.warn({ err: { message: (err as Error).message } }, 'JOB_WORKER_HEARTBEAT_FAILED');
    }
  }

  /**
   * Deletes the stale pools and unlocks their jobs, in one transaction; each pool is judged once, by
   * the timeout it beats by (processes may be started with different ones), or by ours for a row
   * from before pools recorded theirs.
   */
  async releaseDead(): Promise<{ workers: string[]; jobs: number }> {
    const client = await this.opts.pool.connect();
    try {
      await client.query('BEGIN');
      const dead = await client.query<{ worker_id: string; pid: number; host: string }>(
        `DELETE FROM tessera_job_workers
         WHERE heartbeat_at < now() - make_interval(secs => coalesce(timeout_ms, $1)::double precision / 1000)
         RETURNING worker_id, pid, host`,
        [this.opts.timeoutMs],
      );
      const workers = dead.rows.map((r) => r.worker_id);
      let jobs = 0;
      if (workers.length > 0) {
        const locked = await client.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE locked_by = ANY($1::text[])',
          [workers],
        );
        jobs = locked.rows[0]?.n ?? 0;
        await settleFinalJobs(client, workers);
        await client.query('SELECT graphile_worker.force_unlock_workers($1::text[])', [workers]);
      }
      await client.query('COMMIT');
      if (workers.length > 0) {
        this.opts.metrics.jobLocksReleased.inc(jobs);
        this.opts.log.warn(
          { workers: dead.rows, jobs, timeoutMs: this.opts.timeoutMs },
          'JOB_LOCKS_RELEASED',
        );
      }
      return { workers, jobs };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }
}
