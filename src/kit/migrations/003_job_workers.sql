-- graphile-worker pools that are alive, by heartbeat. graphile-worker itself releases the jobs of a
-- worker that died (kill -9, crash mode, drain timeout) only after 4 hours; Tessera's workers release
-- the jobs of a pool whose heartbeat went stale instead (src/kit/job-workers.ts).
CREATE TABLE tessera_job_workers (
  -- graphile-worker's pool id: what graphile_worker.jobs.locked_by holds for the jobs it runs.
  worker_id text PRIMARY KEY,
  role text NOT NULL,
  host text NOT NULL,
  pid integer NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);
