-- Each pool records the heartbeat timeout it beats by, and is judged by that one: a worker started
-- with WORKER_HEARTBEAT_TIMEOUT_MS=240000 beats every 80 s, and processes on the 60 s default
-- presumed it dead between beats and ran its generation job two more times beside it.
ALTER TABLE tessera_job_workers ADD COLUMN timeout_ms integer;
