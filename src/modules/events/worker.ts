// The aggregation worker. One batch is one transaction: lock stored batches of events (FOR UPDATE
// SKIP LOCKED, so several workers share the backlog without waiting on each other), then in one
// statement delete them, write processed rows or dead letters, and add them to the rollups. The
// COMMIT is what makes it exactly once: a worker that dies mid-batch commits nothing and its locks
// vanish with its connection, so the same events are claimed again by the next worker.
import { realCalendarFields } from '../../kit/dates.ts';
import { type Pool, type PoolClient, withTransaction } from '../../kit/db.ts';
import type { Logger } from '../../kit/log.ts';
import { longerThan } from '../../kit/text.ts';
import type { EventsMetrics, FailedReason } from './metrics.ts';
import { MAX_ACTION, MAX_ID } from './validate.ts';

/** One claimed event: fields as stored, unchecked (null when the event lacks them). */
interface Claimed {
  id: number;
  batch: number;
  user_id: string | null;
  action: string | null;
  ts: string | null;
  received_at: Date;
  /**
   * The event is JSON null: the stand-in for a batch that did not parse (see eventsOf), or, in text
   * written around the API, a null element. Told apart from a missing field for the dead letter.
   */
  null_event: boolean;
}

export interface BatchResult {
  claimed: number;
  processed: number;
  failed: number;
}

/**
 * The events of batches `b` (migration 007), one row `e` each: `e.id` is the batch's id × 1000 + the
 * event's position, `e.v` the event. A batch that does not parse (`parsed` NULL) yields one null
 * event. CLAIM and MOVE both expand through this, so an event has the same id in each.
 */
const eventsOf = (parsed: string) =>
  `CROSS JOIN LATERAL (SELECT b.id * 1000 + x.ord - 1 AS id, x.v
     FROM jsonb_array_elements(coalesce(${parsed}, '[null]')) WITH ORDINALITY AS x(v, ord)) e`;

/**
 * The events of the batches claimed (events_claim, migration 007: locked with SKIP LOCKED until they
 * hold $1 events), one row each. The timestamp stays text here: parseProblem judges it, so a bad
 * one dead-letters its event instead of failing the statement. Each batch is parsed once here
 * (worker.test.ts counts the calls): a column that named the parse again was folded by the
 * planner into the select list and re-parsed the batch for every event, 12 s instead of 13 ms to
 * claim 10,000 events.
 */
const CLAIM = `SELECT e.id, b.id AS batch, e.v ->> 'userId' AS user_id, e.v ->> 'action' AS action,
    e.v ->> 'timestamp' AS ts, b.received_at, jsonb_typeof(e.v) = 'null' AS null_event
  FROM events_claim($1) b ${eventsOf('events_parse(b.events)')}`;

/**
 * $1 the claimed batches, $2/$3 the ids of the events that failed to parse and why. Rollup upserts
 * are sorted by key so two workers committing overlapping buckets wait on each other instead of
 * deadlocking.
 */
const MOVE = `
WITH batches AS (
  DELETE FROM events_raw_batches WHERE id = ANY($1::bigint[]) RETURNING id, events, source, received_at
), parsed AS MATERIALIZED (
  -- Each batch parsed once (unmaterialized, the parse was repeated for every event of the batch),
  -- and its text kept only when it does not parse: it is the dead letter's payload then.
  SELECT id, events_parse(events) AS events, events AS raw, source, received_at FROM batches
), claimed AS (
  SELECT e.id, e.v, CASE WHEN b.events IS NULL THEN b.raw END AS unparsed, b.source, b.received_at
  FROM parsed b ${eventsOf('b.events')}
), bad AS (
  SELECT c.*, b.error FROM claimed c JOIN unnest($2::bigint[], $3::text[]) AS b(id, error) USING (id)
), good AS (
  SELECT id, v ->> 'messageId' AS message_id, v ->> 'userId' AS user_id, v ->> 'action' AS action,
    (v ->> 'timestamp')::timestamptz AS ts, v -> 'properties' AS properties, source, received_at
  FROM claimed WHERE id <> ALL($2::bigint[])
), dead AS (
  INSERT INTO events_dead_letter (id, message_id, payload, error, received_at)
  SELECT id, CASE WHEN jsonb_typeof(v) = 'object' THEN v ->> 'messageId' END,
    CASE WHEN unparsed IS NOT NULL THEN jsonb_build_object('batch', unparsed, 'source', source)
         WHEN jsonb_typeof(v) = 'object' THEN v || jsonb_build_object('source', source)
         ELSE jsonb_build_object('event', v, 'source', source) END,
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
  -- events_user_days_add (migration 008) writes both 14-day rows of each day. A SELECT in WITH runs
  -- only when read, so the last line reads it.
  SELECT events_user_days_add(array_agg(day), array_agg(user_id), array_agg(n))
  FROM (SELECT (ts AT TIME ZONE 'UTC')::date AS day, user_id, count(*) AS n FROM good GROUP BY 1, 2) d
)
SELECT (SELECT count(*) FROM good)::int AS processed, (SELECT count(*) FROM bad)::int AS failed,
  (SELECT count(*) FROM by_user_day)::int AS user_days_added`;

/** The timestamp format ingestion writes (toISOString); parts: year, month, day, hour, minute, second, offset. */
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?(?:Z|[+-](\d{2}):(\d{2}))$/;

/**
 * True when `ts` is an ISO 8601 time PostgreSQL's timestamptz reads. Stricter than Date.parse,
 * which takes 2025-02-30 and 24:00 (PostgreSQL refuses the first): one such event written around
 * the API would otherwise fail its whole batch's statement, again on every retry.
 */
export function isIsoTime(ts: string): boolean {
  const m = ISO_TIME.exec(ts);
  if (!m) return false;
  const [y, mo, d, h, mi, s, oh, om] = m.slice(1).map((x) => (x === undefined ? 0 : Number(x)));
  return realCalendarFields(y!, mo!, d!, h, mi, s) && oh! <= 15 && om! <= 59;
}

/** Why a stored event cannot be aggregated, or null when it can. */
export function parseProblem(e: Claimed): string | null {
  // Said plainly: such an event has no fields, and "userId must be …" sent operators the wrong way.
  if (e.null_event)
    return "the event is null: its stored batch is not a JSON array PostgreSQL can read (a NUL or a lone surrogate stored before the API refused them, or text written around the API), and the whole batch is this dead letter's payload; or the batch holds a null element";
  if (typeof e.user_id !== 'string' || e.user_id.trim() === '' || longerThan(e.user_id, MAX_ID))
    return 'userId must be a non-empty string of at most 256 characters';
  if (typeof e.action !== 'string' || e.action.trim() === '' || longerThan(e.action, MAX_ACTION))
    return 'action must be a non-empty string of at most 128 characters';
  if (typeof e.ts !== 'string' || !isIsoTime(e.ts)) return 'timestamp is not a valid ISO 8601 date';
  return null;
}

export interface BatchDeps {
  pool: Pool;
  log: Logger;
  metrics: EventsMetrics;
  batchSize: number;
  /** WORKER_FAILURE_MODE=bad_schema: where the mode was set when this event must be treated as unparseable. */
  injectBadSchema(): string | false;
  /** Test seam: runs inside the transaction after the move, before COMMIT. */
  beforeCommit?(client: PoolClient): Promise<void>;
}

export async function processBatch(deps: BatchDeps): Promise<BatchResult> {
  const { log, metrics } = deps;
  const started = performance.now();
  const outcome = await withTransaction(deps.pool, async (client) => {
    // Rows an api process of the previous release wrote (during a rolling upgrade) become batches.
    await client.query({
      name: 'events_adopt_legacy',
      text: 'SELECT events_adopt_legacy($1)',
      values: [deps.batchSize],
    });
    const { rows } = await client.query<Claimed>(CLAIM, [deps.batchSize]);
    if (rows.length === 0)
      return { claimed: [] as Claimed[], badIds: [] as number[], processed: 0, failed: 0 };
    const batches = [...new Set(rows.map((r) => r.batch))];
    log.info({ size: rows.length }, 'WORKER_JOB_START');
    const badIds: number[] = [];
    const errors: string[] = [];
    for (const e of rows) {
      const injected = deps.injectBadSchema();
      const problem = injected ? `schema parse error (failure injected: ${injected})` : parseProblem(e);
      if (problem) {
        badIds.push(e.id);
        errors.push(problem);
        log.warn({ eventId: e.id, userId: e.user_id, error: problem }, 'WORKER_PARSE_ERROR');
      }
    }
    log.info({ count: rows.length - badIds.length, deadLetter: badIds.length }, 'WORKER_PROCESSING');
    const moved = await client.query<{ processed: number; failed: number }>(MOVE, [batches, badIds, errors]);
    await deps.beforeCommit?.(client);
    return { claimed: rows, badIds, ...moved.rows[0]! };
  });
  const { claimed, badIds, processed, failed } = outcome;
  if (claimed.length > 0) {
    const now = Date.now();
    const bad = new Set(badIds);
    metrics.processed.inc(processed);
    if (failed) metrics.failed.inc({ reason: 'parse' satisfies FailedReason }, failed);
    for (const e of claimed) if (!bad.has(e.id)) metrics.lag.observe((now - e.received_at.getTime()) / 1000);
    log.info({ processed, failed, ms: Math.round(performance.now() - started) }, 'WORKER_JOB_DONE');
  }
  return { claimed: claimed.length, processed, failed };
}
