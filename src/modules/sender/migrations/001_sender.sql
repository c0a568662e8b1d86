-- Sender: send configs, batches, per-recipient state, chunk leases, suppressions, shared rate buckets.

-- Named channel settings referenced by batches. `secret` (SMTP password, webhook signing secret)
-- is write-only: no query that feeds the API selects it.
CREATE TABLE sender_send_configs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id text NOT NULL,
  name text NOT NULL,
  channel text NOT NULL CHECK (channel IN ('email', 'webhook', 'mock')),
  settings jsonb NOT NULL DEFAULT '{}',
  secret text,
  rate_per_second integer CHECK (rate_per_second > 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, name)
);

CREATE TABLE sender_batches (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id text NOT NULL,
  idempotency_key text,
  request_hash text,
  name text,
  state text NOT NULL CHECK (state IN ('draft', 'queued', 'sending', 'paused', 'completed', 'cancelled', 'failed')),
  channel text NOT NULL,
  send_config_id uuid REFERENCES sender_send_configs (id),
  -- mock channel options when no send config is named
  channel_options jsonb NOT NULL DEFAULT '{}',
  template jsonb NOT NULL,
  rate_per_second integer,
  max_attempts integer NOT NULL DEFAULT 5,
  code_campaign text,
  scheduled_at timestamptz,
  -- Progress counters, moved in the same transaction as the recipient rows they count, so a GET
  -- never scans a million-row batch.
  total integer NOT NULL DEFAULT 0,
  sent integer NOT NULL DEFAULT 0,
  failed integer NOT NULL DEFAULT 0,
  suppressed integer NOT NULL DEFAULT 0,
  cancelled integer NOT NULL DEFAULT 0,
  delivered integer NOT NULL DEFAULT 0,
  bounced integer NOT NULL DEFAULT 0,
  complained integer NOT NULL DEFAULT 0,
  opened integer NOT NULL DEFAULT 0,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, idempotency_key)
);
CREATE INDEX sender_batches_account ON sender_batches (account_id, created_at DESC);

-- One row per recipient; `id` is the ordinal in the batch, so chunks are id ranges.
-- state: pending → sending → sent | failed | suppressed | cancelled (+ delivered/bounced from events)
CREATE TABLE sender_recipients (
  batch_id uuid NOT NULL REFERENCES sender_batches (id) ON DELETE CASCADE,
  id integer NOT NULL,
  address text NOT NULL,
  variables jsonb,
  state text NOT NULL DEFAULT 'pending',
  attempts smallint NOT NULL DEFAULT 0,
  next_attempt_at timestamptz,
  error text,
  code text,
  sent_at timestamptz,
  event text,
  event_at timestamptz,
  PRIMARY KEY (batch_id, id)
) WITH (fillfactor = 80);
CREATE INDEX sender_recipients_unfinished ON sender_recipients (batch_id, id)
  WHERE state IN ('pending', 'sending');

-- A chunk is a durable unit of work with a lease: a live worker extends it; a sweeper on any worker
-- takes back chunks whose lease ran out (a killed worker) and queues them again.
CREATE TABLE sender_chunks (
  batch_id uuid NOT NULL REFERENCES sender_batches (id) ON DELETE CASCADE,
  no integer NOT NULL,
  from_id integer NOT NULL,
  to_id integer NOT NULL,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done')),
  owner text,
  lease_until timestamptz,
  PRIMARY KEY (batch_id, no)
);
CREATE INDEX sender_chunks_running ON sender_chunks (lease_until) WHERE state = 'running';

CREATE TABLE sender_suppressions (
  account_id text NOT NULL,
  address text NOT NULL,
  reason text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, address)
);

-- Token buckets shared by every worker process: one row per limit (batch, send config, API key).
CREATE TABLE sender_rate_buckets (
  key text PRIMARY KEY,
  tokens double precision NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
