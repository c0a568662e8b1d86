// The server path: migrations and a module flow on an external PostgreSQL (npm test's DATABASE_URL),
// the PostgreSQL a deployment uses, not the embedded one the other suites start.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  EXTERNAL_DB,
  freshDatabase,
  needsExternalDb,
  runTessera,
  startPlatform,
  testPool,
  waitFor,
} from '../helpers.ts';

describe('external PostgreSQL (DATABASE_URL)', { skip: needsExternalDb }, () => {
  it('when `tessera migrate` runs on an empty database there, then everything applies, and a re-run applies nothing', async () => {
    const db = await freshDatabase({ external: true, empty: true });
    assert.equal(new URL(db).host, new URL(EXTERNAL_DB!).host, 'on the external server');
    const first = await runTessera(['migrate'], { DATABASE_URL: db });
    assert.equal(first.code, 0, first.out);
    const pool = testPool(db);
    try {
      const applied = async () =>
        (await pool.query('SELECT module, name FROM tessera_migrations ORDER BY module, name')).rows;
      const before = await applied();
      for (const m of ['kit', 'codes', 'events', 'books', 'sender'])
        assert.ok(
          before.some((r) => r.module === m),
          `${m} migrated`,
        );
      const again = await runTessera(['migrate'], { DATABASE_URL: db });
      assert.equal(again.code, 0, again.out);
      assert.deepEqual(await applied(), before);
    } finally {
      await pool.end();
    }
  });

  it('when codes are generated, reserved and assigned and events are ingested there, then the answers are the contract', async () => {
    const p = await startPlatform({ databaseUrl: await freshDatabase({ external: true }) });
    const call = (method: 'GET' | 'POST', url: string, payload?: object) =>
      p.app.inject({ method, url, headers: p.auth, ...(payload ? { payload } : {}) });

    const created = await call('POST', '/api/campaigns', {
      id: 'ext',
      name: 'External',
      format: { length: 8, alphabet: 'alphanumeric' },
    });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal((await call('POST', '/api/campaigns/ext/codes', { count: 500 })).statusCode, 201);
    const r = await call('POST', '/api/campaigns/ext/reservations', { count: 3, reserveId: 'order-1' });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(r.json().codes.length, 3);
    const a = await call('POST', '/api/campaigns/ext/reservations/order-1/assign', { userId: 'u1' });
    assert.equal(a.statusCode, 200, a.body);
    assert.deepEqual((await call('GET', '/api/campaigns/ext')).json().inventory, {
      available: 497,
      reserved: 0,
      assigned: 3,
      total: 500,
    });

    const events = Array.from({ length: 20 }, (_, i) => ({ userId: `user_${i % 4}`, action: 'view' }));
    assert.equal((await call('POST', '/api/events', events)).statusCode, 201);
    const analytics = await waitFor(
      async () => {
        const body = (await call('GET', '/api/analytics')).json();
        return body.totalEvents === 20 && body.backlog === 0 && body;
      },
      { timeoutMs: 20000, what: 'the events worker to aggregate on the external server' },
    );
    assert.equal(analytics.eventsByAction.view, 20);
    assert.equal(analytics.uniqueUsers, 4);
    await p.stop(); // before the database is dropped under its workers
  });
});
