// The events cron (every minute, one run per tick however many schedulers): delete processed events,
// remembered messageIds and dead letters older than the retention, write the heartbeat, and wake
// the worker if a backlog waits (the safety net for a wake-up lost to a crash between COMMIT and
// enqueue).
import type { Pool } from '../../kit/db.ts';
import type { Logger } from '../../kit/log.ts';
import { countBacklog } from './metrics.ts';

/** Deletes go in slices so one tick never holds a long lock or a huge transaction. */
const DELETE_SLICE = 50_000;
/** A tick stops after this many; the next tick continues. */
const MAX_DELETE_PER_TICK = 2_000_000;

/** What one tick deleted, each table counted apart: `deleted` is processed events alone. */
export interface CleanupCounts {
  deleted: number;
  messageIdsDeleted: number;
  deadLettersDeleted: number;
}

async function deleteOldProcessed(pool: Pool, retentionHours: number): Promise<number> {
  let deleted = 0;
  for (;;) {
    const { rowCount } = await pool.query(
      `DELETE FROM events_processed WHERE id IN (
         SELECT id FROM events_processed WHERE processed_at < now() - make_interval(hours => $1) LIMIT $2)`,
      [retentionHours, DELETE_SLICE],
    );
    deleted += rowCount ?? 0;
    if ((rowCount ?? 0) < DELETE_SLICE || deleted >= MAX_DELETE_PER_TICK) break;
  }
  return deleted;
}

/** Runs a DELETE taking the retention as $1; returns how many rows it removed. */
async function rowsDeleted(pool: Pool, sql: string, retentionHours: number): Promise<number> {
  const { rowCount } = await pool.query(sql, [retentionHours]);
  return rowCount ?? 0;
}

export async function deleteOldEvents(pool: Pool, retentionHours: number): Promise<CleanupCounts> {
  return {
    deleted: await deleteOldProcessed(pool, retentionHours),
    messageIdsDeleted: await rowsDeleted(
      pool,
      `DELETE FROM events_message_ids WHERE seen_at < now() - make_interval(hours => $1)`,
      retentionHours,
    ),
    deadLettersDeleted: await rowsDeleted(
      pool,
      `DELETE FROM events_dead_letter WHERE failed_at < now() - make_interval(hours => $1)`,
      retentionHours,
    ),
  };
}

export async function writeHeartbeat(pool: Pool, version: string, deleted: number): Promise<Date> {
  const { rows } = await pool.query<{ heartbeat_at: Date }>(
    `INSERT INTO events_cron_status (service, heartbeat_at, status, version, deleted)
     VALUES ('cron', now(), 'healthy', $1, $2)
     ON CONFLICT (service) DO UPDATE SET heartbeat_at = now(), status = 'healthy', version = $1,
       deleted = events_cron_status.deleted + $2, error = NULL, failed_at = NULL
     RETURNING heartbeat_at`,
    [version, deleted],
  );
  return rows[0]!.heartbeat_at;
}

/**
 * Records a failed tick: status 'failing' with the error and its time, until a tick succeeds. The
 * heartbeat is left as it was, so its age still says how long since the last good run. When
 * PostgreSQL itself is what failed, this write fails too (and GET /api/analytics cannot answer):
 * then the heartbeat's age and CRON_DB_ERROR in the log are what tell.
 */
export async function recordCronFailure(pool: Pool, version: string, err: Error): Promise<void> {
  await pool.query(
    `INSERT INTO events_cron_status (service, heartbeat_at, status, version, error, failed_at)
     VALUES ('cron', NULL, 'failing', $1, $2, now())
     ON CONFLICT (service) DO UPDATE SET status = 'failing', version = $1, error = $2, failed_at = now()`,
    [version, err.message.slice(0, 1000)],
  );
}

export async function runCleanupCron(deps: {
  pool: Pool;
  log: Logger;
  retentionHours: number;
  version: string;
  wakeWorker(): Promise<void>;
}): Promise<void> {
  const { pool, log } = deps;
  const counts = await deleteOldEvents(pool, deps.retentionHours);
  log.info({ ...counts, retentionHours: deps.retentionHours }, 'CRON_CLEANUP_DONE');
  // The status row's `deleted` has always counted processed events alone.
  const at = await writeHeartbeat(pool, deps.version, counts.deleted);
  log.info({ service: 'cron', status: 'healthy', timestamp: at.toISOString() }, 'CRON_HEARTBEAT');
  const backlog = await countBacklog(pool);
  if (backlog > 0) await deps.wakeWorker();
}
