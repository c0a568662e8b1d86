// The aggregation worker. One batch is one transaction: lock raw events (FOR UPDATE SKIP LOCKED, so
// several workers share the backlog without waiting on each other), then in one statement delete
// them, write processed rows or dead letters, and add them to the rollups. The COMMIT is what
// makes it exactly once: a worker that dies mid-batch commits nothing and its locks vanish with
// its connection, so the same events are claimed again by the next worker.
import { type Pool, type PoolClient, withTransaction } from '../../kit/db.ts';
import type { Logger } from '../../kit/log.ts';
import type { EventsMetrics } from './metrics.ts';

const MAX_ID = 256;
const MAX_ACTION = 128;

interface Claimed {
  id: number;
  user_id: string;
  action: string;
  ts: Date;
  received_at: Date;
}

export interface BatchResult {
  claimed: number;
  processed: number;
  failed: number;
}

const CLAIM = `SELECT id, user_id, action, ts, received_at FROM events_raw
  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`;

/**
 * $1 every claimed id, $2/$3 the ids that failed to parse and why. Rollup upserts are sorted by key
 * so two workers committing overlapping buckets wait on each other instead of deadlocking.
 */
const MOVE = `
WITH claimed AS (
  DELETE FROM events_raw WHERE id = ANY($1::bigint[]) RETURNING *
), bad AS (
  SELECT c.*, b.error FROM claimed c JOIN unnest($2::bigint[], $3::text[]) AS b(id, error) USING (id)
), good AS (
  SELECT * FROM claimed WHERE id <> ALL($2::bigint[])
), dead AS (
  INSERT INTO events_dead_letter (id, message_id, payload, error, received_at)
  SELECT id, message_id,
    jsonb_build_object('userId', user_id, 'action', action, 'timestamp', ts, 'properties', properties, 'source', source),
    error, received_at
  FROM bad
), processed AS (
  INSERT INTO events_processed (id, message_id, user_id, action, ts, properties, source, received_at)
  SELECT id, message_id, user_id, action, ts, properties, source, received_at FROM good
), by_action AS (
  INSERT INTO events_counts (grain, bucket, action, n)
  SELECT g.grain, date_trunc(g.unit, good.ts, 'UTC'), good.action, count(*)
  FROM good CROSS JOIN (VALUES ('m'::"char", 'minute'), ('h'::"char", 'hour'), ('d'::"char", 'day')) AS g(grain, unit)
  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
  ON CONFLICT (grain, bucket, action) DO UPDATE SET n = events_counts.n + EXCLUDED.n
), by_user AS (
  INSERT INTO events_user_counts (user_id, n)
  SELECT user_id, count(*) FROM good GROUP BY 1 ORDER BY 1
  ON CONFLICT (user_id) DO UPDATE SET n = events_user_counts.n + EXCLUDED.n
), by_user_day AS (
  INSERT INTO events_user_day_counts (day, user_id, n)
  SELECT (ts AT TIME ZONE 'UTC')::date, user_id, count(*) FROM good GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (day, user_id) DO UPDATE SET n = events_user_day_counts.n + EXCLUDED.n
), by_user_week AS (
  INSERT INTO events_user_week_counts (week, user_id, n)
  SELECT date_trunc('week', ts AT TIME ZONE 'UTC')::date, user_id, count(*) FROM good GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (week, user_id) DO UPDATE SET n = events_user_week_counts.n + EXCLUDED.n
)
SELECT (SELECT count(*) FROM good)::int AS processed, (SELECT count(*) FROM bad)::int AS failed`;

/** Why a stored event cannot be aggregated, or null when it can. */
export function parseProblem(e: Claimed): string | null {
  if (typeof e.user_id !== 'string' || e.user_id.trim() === '' || e.user_id.length > MAX_ID)
    return 'userId must be a non-empty string of at most 256 characters';
  if (typeof e.action !== 'string' || e.action.trim() === '' || e.action.length > MAX_ACTION)
    return 'action must be a non-empty string of at most 128 characters';
  if (!(e.ts instanceof Date) || Number.isNaN(e.ts.getTime())) return 'timestamp is not a valid date';
  return null;
}

export interface BatchDeps {
  pool: Pool;
  log: Logger;
  metrics: EventsMetrics;
  batchSize: number;
  /** WORKER_FAILURE_MODE=bad_schema: true when this event must be treated as unparseable. */
  injectBadSchema(): boolean;
  /** Test seam: runs inside the transaction after the move, before COMMIT. */
  beforeCommit?(client: PoolClient): Promise<void>;
}

export async function processBatch(deps: BatchDeps): Promise<BatchResult> {
  const { log, metrics } = deps;
  const started = performance.now();
  const outcome = await withTransaction(deps.pool, async (client) => {
    const { rows } = await client.query<Claimed>(CLAIM, [deps.batchSize]);
    if (rows.length === 0)
      return { claimed: [] as Claimed[], badIds: [] as number[], processed: 0, failed: 0 };
    log.info({ size: rows.length }, 'WORKER_JOB_START');
    const badIds: number[] = [];
    const errors: string[] = [];
    for (const e of rows) {
      const problem = deps.injectBadSchema()
        ? 'schema parse error (failure injected: WORKER_FAILURE_MODE=bad_schema)'
        : parseProblem(e);
      if (problem) {
        badIds.push(e.id);
        errors.push(problem);
        log.warn({ eventId: e.id, userId: e.user_id, error: problem }, 'WORKER_PARSE_ERROR');
      }
    }
    log.info({ count: rows.length - badIds.length, deadLetter: badIds.length }, 'WORKER_PROCESSING');
    const moved = await client.query<{ processed: number; failed: number }>(MOVE, [
      rows.map((r) => r.id),
      badIds,
      errors,
    ]);
    await deps.beforeCommit?.(client);
    return { claimed: rows, badIds, ...moved.rows[0]! };
  });
  const { claimed, badIds, processed, failed } = outcome;
  if (claimed.length > 0) {
    const now = Date.now();
    const bad = new Set(badIds);
    metrics.processed.inc(processed);
    if (failed) metrics.failed.inc({ reason: 'parse' }, failed);
    for (const e of claimed) if (!bad.has(e.id)) metrics.lag.observe((now - e.received_at.getTime()) / 1000);
    log.info({ processed, failed, ms: Math.round(performance.now() - started) }, 'WORKER_JOB_DONE');
  }
  return { claimed: claimed.length, processed, failed };
}
