-- The queue row (graphile-worker's job id) of a watched job, so GET /api/jobs/:jobId can say
-- whether a runner really holds it: after a worker was killed, the view read `running` at its old
-- percent until the heartbeat timeout, then dropped back with nothing saying a retry was under way.
ALTER TABLE tessera_job_runs ADD COLUMN queue_job_id bigint;
