// Real processes: seed 003's test 5 (worker stopped, events wait, worker back, all processed), the
// crash mode, kill -9 under load, and PostgreSQL going away under the API.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  adminKey,
  json,
  privatePostgres,
  processDatabase,
  runTessera,
  spawnTessera,
  startPlatform,
  testPool,
  waitFor,
} from '../../../test/helpers.ts';
import { eventsModule } from './index.ts';
import { countBacklog } from './metrics.ts';
import { storeRaw } from './raw-fixture.ts';

describe('events across real processes', () => {
  it('when the worker is stopped, events wait in the backlog; when it starts again, all are processed once (seed test 5)', async () => {
    const db = await processDatabase();
    const api = await spawnTessera('api', { DATABASE_URL: db });
    let worker = await spawnTessera('worker', { DATABASE_URL: db });
    await Promise.all([api.waitHealthy(), worker.waitHealthy()]);
    const key = await adminKey(db);
    const headers = { authorization: `Bearer ${key}` };
    await worker.stop('SIGKILL');

    const seeded = await runTessera(['seed', 'events', '--count', '20', '--url', api.url, '--key', key]);
    assert.equal(seeded.code, 0, seeded.out);
    assert.match(seeded.out, /20\/20/);
    assert.match(seeded.out, /all 20 accepted \(201\)/);

    const waiting = await json(await fetch(`${api.url}/api/analytics`, { headers }));
    assert.equal(waiting.backlog, 20, 'events wait in events_raw_batches');
    assert.equal(waiting.totalEvents, 0);

    worker = await spawnTessera('worker', { DATABASE_URL: db });
    await worker.waitHealthy();
    const sum = (o: Record<string, number>) => Object.values(o).reduce((x, y) => x + y, 0);
    const a = await waitFor(
      async () => {
        // The parts of an answer are read in parallel (docs/api/events.md): one taken during the
        // worker's commit may show the totals and not yet the users. Wait for an answer that agrees.
        const body = await json(await fetch(`${api.url}/api/analytics?top=100`, { headers }));
        return body.backlog === 0 && body.totalEvents === 20 && sum(body.eventsByUser) === 20 && body;
      },
      { timeoutMs: 20_000, what: 'the new worker to process the backlog' },
    );
    assert.equal(sum(a.eventsByAction), 20);
    // Logged after the commit the analytics already show: wait for the line rather than race it.
    await waitFor(() => worker.logLines().some((l) => l.msg === 'WORKER_JOB_DONE'), {
      what: 'WORKER_JOB_DONE',
    });
  });

  it('when a worker starts while events wait and no job is queued for them, then it processes them without an ingest or a cron tick', async () => {
    const db = await processDatabase();
    const pool = testPool(db);
    after(() => pool.end());
    const first = await spawnTessera('worker', { DATABASE_URL: db });
    await first.waitHealthy();
    await first.stop('SIGKILL');
    // Stored directly, so no ingest queued a drain job; no api process sends any, and role worker
    // runs no cron: only the new worker's start can wake it.
    await storeRaw(
      pool,
      `SELECT 'u' || (i % 7) AS user_id, 'backlog' AS action, now() AS ts FROM generate_series(1, 100) AS i`,
    );
    const worker = await spawnTessera('worker', { DATABASE_URL: db });
    await worker.waitHealthy();
    await waitFor(async () => (await countBacklog(pool)) === 0, {
      timeoutMs: 20_000,
      what: 'the new worker to drain the backlog',
    });
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM events_processed`);
    assert.equal(rows[0].n, 100);
    const woke = worker.logLines().find((l) => l.msg === 'EVENTS_BACKLOG_AT_START');
    assert.equal(woke?.backlog, 100);
    assert.ok(!worker.logLines().some((l) => l.msg === 'CRON_JOB_START'), 'no cron tick did it');
  });

  it('when a worker starts with WORKER_FAILURE_MODE=crash, then it exits at once with FAILURE_INJECTION, work waiting or not (seed 003)', async () => {
    const db = await processDatabase();
    const pool = testPool(db);
    after(() => pool.end());
    // Within 20 s (a start takes ~2): a worker still running then did not crash.
    const exitOf = (t: Awaited<ReturnType<typeof spawnTessera>>) =>
      Promise.race([
        new Promise<number | null>((resolve) => t.proc.on('exit', (c) => resolve(c))),
        sleep(20_000).then(() => assert.fail(`the worker did not exit: ${t.output().slice(-1000)}`)),
      ]);
    // Nothing waiting: the seed's `npm run dev:worker` in this mode exits without waiting for work.
    const idle = await spawnTessera('worker', { DATABASE_URL: db, WORKER_FAILURE_MODE: 'crash' });
    assert.notEqual(await exitOf(idle), 0);
    const line = idle.logLines().find((l) => l.msg === 'FAILURE_INJECTION');
    assert.equal(line?.mode, 'crash', idle.output().slice(-2000));
    assert.equal(line?.at, 'start');
    assert.match(String(line?.origin), /WORKER_FAILURE_MODE=crash in the environment/);

    await storeRaw(pool, `SELECT 'u' AS user_id, 'crash-test' AS action, now() AS ts`);
    await pool.query(`SELECT graphile_worker.add_job('events:drain', '{}', job_key => 'events:drain')`);
    const busy = await spawnTessera('worker', { DATABASE_URL: db, WORKER_FAILURE_MODE: 'crash' });
    assert.notEqual(await exitOf(busy), 0);
    assert.ok(busy.logLines().some((l) => l.msg === 'FAILURE_INJECTION' && l.at === 'start'));
    assert.equal(await countBacklog(pool), 1, 'the event still waits for a healthy worker');
  });

  it('when crash is switched on at run time, then the running worker exits as it picks up work, and the event waits', async () => {
    const db = await processDatabase();
    const pool = testPool(db);
    after(() => pool.end());
    const api = await spawnTessera('api', { DATABASE_URL: db });
    const worker = await spawnTessera('worker', { DATABASE_URL: db });
    await Promise.all([api.waitHealthy(), worker.waitHealthy()]);
    const exited = new Promise<number | null>((resolve) => worker.proc.on('exit', (c) => resolve(c)));
    const headers = { authorization: `Bearer ${await adminKey(db)}`, 'content-type': 'application/json' };
    const set = await fetch(`${api.url}/api/admin/chaos`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ module: 'events', worker: 'crash' }),
    });
    assert.equal(set.status, 200, await set.text());
    // The worker reads overrides about once a second; wait until it has, then give it work.
    const applied = await waitFor(() => worker.logLines().find((l) => l.msg === 'FAILURE_MODES_APPLIED'), {
      what: 'the worker to apply the override',
    });
    // Every line names its module (this one named none).
    assert.equal(applied.module, 'chaos');
    await sleep(500);
    assert.equal(worker.proc.exitCode, null, 'a running worker does not exit before it has work');
    const sent = await fetch(`${api.url}/api/events`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ userId: 'u', action: 'crash-test' }),
    });
    assert.equal(sent.status, 201);
    assert.notEqual(await exited, 0);
    const line = worker.logLines().find((l) => l.msg === 'FAILURE_INJECTION');
    assert.equal(line?.at, 'job', worker.output().slice(-2000));
    assert.match(String(line?.origin), /set at run time for module "events"/);
    assert.equal(await countBacklog(pool), 1, 'the event still waits for a healthy worker');
  });

  it('when the process is killed with SIGKILL during a 5,000 events/s ingest, then after restart every acknowledged event is counted exactly once', async () => {
    const db = await processDatabase();
    let t = await spawnTessera('all', { DATABASE_URL: db, LOG_LEVEL: 'warn' });
    await t.waitHealthy();
    const headers = { authorization: `Bearer ${await adminKey(db)}`, 'content-type': 'application/json' };
    // The load: at least 5,000 events/s, held, not just reached. A timer offers batches on a
    // schedule (what is due by now, so timer jitter is caught up, not lost), 20 % above 5,000 so
    // the requests still in flight at the kill do not pull the acknowledged rate under it. The
    // acknowledged rate over the WINDOW_MS before the kill, after a warm-up (a fresh process's
    // first second is JIT and connection set-up), is printed with the result.
    const OFFERED_PER_S = 6_000;
    const PER_REQUEST = 50;
    const WARMUP_MS = 1_000;
    const WINDOW_MS = 3_000;
    const MAX_IN_FLIGHT = 64; // past this the server is not keeping up: the rate check says so
    const acked = new Set<string>();
    const requests: Promise<void>[] = [];
    let seq = 0;
    let inFlight = 0;
    const send = async (ids: string[]) => {
      inFlight++;
      try {
        const res = await fetch(`${t.url}/api/events`, {
          method: 'POST',
          headers,
          body: JSON.stringify(
            ids.map((messageId, i) => ({ userId: `u${i % 10}`, action: 'load', messageId })),
          ),
        });
        await res.arrayBuffer();
        if (res.status === 201) for (const id of ids) acked.add(id);
      } catch {
        // the server is gone: not acknowledged
      } finally {
        inFlight--;
      }
    };
    const started = performance.now();
    const pace = setInterval(() => {
      const due = Math.floor(((performance.now() - started) / 1000) * OFFERED_PER_S);
      while (seq + PER_REQUEST <= due && inFlight < MAX_IN_FLIGHT) {
        requests.push(send(Array.from({ length: PER_REQUEST }, () => `k-${seq++}`)));
      }
    }, 5);
    await sleep(WARMUP_MS);
    const windowStart = performance.now();
    const ackedAtWindowStart = acked.size;
    await sleep(WINDOW_MS);
    const seconds = (performance.now() - windowStart) / 1000;
    const ackedInWindow = acked.size - ackedAtWindowStart;
    const inFlightAtKill = inFlight;
    await t.stop('SIGKILL');
    clearInterval(pace);
    await Promise.all(requests);
    const acknowledged = acked.size;
    const rate = Math.round(ackedInWindow / seconds);

    t = await spawnTessera('all', { DATABASE_URL: db, LOG_LEVEL: 'warn' });
    await t.waitHealthy();
    const pool = testPool(db);
    after(() => pool.end());
    await waitFor(async () => (await countBacklog(pool)) === 0, {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: 'the backlog to drain after restart',
    });
    const { rows } = await pool.query<{ id: string; n: number }>(
      `SELECT message_id AS id, count(*)::int AS n FROM events_processed GROUP BY message_id`,
    );
    const counted = new Map(rows.map((r) => [r.id, r.n]));
    const missing = [...acked].filter((id) => counted.get(id) !== 1);
    assert.deepEqual(
      missing.slice(0, 5),
      [],
      `${missing.length} acknowledged events not counted exactly once`,
    );
    const totals = await pool.query(
      `SELECT (SELECT sum(n)::int FROM events_counts WHERE grain = 'm') AS rollup, (SELECT count(*)::int FROM events_processed) AS processed`,
    );
    assert.equal(totals.rows[0].rollup, totals.rows[0].processed, 'rollups agree with processed rows');
    assert.ok(totals.rows[0].processed >= acknowledged);
    // The rate is reported, not asserted: a test holds no timing threshold (the CI machine's speed
    // moves 2-4x), and `npm run bench -- events` measures ingest. What must hold at any speed is
    // that the kill landed in a real load, and exactly-once above.
    assert.ok(acknowledged >= 1000, `only ${acknowledged} events acknowledged before the kill`);
    const underTarget = rate < 5000 ? " (under the issue's 5,000 events/s on this run)" : '';
    process.stdout.write(
      `# kill -9 test: ${acknowledged} events acknowledged, ${rate} events/s over the ${seconds.toFixed(1)} s before SIGKILL${underTarget}; ${inFlightAtKill} requests in flight at the kill\n`,
    );
  });

  it('when PostgreSQL restarts while the worker is processing, then the process stays up and counts every accepted event once', async () => {
    const server = await privatePostgres('tessera-events-restart-');
    after(server.remove);
    const proc = await spawnTessera('all', { DATABASE_URL: server.url });
    after(() => proc.stop('SIGKILL'));
    await proc.waitHealthy();
    const key = await adminKey(server.url);
    const acked: string[] = [];
    let sending = true;
    // A steady trickle, so drain jobs are running (and being recorded) when PostgreSQL goes away.
    const sender = (async () => {
      for (let i = 0; sending; i++) {
        const messageId = `m${i}`;
        const res = await fetch(`${proc.url}/api/events`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ userId: `u${i % 7}`, action: 'restart', messageId }),
        }).catch(() => undefined);
        if (res?.status === 201) acked.push(messageId);
        await sleep(5);
      }
    })();
    const alive = () => {
      if (proc.proc.exitCode !== null)
        throw new Error(`the process exited ${proc.proc.exitCode}: ${proc.output().slice(-3000)}`);
    };
    try {
      await waitFor(() => acked.length >= 200, { what: '200 events accepted before the stop' });
      await server.stop();
      await sleep(3000);
      await server.start();
      const before = acked.length;
      await waitFor(
        () => {
          alive();
          return acked.length >= before + 200;
        },
        {
          timeoutMs: 30_000,
          what: 'ingestion to accept events again',
        },
      );
    } finally {
      sending = false;
      await sender;
    }
    const pool = testPool(server.url);
    after(() => pool.end());
    await waitFor(async () => (await countBacklog(pool)) === 0, {
      timeoutMs: 90_000,
      intervalMs: 250,
      what: 'the backlog to drain after the restart',
    }).catch((err) => {
      const jobLines = proc.logLines().filter((l) => l.module === 'jobs');
      throw new Error(`${err.message}; jobs log: ${JSON.stringify(jobLines.slice(-8))}`);
    });
    const { rows } = await pool.query<{ id: string; n: number }>(
      `SELECT message_id AS id, count(*)::int AS n FROM events_processed GROUP BY message_id`,
    );
    const counted = new Map(rows.map((r) => [r.id, r.n]));
    const wrong = acked.filter((id) => counted.get(id) !== 1);
    assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} accepted events not counted exactly once`);
    alive();
    // A pool that met the outage while recording a job is replaced, not left dead. One can fail
    // late (a connection the restart cut, found when next used) and be replaced after the drain.
    const logged = (msg: string) => proc.logLines().filter((l) => l.msg === msg).length;
    await waitFor(() => logged('JOBS_RUNNER_RESTARTED') === logged('JOBS_RUNNER_FAILED'), {
      timeoutMs: 30_000,
      what: `every failed job pool replaced (${logged('JOBS_RUNNER_FAILED')} failed)`,
    });
    process.stdout.write(
      `# PostgreSQL restart under load: ${logged('JOBS_RUNNER_FAILED')} job pool(s) replaced\n`,
    );
  });

  it('when PostgreSQL stops, then ingestion answers 503 at once with DB_CONNECTION_FAILED logged for that request, and recovers by itself when it returns', async () => {
    const server = await privatePostgres('tessera-events-pg-');
    after(server.remove);
    const p = await startPlatform({ modules: [eventsModule], role: 'api', databaseUrl: server.url });
    const post = () =>
      p.app.inject({
        method: 'POST',
        url: '/api/events',
        headers: p.auth,
        payload: { userId: 'u', action: 'a' },
      });
    // The failing request's own line: the pool's idle-client listener logs DB_CONNECTION_FAILED
    // too (module kit, no reqId), so "some line exists" would pass without the request's.
    const failedLineOf = (res: Awaited<ReturnType<typeof post>>) =>
      p.logs.events('DB_CONNECTION_FAILED').find((l) => l.reqId === res.headers['x-request-id']);
    const timed = async () => {
      const started = Date.now();
      const res = await post();
      return { res, ms: Date.now() - started };
    };
    assert.equal((await post()).statusCode, 201);

    await server.stop();
    // Compared with the pool's 5 s connect timeout: a hang would take that long.
    // The first request meets the stopped server; it marks PostgreSQL down, so the second is
    // answered from that mark without a connect attempt.
    for (const [what, fromMark] of [
      ['the first request after the stop', false],
      ['a request while PostgreSQL is known down', true],
    ] as const) {
      const { res, ms } = await timed();
      assert.equal(res.statusCode, 503, `${what}: ${res.body}`);
      assert.match(res.json().message, /database unavailable/);
      assert.equal(res.headers['retry-after'], '5');
      assert.ok(ms < 2500, `${what} answered in ${ms} ms, well under the 5 s connect timeout`);
      const line = failedLineOf(res);
      assert.ok(line, `${what}: DB_CONNECTION_FAILED logged with its reqId`);
      assert.equal(line.module, 'events');
      assert.equal(/known to be unreachable/.test((line.err as { message: string }).message), fromMark);
    }

    await server.start();
    // No restart, no admin call: only requests, until one is accepted again.
    const recovered = Date.now();
    await waitFor(async () => (await post()).statusCode === 201, {
      timeoutMs: 15_000,
      what: 'ingestion to recover',
    });
    assert.ok(
      Date.now() - recovered < 5000,
      `recovered ${Date.now() - recovered} ms after PostgreSQL returned`,
    );
    assert.equal(p.logs.events('DB_CONNECTION_RESTORED').length, 1);
    assert.equal(
      await countBacklog(p.kit.pool),
      2,
      'the event before the stop and the one after recovery; none of the 503s',
    );
  });
});
