import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countRows, startPlatform, waitFor } from '../../../test/helpers.ts';
import { eventsModule } from './index.ts';
import { storeRaw } from './raw-fixture.ts';

describe('events cron', async () => {
  const p = await startPlatform({ modules: [eventsModule], env: { EVENTS_RETENTION_HOURS: '24' } });
  // Runs the cron task now, through the kit's cron wrapper, instead of waiting for the minute.
  const tick = () => p.kit.pool.query(`SELECT graphile_worker.add_job('events:cleanup', '{}')`);
  const analytics = async () => (await p.app.inject({ url: '/api/analytics', headers: p.auth })).json();

  it('when the cron runs, then processed events past retention are deleted, newer kept, and the heartbeat written', async () => {
    await p.kit.pool.query(
      `INSERT INTO events_processed (id, user_id, action, ts, source, received_at, processed_at)
       SELECT i, 'u', 'a', now(), 'api', now(), CASE WHEN i <= 30 THEN now() - interval '25 hours' ELSE now() END
       FROM generate_series(1, 50) AS i`,
    );
    await p.kit.pool.query(
      `INSERT INTO events_message_ids (message_id, seen_at)
       SELECT 'm' || i, CASE WHEN i <= 4 THEN now() - interval '25 hours' ELSE now() END
       FROM generate_series(1, 6) AS i`,
    );
    await p.kit.pool.query(
      `INSERT INTO events_dead_letter (id, payload, error, received_at, failed_at)
       SELECT i, '{}', 'test', now(), CASE WHEN i <= 2 THEN now() - interval '25 hours' ELSE now() END
       FROM generate_series(1, 3) AS i`,
    );
    const done = p.logs.events('CRON_CLEANUP_DONE').length;
    // Counted from before the tick: a scheduled minute's tick may have logged a heartbeat already.
    const beats = p.logs.events('CRON_HEARTBEAT').length;
    await tick();
    await waitFor(
      () =>
        p.logs.events('CRON_HEARTBEAT').length > beats && p.logs.events('CRON_CLEANUP_DONE').length > done,
      { what: "the tick's CRON_CLEANUP_DONE and CRON_HEARTBEAT" },
    );
    const cleanup = p.logs.events('CRON_CLEANUP_DONE').slice(done);
    const sum = (k: string) => cleanup.reduce((n, l) => n + (l[k] as number), 0);
    assert.equal(sum('deleted'), 30, 'deleted: processed events alone, as before');
    assert.equal(sum('messageIdsDeleted'), 4);
    assert.equal(sum('deadLettersDeleted'), 2);
    assert.equal(await countRows(p, 'events_message_ids'), 2);
    assert.equal(await countRows(p, 'events_dead_letter'), 1);
    assert.ok(p.logs.events('CRON_JOB_START').some((l) => l.task === 'events:cleanup'));
    const left = await p.kit.pool.query('SELECT count(*)::int AS n FROM events_processed');
    assert.equal(left.rows[0].n, 20);
    const { cron } = await analytics();
    assert.equal(cron.status, 'healthy');
    assert.ok(cron.ageSeconds >= 0 && cron.ageSeconds < 60, `age ${cron.ageSeconds}`);
    assert.ok(Date.now() - Date.parse(cron.lastHeartbeat) < 60_000);
  });

  it('when raw events wait and no wake-up came, then the cron wakes the worker and they are processed', async () => {
    await storeRaw(
      p.kit.pool,
      `SELECT 'late' AS user_id, a AS action, now() AS ts FROM unnest(ARRAY['x', 'y']) AS a`,
    );
    await tick();
    await waitFor(async () => (await analytics()).eventsByUser.late === 2, { what: 'backlog processed' });
  });

  it('when CRON_FAILURE_MODE is switched to db_fail at run time, then CRON_DB_ERROR is logged, no heartbeat written, and analytics says the cron is failing', async () => {
    const set = await p.app.inject({
      method: 'POST',
      url: '/api/admin/chaos',
      headers: p.auth,
      payload: { module: 'events', cron: 'db_fail' },
    });
    assert.equal(set.statusCode, 200);
    const before = (await p.kit.pool.query(`SELECT heartbeat_at FROM events_cron_status`)).rows[0]
      .heartbeat_at;
    const errors = p.logs.events('CRON_DB_ERROR').length;
    await tick();
    await waitFor(() => p.logs.events('CRON_DB_ERROR').length > errors, { what: 'CRON_DB_ERROR' });
    assert.ok(
      p.logs.events('FAILURE_INJECTION').some((l) => l.mode === 'db_fail' && l.cron === 'events:cleanup'),
    );
    const after = (await p.kit.pool.query(`SELECT heartbeat_at FROM events_cron_status`)).rows[0]
      .heartbeat_at;
    assert.equal(after.getTime(), before.getTime(), 'heartbeat untouched');
    // The analytics answer says the cron fails, why and when, not "healthy".
    const { cron } = await analytics();
    assert.equal(cron.status, 'failing');
    assert.match(cron.error, /failure injected: cron=db_fail set at run time for module "events" by POST/);
    assert.ok(Date.now() - Date.parse(cron.failedAt) < 60_000, cron.failedAt);
    assert.equal(cron.lastHeartbeat, before.toISOString());
    // The next good tick is healthy again and forgets the failure.
    await p.app.inject({ method: 'DELETE', url: '/api/admin/chaos', headers: p.auth });
    await tick();
    await waitFor(async () => (await analytics()).cron.status === 'healthy', { what: 'healthy again' });
    const healthy = (await analytics()).cron;
    assert.equal(healthy.error, null);
    assert.equal(healthy.failedAt, null);
    assert.ok(Date.parse(healthy.lastHeartbeat) > before.getTime());
  });

  it('when the cleanup itself fails (a real SQL error) on the first tick ever, then the status is failing with that error and no heartbeat', async () => {
    await p.kit.pool.query('DELETE FROM events_cron_status');
    await p.kit.pool.query('ALTER TABLE events_processed RENAME TO events_processed_gone');
    try {
      const failed = p.logs.events('CRON_FAILED').length;
      await tick();
      await waitFor(async () => (await analytics()).cron?.status === 'failing', { what: 'failing' });
      assert.ok(p.logs.events('CRON_FAILED').length > failed);
      const { cron } = await analytics();
      assert.match(cron.error, /events_processed/);
      assert.equal(cron.lastHeartbeat, null);
      assert.equal(cron.ageSeconds, null);
    } finally {
      await p.kit.pool.query('ALTER TABLE events_processed_gone RENAME TO events_processed');
    }
  });
});
