import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WorkerLiveness } from '../../src/kit/job-workers.ts';
import { fixtureModule } from '../fixtures/fixture-module.ts';
import { startPlatform, waitFor } from '../helpers.ts';

describe('jobs and failure injection', async () => {
  const p = await startPlatform({ modules: [fixtureModule] });
  const post = (url: string, payload: object) =>
    p.app.inject({ method: 'POST', url, headers: p.auth, payload });
  const ticks = async (pid: number) =>
    (await p.kit.pool.query('SELECT count(*)::int AS n FROM fixture_ticks WHERE pid = $1', [pid])).rows[0]
      .n as number;

  it('when the enqueuing transaction rolls back, then no job exists; when it commits, then the job runs', async () => {
    const before = await ticks(process.pid);
    assert.equal((await post('/api/fixture/jobs', { label: 'rolled', rollback: true })).statusCode, 400);
    const ok = await post('/api/fixture/jobs', { label: 'committed' });
    assert.equal(ok.statusCode, 202);
    await waitFor(async () => (await ticks(process.pid)) === before + 1, { what: 'the committed job' });
    const { rows } = await p.kit.pool.query(
      `SELECT count(*)::int AS n FROM graphile_worker._private_jobs WHERE payload->>'label' = 'rolled'`,
    );
    assert.equal(rows[0].n, 0);
  });

  it('when a job keeps failing, then it is retried and kept as failed, listed by GET /api/admin/jobs?state=failed', async () => {
    await post('/api/fixture/jobs', { label: 'doomed', fail: true });
    // graphile-worker's backoff after the first failure is exp(1) ≈ 2.7 s, then the job is out of attempts.
    const failed = await waitFor(
      async () => {
        const res = await p.app.inject({ url: '/api/admin/jobs?state=failed', headers: p.auth });
        return res
          .json()
          .jobs.find(
            (j: { task: string; attempts: number }) => j.task === 'fixture:work' && j.attempts === 2,
          );
      },
      { timeoutMs: 20000, intervalMs: 250, what: 'the job to fail twice' },
    );
    assert.equal(failed.state, 'failed');
    assert.match(failed.lastError, /doomed failed on purpose/);
    assert.equal(p.logs.events('JOB_RETRY').length >= 1, true);
    assert.equal(p.logs.events('JOB_FAILED').length >= 1, true);
    const bad = await p.app.inject({ url: '/api/admin/jobs?state=sideways', headers: p.auth });
    assert.equal(bad.statusCode, 400);
  });

  it('when a job fails with a client error (4xx), then it fails at once, not after its retries, and is listed as failed', async () => {
    const { jobId } = (await post('/api/fixture/jobs', { label: 'hopeless', refuse: true, steps: 1 })).json();
    const tracked = await waitFor(
      async () => {
        const r = (await p.app.inject({ url: `/api/jobs/${jobId}`, headers: p.auth })).json();
        return r.state === 'failed' && r;
      },
      { what: 'the tracked job failed' },
    );
    assert.match(tracked.error, /hopeless refused/);
    const listed = (await p.app.inject({ url: '/api/admin/jobs?state=failed', headers: p.auth }))
      .json()
      .jobs.find((j: { lastError: string }) => /hopeless refused/.test(j.lastError ?? ''));
    assert.ok(listed, 'kept and listed as failed');
    assert.deepEqual([listed.attempts, listed.maxAttempts], [1, 1]);
    assert.equal(p.logs.events('JOB_RETRY').filter((l) => JSON.stringify(l).includes('hopeless')).length, 0);
  });

  it('when a tracked job reports progress, then GET /api/jobs/:jobId shows it completed with its result', async () => {
    const res = await post('/api/fixture/jobs', { label: 'tracked', steps: 4 });
    const { jobId } = res.json();
    const done = await waitFor(
      async () => {
        const r = (await p.app.inject({ url: `/api/jobs/${jobId}`, headers: p.auth })).json();
        return r.state === 'completed' && r;
      },
      { what: 'tracked job completion' },
    );
    assert.equal(done.done, 4);
    assert.equal(done.total, 4);
    assert.equal(done.percent, 100);
    assert.deepEqual(done.result, { label: 'tracked' });
    assert.equal((await p.app.inject({ url: '/api/jobs/not-a-job', headers: p.auth })).statusCode, 404);
    assert.equal((await p.app.inject({ url: `/api/jobs/${jobId}` })).statusCode, 401);
  });

  it('when another attempt completed the job while this one ran, then its failure does not undo "completed"', async () => {
    const res = await post('/api/fixture/jobs', {
      label: 'superseded',
      steps: 1,
      sleepMs: 1500,
      failLate: true,
    });
    const { jobId } = res.json();
    const view = async () => (await p.app.inject({ url: `/api/jobs/${jobId}`, headers: p.auth })).json();
    await waitFor(async () => (await view()).state === 'running', { what: 'the first attempt running' });
    // What a runner presumed dead writes when it comes back and finishes first.
    await p.kit.pool.query(
      `UPDATE tessera_job_runs SET state = 'completed', result = '{"by": "the other attempt"}' WHERE id = $1`,
      [jobId],
    );
    // This attempt then fails, and any later one finds the job done.
    await waitFor(
      async () => {
        const { rows } = await p.kit.pool.query(
          `SELECT attempts, max_attempts, locked_at FROM graphile_worker._private_jobs WHERE payload->>'label' = 'superseded'`,
        );
        const q = rows[0];
        return !q || (q.attempts >= q.max_attempts && !q.locked_at);
      },
      { what: 'no attempt of the job left to run', timeoutMs: 30_000 },
    );
    // Before: "retrying" (then "failed"), for a job whose work was done.
    const v = await view();
    assert.equal(v.state, 'completed', JSON.stringify(v));
    assert.deepEqual(v.result, { by: 'the other attempt' });
    // The attempt that failed on its own knew it had lost: no retry was queued and nothing is listed
    // as failed (it logged JOB_RETRY and ran a second attempt just to find the job done).
    const mine = p.logs.lines.filter((l) => l.trackedId === jobId);
    assert.deepEqual(
      mine
        .filter((l) => /^JOB_(SUPERSEDED|RETRY|FAILED)$/.test(String(l.msg)))
        .map((l) => [l.msg, l.attempt]),
      [['JOB_SUPERSEDED', 1]],
    );
  });

  it('when an admin switches API_FAILURE_MODE at run time, then module routes fail as seed 003 says and ops routes do not', async () => {
    const set = await post('/api/admin/chaos', { module: 'fixture', api: 'db' });
    assert.equal(set.statusCode, 200);
    const down = await p.app.inject({ url: '/api/fixture/echo?text=x', headers: p.auth });
    assert.equal(down.statusCode, 503);
    assert.match(down.json().message, /failure injected: api=db set at run time for module "fixture"/);
    assert.equal(down.headers['retry-after'], '5', 'as a real outage answers');
    assert.equal((await p.app.inject('/health')).statusCode, 200, 'ops endpoints are never injected');

    await post('/api/admin/chaos', { module: 'fixture', api: 'random_500' });
    const codes = [];
    for (let i = 0; i < 200; i++)
      codes.push((await p.app.inject({ url: '/api/fixture/echo?text=x', headers: p.auth })).statusCode);
    const errors = codes.filter((c) => c === 500).length;
    assert.ok(errors > 30 && errors < 100, `about 30% of 200 failed: ${errors}`);
    assert.ok(codes.every((c) => c === 200 || c === 500));
    assert.ok(p.logs.events('API_FAILURE_INJECTED').length >= errors);
    const metrics = (await p.app.inject('/metrics')).body;
    assert.match(
      metrics,
      /tessera_failures_injected_total\{[^}]*module="fixture"[^}]*kind="api"[^}]*mode="random_500"[^}]*\} \d+/,
    );

    // The operator's way out is never injected itself.
    await post('/api/admin/chaos', { api: 'random_500' });
    for (let i = 0; i < 30; i++)
      assert.equal((await p.app.inject({ url: '/api/admin/chaos', headers: p.auth })).statusCode, 200);
    const reset = await p.app.inject({ method: 'DELETE', url: '/api/admin/chaos', headers: p.auth });
    assert.equal(reset.statusCode, 200);
    assert.equal((await p.app.inject({ url: '/api/fixture/echo?text=x', headers: p.auth })).statusCode, 200);
  });

  it('when an admin clears the failure modes, then FAILURE_MODE_CHANGED names who and what was cleared, as when they are set', async () => {
    await post('/api/admin/chaos', { module: 'fixture', api: 'db', worker: 'slow' });
    await post('/api/admin/chaos', { module: '*', cron: 'db_fail' });
    const set = p.logs.events('FAILURE_MODE_CHANGED').at(-1)!;
    assert.equal(set.target, '*');
    assert.equal(set.cron, 'db_fail');
    const before = p.logs.events('FAILURE_MODE_CHANGED').length;
    const reset = await p.app.inject({ method: 'DELETE', url: '/api/admin/chaos', headers: p.auth });
    assert.equal(reset.statusCode, 200);
    const lines = p.logs.events('FAILURE_MODE_CHANGED').slice(before);
    assert.equal(lines.length, 1);
    const cleared = lines[0]!;
    assert.deepEqual(cleared.cleared, { fixture: { api: 'db', worker: 'slow' }, '*': { cron: 'db_fail' } });
    assert.deepEqual(cleared.defaults, { api: 'none', worker: 'none', cron: 'none' });
    for (const line of [set, cleared]) {
      assert.equal(line.by, set.by);
      assert.ok(line.by && line.byId && line.byKind === 'api_key', JSON.stringify(line));
    }
  });

  it('when a failure mode is not one of the seed modes, or the caller is not admin, then 400 and 403', async () => {
    const bad = await post('/api/admin/chaos', { api: 'sometimes' });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().message, 'body/api must be one of "none", "db", "random_500"');
    // A mistyped module was stored, injected nothing, and the drill looked on.
    const typo = await post('/api/admin/chaos', { module: 'fixtrue', api: 'db' });
    assert.equal(typo.statusCode, 400);
    assert.equal(typo.json().message, 'module "fixtrue" is not one of *, kit, fixture (* is every module)');
    assert.deepEqual((await p.app.inject({ url: '/api/admin/chaos', headers: p.auth })).json().overrides, {});
    const empty = await post('/api/admin/chaos', { module: 'fixture' });
    assert.equal(empty.statusCode, 400);
    assert.match(empty.json().message, /at least one of api, worker, cron/);
    const { createApiKey } = await import('../../src/kit/auth.ts');
    const { key } = await createApiKey(p.kit.pool, 'books only', ['books']);
    const res = await p.app.inject({
      method: 'POST',
      url: '/api/admin/chaos',
      headers: { 'x-api-key': key },
      payload: { api: 'db' },
    });
    assert.equal(res.statusCode, 403);
  });

  it('when WORKER_FAILURE_MODE=bad_schema, then about half the jobs see injected bad input and it is counted', async () => {
    await post('/api/admin/chaos', { module: 'fixture', worker: 'bad_schema' });
    try {
      for (let i = 0; i < 40; i++) await post('/api/fixture/jobs', { label: `bs${i}` });
      await waitFor(async () => (await ticks(-1)) + (await ticks(process.pid)) >= 41, {
        timeoutMs: 20000,
        what: '40 jobs',
      });
      const bad = await ticks(-1);
      assert.ok(bad > 5 && bad < 35, `about half of 40 were bad: ${bad}`);
    } finally {
      await p.app.inject({ method: 'DELETE', url: '/api/admin/chaos', headers: p.auth });
    }
  });
});

describe('jobs: dead workers judged by their own heartbeat timeout', async () => {
  const p = await startPlatform({ modules: [] });
  const kitLike = { pool: p.kit.pool, log: p.kit.log, metrics: p.kit.metrics, role: 'worker' };

  it('when a pool beats by a longer timeout than the judge, then it is not presumed dead between its beats', async () => {
    const slow = new WorkerLiveness({ ...kitLike, timeoutMs: 240_000 });
    const fast = new WorkerLiveness({ ...kitLike, timeoutMs: 60_000 });
    await slow.start('pool-slow-beater');
    await fast.start('pool-fast-beater');
    try {
      // Both silent for 90 s: past the judge's 60 s, inside the slow pool's 240 s.
      await p.kit.pool.query(
        `UPDATE tessera_job_workers SET heartbeat_at = now() - interval '90 seconds'
         WHERE worker_id IN ('pool-slow-beater', 'pool-fast-beater')`,
      );
      const judged = await new WorkerLiveness({ ...kitLike, timeoutMs: 60_000 }).releaseDead();
      // Before: the 60 s judge deleted both, and the slow pool's running job ran again elsewhere.
      assert.deepEqual(judged.workers, ['pool-fast-beater']);
    } finally {
      await slow.stop();
      await fast.stop();
    }
  });
});

describe('jobs: what a dead worker held on to, once unlocked', async () => {
  // No runner knows the task, so the queue rows stay as set here: as a killed worker leaves them.
  const p = await startPlatform({ modules: [], role: 'api' });
  const kitLike = { pool: p.kit.pool, log: p.kit.log, metrics: p.kit.metrics, role: 'worker' };
  const q = (sql: string, params: unknown[] = []) => p.kit.pool.query(sql, params);
  const addJob = async (key: string | null, maxAttempts: number) =>
    (
      await q(
        `SELECT id::text FROM graphile_worker.add_job('test:held', '{}'::json, max_attempts => $1, job_key => $2)`,
        [maxAttempts, key],
      )
    ).rows[0].id as string;
  const holdFor = (id: string, worker: string, attempts: number) =>
    q(
      `UPDATE graphile_worker._private_jobs SET locked_by = $2, locked_at = now() - interval '1 second', attempts = $3
       WHERE id = $1`,
      [id, worker, attempts],
    );

  it('when its keyed job was queued again while it ran, then the old one is gone, not failed; a job on its last attempt is failed and says why', async () => {
    const worker = 'pool-killed-holding';
    const superseded = await addJob('test:held:1', 25);
    await holdFor(superseded, worker, 1);
    // The sweeper's re-queue of the same key while the dead worker still holds it: graphile-worker
    // clears the old job's key, sets it out of attempts, and inserts a new one.
    const successor = await addJob('test:held:1', 25);
    assert.notEqual(successor, superseded);
    const lastTry = await addJob(null, 3);
    await q(
      `UPDATE graphile_worker._private_jobs SET last_error = 'timeout', updated_at = now() - interval '1 minute' WHERE id = $1`,
      [lastTry],
    );
    await holdFor(lastTry, worker, 3);
    await q(
      `INSERT INTO tessera_job_workers (worker_id, role, host, pid, timeout_ms, heartbeat_at)
       VALUES ($1, 'worker', 'h', 1, 60000, now() - interval '5 minutes')`,
      [worker],
    );
    const judged = await new WorkerLiveness({ ...kitLike, timeoutMs: 60_000 }).releaseDead();
    assert.deepEqual(judged.workers, [worker]);

    const rows = (
      await q(
        `SELECT id::text, key, attempts, max_attempts, locked_by, last_error FROM graphile_worker.jobs
         WHERE task_identifier = 'test:held' ORDER BY id`,
      )
    ).rows;
    // Before: the superseded job stayed, unlocked, 25 of 25 attempts and no error: listed as failed.
    assert.deepEqual(
      rows.map((r) => r.id),
      [successor, lastTry],
    );
    assert.equal(rows[0].key, 'test:held:1');
    assert.equal(rows[0].attempts, 0);
    assert.equal(rows[1].locked_by, null);
    assert.equal(rows[1].attempts, 3);
    assert.equal(
      rows[1].last_error,
      `its worker (${worker}) stopped heartbeating during the last attempt; the attempt before failed with: timeout`,
    );
    const failed = await p.app.inject({ url: '/api/admin/jobs?state=failed', headers: p.auth });
    assert.deepEqual(
      failed
        .json()
        .jobs.filter((j: { task: string }) => j.task === 'test:held')
        .map((j: { id: string }) => j.id),
      [lastTry],
    );
  });
});

describe('jobs: a watched job whose runner died reads as it stands', async () => {
  // No runner in this process: the queue row is moved by hand, as a dead worker would leave it.
  const p = await startPlatform({ modules: [fixtureModule], role: 'api' });
  const view = async (id: string) => (await p.app.inject({ url: `/api/jobs/${id}`, headers: p.auth })).json();
  const queueRow = 'SELECT queue_job_id FROM tessera_job_runs WHERE id = $1';

  it('when its runner stopped beating, then stalled; when unlocked for its next attempt, then retrying with runAt', async () => {
    const res = await p.app.inject({
      method: 'POST',
      url: '/api/fixture/jobs',
      headers: p.auth,
      payload: { label: 'orphan', steps: 10 },
    });
    const { jobId } = res.json();
    assert.equal((await view(jobId)).state, 'queued');
    const q = (await p.kit.pool.query(queueRow, [jobId])).rows[0].queue_job_id;
    // It ran, wrote 40%, and its worker was killed: the lock stays, no heartbeat comes.
    await p.kit.pool.query("UPDATE tessera_job_runs SET state = 'running', done = 4 WHERE id = $1", [jobId]);
    await p.kit.pool.query(
      `UPDATE graphile_worker._private_jobs SET locked_at = now(), locked_by = 'pool-killed', attempts = 1 WHERE id = $1`,
      [q],
    );
    await p.kit.pool.query(
      `INSERT INTO tessera_job_workers (worker_id, role, host, pid, timeout_ms, heartbeat_at)
       VALUES ('pool-killed', 'worker', 'h', 1, 60000, now() - interval '50 seconds')`,
    );
    // Before: "running", 40%, until the heartbeat timeout, then a drop with no retry shown.
    assert.deepEqual((({ state, attempt, percent }) => ({ state, attempt, percent }))(await view(jobId)), {
      state: 'stalled',
      attempt: 1,
      percent: 40,
    });
    await p.kit.pool.query(
      "UPDATE tessera_job_workers SET heartbeat_at = now() WHERE worker_id = 'pool-killed'",
    );
    assert.equal((await view(jobId)).state, 'running', 'a runner that beats is running');
    // The timeout passed: another runner unlocked it, and it waits for its second attempt.
    await p.kit.pool.query(
      `UPDATE graphile_worker._private_jobs SET locked_at = NULL, locked_by = NULL, run_at = now() + interval '5 seconds' WHERE id = $1`,
      [q],
    );
    const waiting = await view(jobId);
    assert.equal(waiting.state, 'retrying');
    assert.ok(Date.parse(waiting.runAt) > Date.now(), waiting.runAt);
  });
});
