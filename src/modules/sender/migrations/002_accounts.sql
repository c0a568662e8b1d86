-- Sender data is owned by the account (kit migration 002), no longer by the credential that made
-- it. Until now `account_id` held the API key's or user's id; each row moves to that credential's
-- account. `created_by` keeps the credential: the per-API-key rate limit stays per key.
-- Names that become duplicates inside one account (an Idempotency-Key or a send config name used
-- by two keys) keep the oldest row as is; later ones get the old owner's id appended, so nothing
-- is lost and the unique constraints hold. Rows of a credential that no longer exists stay as
-- they are (owned by nobody that can sign in), as they were before.
ALTER TABLE sender_batches ADD COLUMN created_by text;
UPDATE sender_batches SET created_by = account_id;

CREATE TEMPORARY TABLE sender_owner_map ON COMMIT DROP AS
  SELECT id::text AS credential, account_id FROM api_keys
  UNION ALL
  SELECT id::text, account_id FROM users;

WITH moved AS (
  SELECT b.id, m.account_id,
    row_number() OVER (PARTITION BY m.account_id, b.idempotency_key ORDER BY b.created_at, b.id) AS n
  FROM sender_batches b JOIN sender_owner_map m ON m.credential = b.account_id)
UPDATE sender_batches b
SET account_id = moved.account_id,
  idempotency_key = CASE WHEN moved.n > 1 THEN b.idempotency_key || '#' || b.created_by ELSE b.idempotency_key END
FROM moved WHERE moved.id = b.id;

WITH moved AS (
  SELECT c.id, c.account_id AS old, m.account_id,
    row_number() OVER (PARTITION BY m.account_id, c.name ORDER BY c.created_at, c.id) AS n
  FROM sender_send_configs c JOIN sender_owner_map m ON m.credential = c.account_id)
UPDATE sender_send_configs c
SET account_id = moved.account_id,
  name = CASE WHEN moved.n > 1 THEN c.name || ' (' || moved.old || ')' ELSE c.name END
FROM moved WHERE moved.id = c.id;

-- Suppression lists merge: an address suppressed under any of an account's credentials stays
-- suppressed for the account (the oldest entry's reason and date win).
INSERT INTO sender_suppressions (account_id, address, reason, created_at)
SELECT m.account_id, s.address, s.reason, s.created_at
FROM sender_suppressions s JOIN sender_owner_map m ON m.credential = s.account_id
ORDER BY s.created_at
ON CONFLICT (account_id, address) DO NOTHING;
DELETE FROM sender_suppressions s USING sender_owner_map m WHERE m.credential = s.account_id;

-- Per-credential buckets under the old key naming are idle from now on.
DELETE FROM sender_rate_buckets WHERE key LIKE 'account:%';
