// For tests: events_raw_batches holds events as JSON batches (migration 007). These read
// and write it the way ingestion and the worker do, so a test can store events around the API (as
// a corrupt row or another writer would) and see what waits.
import type { Queryable } from '../../kit/db.ts';

/**
 * Stores the rows of `select` (columns user_id, action, ts) as raw events, `perBatch` to a batch.
 * NULL fields are left out of the event, as a writer that omitted them would.
 */
export async function storeRaw(db: Queryable, select: string, values: unknown[] = [], perBatch = 10) {
  await db.query(
    `INSERT INTO events_raw_batches (n, events, source)
     SELECT count(*), json_agg(json_strip_nulls(json_build_object('userId', user_id, 'action', action, 'timestamp', ts)) ORDER BY ord)::text, 'api'
     FROM (SELECT s.*, row_number() OVER () AS ord FROM (${select}) s) x
     GROUP BY (ord - 1) / ${perBatch} ORDER BY min(ord)`,
    values,
  );
}

/** The waiting events, oldest first, one row each. */
export async function rawEvents(db: Queryable) {
  // Untyped rows, as a test reads them (user_id, action, ts, properties, message_id, source).
  const { rows } = await db.query(
    `SELECT e.v ->> 'userId' AS user_id, e.v ->> 'action' AS action, (e.v ->> 'timestamp')::timestamptz AS ts,
       e.v -> 'properties' AS properties, e.v ->> 'messageId' AS message_id, b.source
     FROM events_raw_batches b CROSS JOIN LATERAL jsonb_array_elements(b.events::jsonb) WITH ORDINALITY AS e(v, ord)
     ORDER BY b.id, e.ord`,
  );
  return rows;
}
