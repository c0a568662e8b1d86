-- Accounts: every API key and dashboard user belongs to one account, and module data (the sender's
-- batches, send configs and suppression list) is owned by the account rather than the credential.
-- A key made for a script and the person signed in on the dashboard then see the same batches, and
-- rotating a key keeps its suppression list. Existing credentials join the account 'default';
-- `tessera keys create --account A` and `tessera users create --account A` make others.
ALTER TABLE api_keys ADD COLUMN account_id text NOT NULL DEFAULT 'default';
ALTER TABLE users ADD COLUMN account_id text NOT NULL DEFAULT 'default';
CREATE INDEX api_keys_account ON api_keys (account_id);
