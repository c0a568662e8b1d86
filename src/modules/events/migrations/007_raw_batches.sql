-- events_raw holds one row per ingested event. Each row cost PostgreSQL a heap tuple, a primary key
-- entry, a timestamptz and a jsonb parse and a sequence value on the way in, and a delete on the
-- way out: ~6-7 µs of PostgreSQL CPU per event ingested (PostgreSQL 18, 100-event COPYs), a
-- quarter of it in resource-owner bookkeeping for the ~1,000 tuple slots a large COPY creates.
-- Ingestion now writes events_raw_batches: one row per batch of up to 1,000 events of one source,
-- stored as the JSON array ingestion builds anyway (~1 µs per event). The worker expands a batch
-- where it aggregates it.
--
-- events_raw stays, for a rolling upgrade: api processes of the previous release keep writing it
-- until they are replaced, and workers of this release move its rows into batches before each
-- claim (worker.ts, ADOPT_LEGACY). A later release may drop it.
--
-- An event's id (events_processed.id, events_dead_letter.id) is its batch's id × 1000 + its
-- position in the batch (0-based), so it is the same when a batch is claimed again after a worker
-- died. Batch ids start 2^40 above every id handed out so far, so events_raw's own ids, which go
-- on growing while old api processes write it, never reach them.
CREATE TABLE events_raw_batches (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  n integer NOT NULL CHECK (n BETWEEN 1 AND 1000),
  -- JSON array of {userId, action, timestamp, properties?, messageId?}. Text, not jsonb: jsonb
  -- parsing on insert tripled the cost of ingestion; the worker parses it (events_parse below).
  events text NOT NULL,
  source text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
-- A batch of 100 events is ~8 kB: stored out of line uncompressed (compressing it on the way in
-- cost more CPU than the disk it saved for rows that live seconds).
ALTER TABLE events_raw_batches ALTER COLUMN events SET STORAGE EXTERNAL;
-- A queue: rows are deleted seconds after they are inserted (see 002).
ALTER TABLE events_raw_batches SET (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 2000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 2000,
  toast.autovacuum_vacuum_scale_factor = 0,
  toast.autovacuum_vacuum_threshold = 10000
);

DO $$
DECLARE
  legacy bigint;
  start bigint;
BEGIN
  EXECUTE format('SELECT last_value FROM %s', pg_get_serial_sequence('events_raw', 'id')) INTO legacy;
  SELECT (greatest(
    legacy,
    (SELECT max(id) FROM events_processed),
    (SELECT max(id) FROM events_dead_letter),
    0
  ) + 1099511627776) / 1000 + 1 INTO start;
  EXECUTE format('ALTER TABLE events_raw_batches ALTER COLUMN id RESTART WITH %s', start);
END
$$;

-- A batch's events, or NULL when its text is not a non-empty JSON array (written around the API,
-- or corrupt): the worker then dead-letters the batch instead of failing on it forever.
CREATE FUNCTION events_parse(batch text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
  parsed jsonb;
BEGIN
  parsed := batch::jsonb;
  RETURN CASE WHEN jsonb_typeof(parsed) = 'array' AND jsonb_array_length(parsed) > 0 THEN parsed END;
EXCEPTION WHEN others THEN
  RETURN NULL;
END
$$;

-- The worker's claim: the oldest batches nobody else holds, locked one at a time until they hold
-- max_events events (at least one batch), so a claim never locks batches it will not process.
CREATE FUNCTION events_claim(max_events integer) RETURNS SETOF events_raw_batches
LANGUAGE plpgsql
AS $$
DECLARE
  c CURSOR FOR SELECT * FROM events_raw_batches ORDER BY id FOR UPDATE SKIP LOCKED;
  r events_raw_batches;
  total integer := 0;
BEGIN
  OPEN c;
  LOOP
    FETCH c INTO r;
    EXIT WHEN NOT FOUND;
    RETURN NEXT r;
    total := total + r.n;
    EXIT WHEN total >= max_events;
  END LOOP;
  CLOSE c;
END
$$;

-- Moves up to `max_rows` events_raw rows (written by a previous release) into batches, in order;
-- returns the events moved. Rows another worker is moving are skipped.
CREATE FUNCTION events_adopt_legacy(max_rows integer) RETURNS integer
LANGUAGE sql
AS $$
  WITH legacy AS (
    DELETE FROM events_raw WHERE id IN (
      SELECT id FROM events_raw ORDER BY id LIMIT max_rows FOR UPDATE SKIP LOCKED
    ) RETURNING *
  ), numbered AS (
    SELECT l.*, row_number() OVER (PARTITION BY source ORDER BY id) AS k FROM legacy l
  ), batches AS (
    INSERT INTO events_raw_batches (n, events, source, received_at)
    SELECT count(*),
      jsonb_agg(jsonb_build_object(
          'userId', user_id, 'action', action,
          'timestamp', to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || CASE WHEN properties IS NULL THEN '{}' ELSE jsonb_build_object('properties', properties) END
        || CASE WHEN message_id IS NULL THEN '{}' ELSE jsonb_build_object('messageId', message_id) END
        ORDER BY id)::text,
      source, min(received_at)
    FROM numbered GROUP BY source, (k - 1) / 1000 ORDER BY min(id)
    RETURNING n
  )
  SELECT coalesce(sum(n), 0)::integer FROM batches
$$;

-- Events waiting now move over.
SELECT events_adopt_legacy(2147483647);
