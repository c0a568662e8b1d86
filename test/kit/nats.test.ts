// NATS as a dependency: /health naming it when it goes away, RPC over the wire when a worker's
// database is down, and which roles answer RPC. Each test runs a nats-server of its own, so it can
// stop it and no other suite's worker can answer from the same queue group.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DB_UNAVAILABLE_MESSAGE } from '../../src/kit/db.ts';
import { CHECK_DEADLINE_MS } from '../../src/kit/health.ts';
import { fixtureModule } from '../fixtures/fixture-module.ts';
import {
  freshDatabase,
  needsNatsServer,
  privateNats,
  startPlatform,
  testConfig,
  waitFor,
} from '../helpers.ts';

describe('NATS', { skip: needsNatsServer }, () => {
  it('when NATS stops, then /health answers 503 naming nats within 2 s; when it returns, 200 again with no restart', async () => {
    const nats = await privateNats();
    const p = await startPlatform({ modules: [fixtureModule], env: { NATS_URL: nats.url } });
    const ok = await p.app.inject('/health');
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.json().checks.nats.status, 'ok');

    await nats.kill();
    const started = Date.now();
    const down = await p.app.inject('/health');
    // The check's own deadline, not a hang; the margin is for a loaded machine's timers.
    assert.ok(Date.now() - started < CHECK_DEADLINE_MS + 3000, `answered in ${Date.now() - started} ms`);
    assert.equal(down.statusCode, 503);
    const body = down.json();
    assert.equal(body.status, 'unhealthy');
    assert.deepEqual(body.failing, ['nats']);
    assert.equal(body.checks.nats.status, 'error');
    assert.equal(body.checks.database.status, 'ok', 'PostgreSQL is not blamed');
    assert.ok(p.logs.events('HEALTH_CHECK_FAILED').some((l) => (l.failing as string[]).includes('nats')));

    await nats.start();
    await waitFor(async () => (await p.app.inject('/health')).statusCode === 200, {
      timeoutMs: 10000,
      what: '/health 200 after NATS returns',
    });
    await p.stop();
  });

  it("when a worker's PostgreSQL is unreachable inside an RPC handler, then the api caller gets 503 and the worker logs DB_CONNECTION_FAILED", async () => {
    const nats = await privateNats();
    const db = await freshDatabase();
    const env = { NATS_URL: nats.url };
    const worker = await startPlatform({ modules: [fixtureModule], role: 'worker', databaseUrl: db, env });
    const api = await startPlatform({ modules: [fixtureModule], role: 'api', databaseUrl: db, env });

    const res = await api.app.inject({ url: '/api/fixture/db-down', headers: api.auth });
    assert.equal(res.statusCode, 503, res.body);
    assert.deepEqual(res.json(), {
      statusCode: 503,
      error: 'Service Unavailable',
      message: DB_UNAVAILABLE_MESSAGE,
    });
    const line = worker.logs.events('DB_CONNECTION_FAILED')[0];
    assert.ok(line, 'the worker, which ran the handler, logs it');
    assert.equal(line.module, 'fixture');
    assert.equal(line.role, 'worker');
    assert.equal(line.method, 'dbDown');
    assert.equal(worker.logs.events('RPC_HANDLER_FAILED').length, 0, 'not reported as a 500');
    assert.equal(api.logs.events('DB_CONNECTION_FAILED').length, 0, 'the api process only relayed it');
    const metrics = (await worker.app.inject('/metrics')).body;
    assert.match(metrics, /^tessera_db_errors_total\{[^}]*kind="connection"[^}]*\} [1-9]/m);
    await api.stop();
    await worker.stop();
  });

  it('when only a scheduler runs beside the api, then RPC has no responder (503); a worker then answers', async () => {
    const nats = await privateNats();
    const db = await freshDatabase();
    const env = { NATS_URL: nats.url };
    const scheduler = await startPlatform({
      modules: [fixtureModule],
      role: 'scheduler',
      databaseUrl: db,
      env,
    });
    const api = await startPlatform({ modules: [fixtureModule], role: 'api', databaseUrl: db, env });
    const none = await api.app.inject({ url: '/api/fixture/echo?text=x', headers: api.auth });
    assert.equal(none.statusCode, 503);
    assert.match(none.json().message, /no fixture worker is running/);

    const worker = await startPlatform({ modules: [fixtureModule], role: 'worker', databaseUrl: db, env });
    const echo = await api.app.inject({ url: '/api/fixture/echo?text=y', headers: api.auth });
    assert.equal(echo.statusCode, 200);
    assert.equal(echo.json().text, 'y');
    await api.stop();
    await worker.stop();
    await scheduler.stop();
  });

  it('when two deployments share one NATS with different NATS_SUBJECT_PREFIX, then neither answers the other', async () => {
    const nats = await privateNats();
    const db = await freshDatabase();
    const on = (prefix: string) => ({ NATS_URL: nats.url, NATS_SUBJECT_PREFIX: prefix });
    const worker = await startPlatform({
      modules: [fixtureModule],
      role: 'worker',
      databaseUrl: db,
      env: on('blue'),
    });
    const green = await startPlatform({
      modules: [fixtureModule],
      role: 'api',
      databaseUrl: db,
      env: on('green'),
    });
    const blue = await startPlatform({
      modules: [fixtureModule],
      role: 'api',
      databaseUrl: db,
      env: on('blue'),
    });
    const none = await green.app.inject({ url: '/api/fixture/echo?text=x', headers: green.auth });
    assert.equal(none.statusCode, 503, 'the blue worker does not answer green');
    const echo = await blue.app.inject({ url: '/api/fixture/echo?text=x', headers: blue.auth });
    assert.equal(echo.statusCode, 200);
    assert.ok(worker.logs.events('RPC_SERVING').every((l) => l.queue === 'blue.fixture'));
    assert.throws(() => testConfig({ NATS_SUBJECT_PREFIX: 'a.b' }), /NATS_SUBJECT_PREFIX="a.b": must be/);
    for (const p of [blue, green, worker]) await p.stop();
  });
});
