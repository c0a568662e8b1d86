// Real processes: seed 003's test 5 (worker stopped, events wait, worker back, all processed), the
// crash mode, kill -9 under load, and PostgreSQL going away under the API.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import {
  json,
  processDatabase,
  runTessera,
  spawnTessera,
  startPlatform,
  waitFor,
} from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';
import { startEmbeddedPostgres } from '../../kit/embedded-postgres.ts';
import { createRootLogger } from '../../kit/log.ts';
import { eventsModule } from './index.ts';

async function adminKey(db: string): Promise<string> {
  const pool = new pg.Pool({ connectionString: db, max: 1 });
  try {
    return (await createApiKey(pool, 'process test', ['admin'])).key;
  } finally {
    await pool.end();
  }
}

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
    assert.match(seeded.out, /20× 201/);

    const waiting = await json(await fetch(`${api.url}/api/analytics`, { headers }));
    assert.equal(waiting.backlog, 20, 'events wait in events_raw');
    assert.equal(waiting.totalEvents, 0);

    worker = await spawnTessera('worker', { DATABASE_URL: db });
    await worker.waitHealthy();
    const a = await waitFor(
      async () => {
        const body = await json(await fetch(`${api.url}/api/analytics?top=100`, { headers }));
        return body.backlog === 0 && body.totalEvents === 20 && body;
      },
      { timeoutMs: 20_000, what: 'the new worker to process the backlog' },
    );
    const sum = (o: Record<string, number>) => Object.values(o).reduce((x, y) => x + y, 0);
    assert.equal(sum(a.eventsByAction), 20);
    assert.equal(sum(a.eventsByUser), 20);
    assert.ok(worker.logLines().some((l) => l.msg === 'WORKER_JOB_DONE'));
  });

  it('when WORKER_FAILURE_MODE=crash and work is waiting, then the worker exits with FAILURE_INJECTION logged and nothing is lost', async () => {
    const db = await processDatabase();
    const pool = new pg.Pool({ connectionString: db, max: 1 });
    pool.on('error', () => undefined); // the suite's cleanup drops the database under it
    after(() => pool.end());
    await pool.query(`INSERT INTO events_raw (user_id, action, ts) VALUES ('u', 'crash-test', now())`);
    await pool.query(`SELECT graphile_worker.add_job('events:drain', '{}', job_key => 'events:drain')`);
    const worker = await spawnTessera('worker', { DATABASE_URL: db, WORKER_FAILURE_MODE: 'crash' });
    const code = await new Promise<number | null>((resolve) => worker.proc.on('exit', (c) => resolve(c)));
    assert.notEqual(code, 0);
    assert.ok(
      worker.logLines().some((l) => l.msg === 'FAILURE_INJECTION' && l.mode === 'crash'),
      worker.output().slice(-2000),
    );
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM events_raw');
    assert.equal(rows[0].n, 1, 'the event still waits for a healthy worker');
  });

  it('when the process is killed with SIGKILL during a fast ingest, then after restart every acknowledged event is counted exactly once', async () => {
    const db = await processDatabase();
    let t = await spawnTessera('all', { DATABASE_URL: db, LOG_LEVEL: 'warn' });
    await t.waitHealthy();
    const headers = { authorization: `Bearer ${await adminKey(db)}`, 'content-type': 'application/json' };
    const acked = new Set<string>();
    let stop = false;
    let seq = 0;
    const sender = async () => {
      while (!stop) {
        const ids = Array.from({ length: 10 }, () => `k-${seq++}`);
        try {
          const res = await fetch(`${t.url}/api/events`, {
            method: 'POST',
            headers,
            body: JSON.stringify(ids.map((messageId, i) => ({ userId: `u${i}`, action: 'load', messageId }))),
          });
          if (res.status === 201) for (const id of ids) acked.add(id);
          await res.arrayBuffer();
        } catch {
          return; // the server is gone
        }
      }
    };
    const senders = Array.from({ length: 16 }, sender);
    const started = Date.now();
    await waitFor(() => acked.size >= 5000, { timeoutMs: 30_000, what: '5,000 acknowledged events' });
    const rate = Math.round(acked.size / ((Date.now() - started) / 1000));
    await t.stop('SIGKILL');
    stop = true;
    await Promise.all(senders);
    const acknowledged = acked.size;

    t = await spawnTessera('all', { DATABASE_URL: db, LOG_LEVEL: 'warn' });
    await t.waitHealthy();
    const pool = new pg.Pool({ connectionString: db, max: 1 });
    pool.on('error', () => undefined); // the suite's cleanup drops the database under it
    after(() => pool.end());
    await waitFor(
      async () => (await pool.query('SELECT count(*)::int AS n FROM events_raw')).rows[0].n === 0,
      {
        timeoutMs: 60_000,
        intervalMs: 200,
        what: 'the backlog to drain after restart',
      },
    );
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
    process.stdout.write(
      `# kill -9 test: ${acknowledged} events acknowledged at ~${rate} events/s before SIGKILL\n`,
    );
  });

  it('when PostgreSQL stops, then ingestion answers 503 at once with DB_CONNECTION_FAILED logged, and recovers when it returns', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tessera-events-pg-'));
    const quiet = createRootLogger({ level: 'silent', format: 'json', debug: '', role: 'test' });
    let server = await startEmbeddedPostgres(dir, quiet);
    after(() => server.stop());
    const p = await startPlatform({ modules: [eventsModule], role: 'api', databaseUrl: server.url });
    const post = () =>
      p.app.inject({
        method: 'POST',
        url: '/api/events',
        headers: p.auth,
        payload: { userId: 'u', action: 'a' },
      });
    assert.equal((await post()).statusCode, 201);

    await server.stop();
    const started = Date.now();
    const down = await post();
    const ms = Date.now() - started;
    assert.equal(down.statusCode, 503);
    assert.match(down.json().message, /database unavailable/);
    assert.ok(ms < 5000, `answered in ${ms} ms, not hung`);
    assert.ok(p.logs.events('DB_CONNECTION_FAILED').length > 0);

    server = await startEmbeddedPostgres(dir, quiet, { port: server.port });
    await waitFor(async () => (await post()).statusCode === 201, {
      timeoutMs: 15_000,
      what: 'ingestion to recover',
    });
    const { rows } = await p.kit.pool.query('SELECT count(*)::int AS n FROM events_raw');
    assert.ok(rows[0].n >= 2);
  });
});
