// Real processes: the launcher's signal handling, cron across two schedulers, RPC over NATS.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  adminKey,
  json,
  NATS_URL,
  needsNats,
  processDatabase,
  spawnTessera,
  testPool,
  waitFor,
} from '../helpers.ts';

describe('processes', () => {
  it('when SIGTERM arrives with a request in flight, then the request completes and the process exits 0', async () => {
    const db = await processDatabase();
    const t = await spawnTessera('all', { DATABASE_URL: db }, { fixture: true });
    await t.waitHealthy();
    const inflight = fetch(`${t.url}/api/fixture/slow?ms=1500`, {
      headers: { authorization: `Bearer ${await adminKey(db)}` },
    });
    await waitFor(() => t.logLines().some((l) => l.msg === 'FIXTURE_SLOW_STARTED'), {
      what: 'the request to reach its handler',
    });
    const started = Date.now();
    const code = await t.stop('SIGTERM');
    const res = await inflight;
    assert.equal(res.status, 200, 'in-flight request finished');
    assert.equal(code, 0);
    assert.ok(Date.now() - started < 10000, 'exited within 10 s');
    assert.match(t.output(), /SHUTDOWN_DONE/);
  });

  it('when SIGTERM arrives with a job mid-way, then the job completes and the process exits 0 within 10 s', async () => {
    const db = await processDatabase();
    const t = await spawnTessera('all', { DATABASE_URL: db }, { fixture: true });
    await t.waitHealthy();
    const res = await fetch(`${t.url}/api/fixture/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await adminKey(db)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ label: 'drain', steps: 1, sleepMs: 2500 }),
    });
    assert.equal(res.status, 202);
    const { jobId } = await json(res);
    const pool = testPool(db);
    try {
      const state = async () =>
        (await pool.query('SELECT state FROM tessera_job_runs WHERE id = $1', [jobId])).rows[0]?.state;
      await waitFor(async () => (await state()) === 'running', { what: 'the job to start' });
      const started = Date.now();
      const code = await t.stop('SIGTERM');
      assert.equal(code, 0);
      assert.ok(Date.now() - started < 10000, `exited in ${Date.now() - started} ms`);
      assert.equal(await state(), 'completed', 'the running job finished before the exit');
      const left = await pool.query(
        "SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE task_identifier = 'fixture:work'",
      );
      assert.equal(left.rows[0].n, 0, 'and left the queue');
      assert.match(t.output(), /SHUTDOWN_DONE/);
    } finally {
      await pool.end();
    }
  });

  it('when a worker is killed -9 with a job locked, then a live worker releases and runs it after WORKER_HEARTBEAT_TIMEOUT_MS, and never while the first lives', async () => {
    const db = await processDatabase();
    // 4 s, a beat every 1.3 s: A is presumed dead only after ~3 missed beats, which a loaded CI
    // machine starting B beside it could cause at 2 s (a beat every 0.67 s).
    const env = { DATABASE_URL: db, WORKER_HEARTBEAT_TIMEOUT_MS: '4000' };
    const a = await spawnTessera('worker', env, { fixture: true });
    await a.waitHealthy();
    const pool = testPool(db);
    try {
      const workerOf = async (pid: number) =>
        (await pool.query('SELECT worker_id FROM tessera_job_workers WHERE pid = $1', [pid])).rows[0]
          ?.worker_id as string | undefined;
      const lockedBy = async () =>
        (
          await pool.query(
            "SELECT locked_by FROM graphile_worker.jobs WHERE task_identifier = 'fixture:work'",
          )
        ).rows[0]?.locked_by as string | undefined;
      await pool.query(
        `SELECT graphile_worker.add_job('fixture:work', '{"label":"orphan","sleepMs":600000}'::json, max_attempts => 3)`,
      );
      const aId = await waitFor(() => workerOf(a.proc.pid!), { what: 'worker A registered' });
      await waitFor(async () => (await lockedBy()) === aId, { what: 'the job locked by A' });

      // A second worker beside a live A: more than two timeouts pass and A keeps its job.
      const b = await spawnTessera('worker', env, { fixture: true });
      await b.waitHealthy();
      await new Promise((r) => setTimeout(r, 9000));
      assert.equal(await lockedBy(), aId, 'a live worker is never presumed dead');

      a.proc.kill('SIGKILL');
      // The job writes its tick and then graphile-worker deletes it in a statement of its own (a
      // failed attempt would stay queued): waiting for the tick and then reading the queue once
      // raced that delete, so wait for the queue to empty, then check who ran it.
      const left = async () =>
        (
          await pool.query(
            "SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE task_identifier = 'fixture:work'",
          )
        ).rows[0].n as number;
      await waitFor(async () => (await left()) === 0, {
        timeoutMs: 30000,
        what: 'the released job to complete and leave the queue',
      });
      const ranAtB = await pool.query('SELECT 1 FROM fixture_ticks WHERE pid = $1', [b.proc.pid]);
      assert.ok(ranAtB.rows.length > 0, 'worker B ran the released job');
      assert.equal(await workerOf(a.proc.pid!), undefined, "A's registration is gone");
      const released = b.logLines().find((l) => l.msg === 'JOB_LOCKS_RELEASED');
      assert.ok(released, 'B logs what it released');
      assert.equal(released.jobs, 1);
      assert.equal(released.module, 'jobs');
      const metrics = await (await fetch(`${b.url}/metrics`)).text();
      assert.match(metrics, /^tessera_job_locks_released_total\{[^}]*\} 1$/m);
    } finally {
      await pool.end();
    }
  });

  it('when two scheduler processes run, then each cron tick runs exactly once, also with NATS unreachable for one', async () => {
    const db = await processDatabase();
    const a = await spawnTessera('scheduler', { DATABASE_URL: db }, { fixture: true });
    // A scheduler serves nothing on NATS: a NATS outage must not keep it from starting.
    const b = await spawnTessera(
      'scheduler',
      { DATABASE_URL: db, NATS_URL: 'nats://127.0.0.1:1' },
      { fixture: true },
    );
    await Promise.all([a.waitHealthy(), b.waitHealthy()]);
    const health = await json(await fetch(`${b.url}/health`));
    assert.ok(!JSON.stringify(health).includes('nats'), JSON.stringify(health));
    const pool = testPool(db);
    try {
      // Wait until two minute boundaries have passed, so at least one whole tick is observed.
      await waitFor(
        async () =>
          (await pool.query('SELECT count(DISTINCT tick)::int AS n FROM fixture_ticks')).rows[0].n >= 2,
        {
          timeoutMs: 130000,
          intervalMs: 1000,
          what: 'two cron ticks',
        },
      );
      const { rows } = await pool.query(
        'SELECT tick, count(*)::int AS runs FROM fixture_ticks GROUP BY tick',
      );
      for (const r of rows) assert.equal(r.runs, 1, `tick ${r.tick.toISOString()} ran ${r.runs} times`);
    } finally {
      await pool.end();
    }
  });

  it('when an api process and a worker process share NATS, then calls cross the wire and keep their status', {
    skip: needsNats,
  }, async () => {
    const db = await processDatabase();
    const env = { DATABASE_URL: db, NATS_URL };
    const worker = await spawnTessera('worker', env, { fixture: true });
    const api = await spawnTessera('api', env, { fixture: true });
    await Promise.all([worker.waitHealthy(), api.waitHealthy()]);
    const headers = { authorization: `Bearer ${await adminKey(db)}` };
    const echo = await json(await fetch(`${api.url}/api/fixture/echo?text=over-nats`, { headers }));
    assert.equal(echo.text, 'over-nats');
    assert.equal(echo.pid, worker.proc.pid, 'answered by the worker process');
    const missing = await fetch(`${api.url}/api/fixture/missing/7`, { headers });
    assert.equal(missing.status, 404, 'a 404 stays a 404 across NATS');
    assert.equal((await json(missing)).message, 'fixture 7 not found');
    const down = await fetch(`${api.url}/api/fixture/db-down`, { headers });
    assert.equal(down.status, 503, "the worker's PostgreSQL outage is a 503 across NATS");
    assert.equal((await json(down)).message, 'database unavailable; retry shortly');
    const failed = worker.logLines().find((l) => l.msg === 'DB_CONNECTION_FAILED');
    assert.equal(failed?.module, 'fixture', 'logged by the worker, as the module');
    const health = await json(await fetch(`${api.url}/health`));
    assert.equal(health.checks.nats.status, 'ok');
    await worker.stop('SIGTERM');
    const none = await fetch(`${api.url}/api/fixture/echo?text=x`, { headers });
    assert.equal(none.status, 503);
    assert.match((await json(none)).message, /no fixture worker is running/);
  });
});
