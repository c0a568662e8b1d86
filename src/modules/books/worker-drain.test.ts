// What the books workers rely on from the kit, made deterministic: a worker that gets SIGTERM with
// RPC calls in flight answers every one of them before it leaves its NATS queue group, and calls
// sent during its drain go to the other worker. Books calls finish in a millisecond, too quick to
// catch in flight on purpose, so this uses the fixture module's slow call on the same Rpc code path.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import {
  adminKey,
  NATS_URL,
  needsNats,
  processDatabase,
  spawnTessera,
  waitFor,
} from '../../../test/helpers.ts';

it('when a worker gets SIGTERM with 30 slow RPC calls in flight, then every call answers 200 and the worker exits 0', {
  skip: needsNats,
}, async () => {
  const db = await processDatabase();
  const env = { DATABASE_URL: db, NATS_URL };
  // The leaving worker starts alone, so every slow call lands on it; the staying one joins after.
  // The calls last 8 s (long enough to start the second worker meanwhile), within the api's timeout.
  const leaving = await spawnTessera('worker', env, { fixture: true });
  const api = await spawnTessera('api', { ...env, RPC_TIMEOUT_MS: '20000' }, { fixture: true });
  await Promise.all([leaving, api].map((p) => p.waitHealthy(60000)));
  const key = await adminKey(db);
  const headers = { authorization: `Bearer ${key}` };
  const call = (ms: number) =>
    fetch(`${api.url}/api/fixture/slow?ms=${ms}`, { headers }).then(async (r) => ({
      status: r.status,
      pid: ((await r.json()) as { pid?: number }).pid,
    }));

  const inflight = Array.from({ length: 30 }, () => call(8000));
  await waitFor(() => leaving.logLines().filter((l) => l.msg === 'FIXTURE_SLOW_STARTED').length === 30, {
    what: 'the 30 calls to reach the only worker',
  });
  const staying = await spawnTessera('worker', env, { fixture: true });
  await staying.waitHealthy(60000);
  const exiting = leaving.stop('SIGTERM');
  // The drain begins once the worker has closed its HTTP side and NATS has its UNSUBs; a call sent
  // before that may still (rightly) reach it.
  await waitFor(() => leaving.logLines().some((l) => l.msg === 'RPC_LEFT_QUEUE_GROUPS'), {
    what: 'the leaving worker to leave its queue groups',
  });
  const duringDrain = await Promise.all(Array.from({ length: 10 }, () => call(10)));
  assert.deepEqual(
    duringDrain.map((a) => a.status),
    Array(10).fill(200),
  );
  assert.ok(
    duringDrain.every((a) => a.pid === staying.proc.pid),
    'calls made during the drain went to the staying worker',
  );
  assert.equal(await exiting, 0);
  const answers = await Promise.all(inflight);
  assert.deepEqual(
    answers.map((a) => a.status),
    Array(30).fill(200),
  );
  assert.ok(
    answers.every((a) => a.pid === leaving.proc.pid),
    'the SIGTERMed worker answered every call it held',
  );
});
