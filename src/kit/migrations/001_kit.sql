-- The kit's own tables: credentials, webhook replay protection, job progress, failure modes.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE api_keys (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  -- SHA-256 of the key: keys are 190+ bits of randomness, so a slow hash adds nothing but latency.
  key_hash bytea NOT NULL UNIQUE,
  prefix text NOT NULL,
  scopes text[] NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);

CREATE TABLE users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL UNIQUE,
  -- scrypt$N$r$p$salt$hash: people pick guessable passwords, so this one is slow on purpose.
  password_hash text NOT NULL,
  role text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Standard Webhooks ids seen inside the tolerance window: a replayed id is rejected.
CREATE TABLE webhook_seen (
  id text PRIMARY KEY,
  seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_seen_seen_at ON webhook_seen (seen_at);

-- Long jobs a user watches through GET /api/jobs/:jobId.
CREATE TABLE tessera_job_runs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  module text NOT NULL,
  state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'retrying', 'completed', 'failed')),
  done bigint NOT NULL DEFAULT 0,
  total bigint NOT NULL DEFAULT 0,
  payload jsonb,
  result jsonb,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Failure modes switched at run time ('*' = every module); config gives the defaults.
CREATE TABLE tessera_chaos (
  module text PRIMARY KEY,
  api text,
  worker text,
  cron text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
