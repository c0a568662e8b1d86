// `tessera chaos list|clear`: failure-injection overrides read and cleared straight in the database,
// the way out when a worker `crash` set at run time stops the one-process deployment at every start
// (its API with it, so DELETE /api/admin/chaos cannot be reached).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  runTessera,
  spawnTessera,
  startPlatform,
  type TesseraProcess,
  testPool,
  waitFor,
} from '../helpers.ts';

const exitOf = (t: TesseraProcess) =>
  t.proc.exitCode !== null
    ? Promise.resolve(t.proc.exitCode)
    : new Promise<number | null>((resolve) => t.proc.on('exit', (code) => resolve(code)));

describe('tessera chaos', () => {
  it('when overrides are set through the API, then `chaos list` shows them and `chaos clear --module` removes that row only, which the server then stops applying', async () => {
    // The api role: this test process must not run a job in worker=crash.
    const p = await startPlatform({ role: 'api' });
    const env = { DATABASE_URL: p.databaseUrl };
    for (const payload of [
      { module: 'events', worker: 'crash' },
      { module: 'codes', api: 'db', cron: 'db_fail' },
    ]) {
      const res = await p.app.inject({ method: 'POST', url: '/api/admin/chaos', headers: p.auth, payload });
      assert.equal(res.statusCode, 200, res.body);
    }

    const list = await runTessera(['chaos', 'list'], env);
    assert.equal(list.code, 0, list.out);
    const [header, ...rows] = list.stdout.trim().split('\n');
    assert.equal(header, 'module\tapi\tworker\tcron\tupdated');
    assert.deepEqual(
      rows.map((r) => r.split('\t').slice(0, 4)),
      [
        ['codes', 'db', '-', 'db_fail'],
        ['events', '-', 'crash', '-'],
      ],
    );
    assert.match(rows[0]!.split('\t')[4]!, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);

    const cleared = await runTessera(['chaos', 'clear', '--module', 'events'], env);
    assert.equal(cleared.code, 0, cleared.out);
    assert.equal(cleared.stdout, 'cleared events: worker=crash\n');
    const pool = testPool(p.databaseUrl);
    after(() => pool.end());
    const stored = async () =>
      (await pool.query('SELECT module FROM tessera_chaos ORDER BY module')).rows.map((r) => r.module);
    assert.deepEqual(await stored(), ['codes'], 'only the events row is gone');
    // The running server reads the table about once a second.
    await waitFor(
      async () => {
        const res = await p.app.inject({ url: '/api/admin/chaos', headers: p.auth });
        const { overrides } = res.json();
        return !overrides.events && overrides.codes?.api === 'db';
      },
      { what: 'the server to drop the cleared override' },
    );

    // A misspelt module clears nothing and says so, naming what is stored.
    const typo = await runTessera(['chaos', 'clear', '--module', 'code'], env);
    assert.equal(typo.code, 1, typo.out);
    assert.match(
      typo.stderr,
      /no override is stored for module "code"; stored: codes \(api=db cron=db_fail\)/,
    );
    assert.deepEqual(await stored(), ['codes']);

    const all = await runTessera(['chaos', 'clear'], env);
    assert.equal(all.code, 0, all.out);
    assert.equal(all.stdout, 'cleared codes: api=db cron=db_fail\n');
    assert.deepEqual(await stored(), []);

    const empty = await runTessera(['chaos', 'list'], env);
    assert.equal(empty.code, 0, empty.out);
    assert.equal(empty.stdout, 'module\tapi\tworker\tcron\tupdated\n');
    assert.match(empty.stderr, /no failure-injection overrides are stored/);
    const again = await runTessera(['chaos', 'clear'], env);
    assert.equal(again.code, 0, again.out);
    assert.equal(again.stdout, '');
    assert.match(again.stderr, /nothing to clear/);
  });

  it('when a stored worker crash stops `tessera start`, then the crash line names `tessera chaos clear`, which with no server running (embedded PostgreSQL) lets it start again', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tessera-chaos-cli-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    // No DATABASE_URL: the embedded default, in a DATA_DIR of its own, as `npm start` runs.
    const env = { DATABASE_URL: '', DATA_DIR: dir };
    const first = await spawnTessera('all', env);
    await first.waitHealthy(60000);
    const key = await runTessera(['keys', 'create', '--name', 'chaos', '--scopes', 'admin,events'], env);
    assert.equal(key.code, 0, key.out);
    const headers = { authorization: `Bearer ${key.stdout.trim()}`, 'content-type': 'application/json' };
    const set = await fetch(`${first.url}/api/admin/chaos`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ module: 'events', worker: 'crash' }),
    });
    assert.equal(set.status, 200, await set.text());
    const sent = await fetch(`${first.url}/api/events`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ userId: 'u', action: 'crash-test' }),
    });
    assert.equal(sent.status, 201, await sent.text());
    assert.notEqual(await exitOf(first), 0, 'the process exits as its worker picks up the event');

    const again = await spawnTessera('all', { ...env, WORKER_FAILURE_MODE: 'none' });
    assert.notEqual(await exitOf(again), 0, 'the stored override stops it at start, over the environment');
    const crash = again.logLines().find((l) => l.msg === 'FAILURE_INJECTION');
    assert.equal(crash?.at, 'start', again.output().slice(-2000));
    assert.match(String(crash?.origin), /`tessera chaos clear --module events` when no API answers/);

    const list = await runTessera(['chaos', 'list'], env);
    assert.equal(list.code, 0, list.out);
    assert.match(list.stdout, /^events\t-\tcrash\t-\t/m);
    const cleared = await runTessera(['chaos', 'clear', '--module', 'events'], env);
    assert.equal(cleared.code, 0, cleared.out);
    assert.equal(cleared.stdout, 'cleared events: worker=crash\n');

    const healthy = await spawnTessera('all', env);
    await healthy.waitHealthy(60000);
    assert.ok(!healthy.logLines().some((l) => l.msg === 'FAILURE_INJECTION'));
    assert.equal(await healthy.stop('SIGTERM'), 0);
  });
});
