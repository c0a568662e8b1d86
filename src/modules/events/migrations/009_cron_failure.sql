-- The cron's status said "healthy" whatever happened: only a successful tick wrote it. A failed tick
-- now records why and when here (status 'failing'), and the next successful one clears both, so
-- GET /api/analytics says the cron is failing rather than only letting its heartbeat age.
ALTER TABLE events_cron_status ADD COLUMN error text, ADD COLUMN failed_at timestamptz;
-- A first tick that fails has no heartbeat yet.
ALTER TABLE events_cron_status ALTER COLUMN heartbeat_at DROP NOT NULL;
