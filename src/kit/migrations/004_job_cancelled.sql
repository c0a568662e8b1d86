-- A watched job can be cancelled (DELETE /api/jobs/:jobId, Ctrl-C in `tessera codes generate`):
-- before, Ctrl-C left the job to a worker that later ran it, and a re-run generated the codes twice.
ALTER TABLE tessera_job_runs DROP CONSTRAINT tessera_job_runs_state_check;
ALTER TABLE tessera_job_runs ADD CONSTRAINT tessera_job_runs_state_check
  CHECK (state IN ('queued', 'running', 'retrying', 'completed', 'failed', 'cancelled'));
