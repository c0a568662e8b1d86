-- Events (seed 003): raw events wait in events_raw until the worker moves them, in one
-- transaction, into events_processed and the rollups below. Analytics reads rollups only.

-- Ingested, not yet processed. Deleted by the worker in the transaction that counts them.
CREATE TABLE events_raw (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id text,
  user_id text NOT NULL,
  action text NOT NULL,
  ts timestamptz NOT NULL,
  properties jsonb,
  source text NOT NULL DEFAULT 'api',
  received_at timestamptz NOT NULL DEFAULT now()
);

-- messageIds seen within the retention window: a resend is acknowledged but counted once.
CREATE TABLE events_message_ids (
  message_id text PRIMARY KEY,
  seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_message_ids_seen_at ON events_message_ids (seen_at);

CREATE TABLE events_processed (
  id bigint PRIMARY KEY,
  message_id text,
  user_id text NOT NULL,
  action text NOT NULL,
  ts timestamptz NOT NULL,
  properties jsonb,
  source text NOT NULL,
  received_at timestamptz NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_processed_processed_at ON events_processed (processed_at);

-- Events the worker could not parse: kept for inspection, never retried automatically.
CREATE TABLE events_dead_letter (
  id bigint PRIMARY KEY,
  message_id text,
  payload jsonb NOT NULL,
  error text NOT NULL,
  received_at timestamptz NOT NULL,
  failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_dead_letter_failed_at ON events_dead_letter (failed_at DESC);

-- Counts by action per time bucket at three grains (m = minute, h = hour, d = day), so a time
-- series or a total over any range reads at most a few thousand rows whatever the event count.
CREATE TABLE events_counts (
  grain "char" NOT NULL CHECK (grain IN ('m', 'h', 'd')),
  bucket timestamptz NOT NULL,
  action text NOT NULL,
  n bigint NOT NULL,
  PRIMARY KEY (grain, bucket, action)
);

-- Counts by user: all time, and per day for ranged questions.
CREATE TABLE events_user_counts (
  user_id text PRIMARY KEY,
  n bigint NOT NULL
);
CREATE INDEX events_user_counts_top ON events_user_counts (n DESC, user_id);

CREATE TABLE events_user_day_counts (
  day date NOT NULL,
  user_id text NOT NULL,
  n bigint NOT NULL,
  PRIMARY KEY (day, user_id)
);

-- One row per cron service: the last heartbeat (seed 003's cron_status).
CREATE TABLE events_cron_status (
  service text PRIMARY KEY,
  heartbeat_at timestamptz NOT NULL,
  status text NOT NULL,
  version text NOT NULL,
  deleted bigint NOT NULL DEFAULT 0
);
