-- Codes: campaigns, their code inventory and live reservations. Every query the module runs is
-- listed in docs/api/codes.md beside the index it uses.

CREATE TABLE codes_campaigns (
  -- Internal number: codes rows carry this 4-byte key instead of the text id.
  no integer GENERATED ALWAYS AS IDENTITY UNIQUE,
  id text PRIMARY KEY,
  name text NOT NULL,
  length integer NOT NULL CHECK (length BETWEEN 4 AND 32),
  alphabet text NOT NULL,
  alphabet_preset text NOT NULL,
  prefix text NOT NULL DEFAULT '',
  reservation_ttl_seconds integer NOT NULL,
  max_per_user integer,
  -- AES key of the campaign's code permutation (see permutation.ts); never leaves the database.
  fpe_key bytea NOT NULL,
  -- Next counter for the permutation: codes #0 … #next_index-1 have been generated (or claimed
  -- by a running generation).
  next_index bigint NOT NULL DEFAULT 0,
  -- Next allocation order number (codes.seq).
  next_seq bigint NOT NULL DEFAULT 0,
  -- Inventory by state, kept in the same transaction as every change of a code's state.
  available bigint NOT NULL DEFAULT 0,
  reserved bigint NOT NULL DEFAULT 0,
  assigned bigint NOT NULL DEFAULT 0,
  imported bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to codes_campaigns on purpose: a per-row FK check would triple the cost of a
-- 10-million-row COPY, and campaigns are never deleted.
CREATE TABLE codes (
  campaign_no integer NOT NULL,
  code text NOT NULL,
  -- Allocation order: reservations hand out available codes by ascending seq.
  seq bigint NOT NULL,
  -- 0 available, 1 reserved, 2 assigned.
  state smallint NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)),
  reserve_id text,
  user_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  reserved_at timestamptz,
  expires_at timestamptz,
  assigned_at timestamptz,
  PRIMARY KEY (campaign_no, code)
);
-- Reserve: the next available codes of a campaign in seq order (FOR UPDATE SKIP LOCKED).
CREATE INDEX codes_available ON codes (campaign_no, seq) WHERE state = 0;
-- Assign, release, expire and idempotent reserve: the codes of one reservation.
CREATE INDEX codes_by_reservation ON codes (campaign_no, reserve_id) WHERE reserve_id IS NOT NULL;
-- maxPerUser: codes assigned to one user.
CREATE INDEX codes_by_user ON codes (campaign_no, user_id) WHERE user_id IS NOT NULL;

-- One row per reserveId: the primary key makes reserve idempotent across processes (a second
-- reserve with the same id waits for the first to commit, then reads its codes).
CREATE TABLE codes_reservations (
  campaign_no integer NOT NULL,
  reserve_id text NOT NULL,
  state text NOT NULL CHECK (state IN ('reserved', 'assigned', 'released', 'expired')),
  count integer NOT NULL,
  user_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  assigned_at timestamptz,
  ended_at timestamptz,
  PRIMARY KEY (campaign_no, reserve_id)
);
-- The expiry sweep (cron, and the lazy per-campaign check).
CREATE INDEX codes_reservations_expiring ON codes_reservations (campaign_no, expires_at) WHERE state = 'reserved';
CREATE INDEX codes_reservations_expiring_all ON codes_reservations (expires_at) WHERE state = 'reserved';

-- Completed generation jobs, so a retried job never generates twice.
CREATE TABLE codes_generations (
  id text PRIMARY KEY,
  campaign_no integer NOT NULL,
  count bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
