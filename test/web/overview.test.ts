// GET /api/dashboard/overview: the Overview page's data in one authenticated call, because the
// Ingress does not route /health or /metrics to browsers. Admins get failure details; others get
// health, traffic and queue depth without them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createApiKey } from '../../src/kit/auth.ts';
import { TrafficRates } from '../../src/web/overview.ts';
import { startPlatform } from '../helpers.ts';

describe('dashboard overview API', () => {
  it('when signed out, then it is 401; when called, then it reports health, traffic rates, queue depth and (admin only) failed jobs', async () => {
    const p = await startPlatform();
    const get = (headers: Record<string, string>) =>
      p.app.inject({ method: 'GET', url: '/api/dashboard/overview', headers });
    assert.equal((await get({})).statusCode, 401);

    // A failed job in the queue (every attempt used) and one waiting.
    await p.kit.pool.query(
      `SELECT graphile_worker.add_job('ops:later', '{}'::json, run_at => now() + interval '1 hour')`,
    );
    const broken = await p.kit.pool.query<{ id: string }>(
      `SELECT (graphile_worker.add_job('ops:broken', '{}'::json, run_at => now() + interval '1 hour', max_attempts => 1)).id`,
    );
    await p.kit.pool.query(
      `UPDATE graphile_worker._private_jobs SET attempts = max_attempts, last_error = 'boom: it broke' WHERE id = $1`,
      [broken.rows[0]!.id],
    );

    const first = await get(p.auth);
    assert.equal(first.statusCode, 200, first.body);
    assert.equal(first.headers['cache-control'], 'no-store');
    const a = first.json();
    assert.equal(a.health.healthy, true);
    assert.equal(a.health.checks.database.status, 'ok');
    assert.equal(a.traffic.rates, null, 'no rate from a single sample');
    assert.ok(a.queue.depth >= 1, `queue depth ${a.queue.depth}`);
    assert.equal(a.queue.failed, 1);
    assert.deepEqual(
      a.failedJobs.map((j: { task: string; lastError: string }) => [j.task, j.lastError]),
      [['ops:broken', 'boom: it broke']],
    );
    assert.ok(
      a.metrics.some(
        (m: { name: string; labels: Record<string, string> }) =>
          m.name === 'sender_queue_depth' && m.labels.state === 'sending',
      ),
      'module metrics are listed for admins',
    );

    // Requests made between two polls show as a rate; 5xx and 4xx apart; the overview's own polls
    // and probes are not traffic.
    await new Promise((r) => setTimeout(r, 600));
    for (let i = 0; i < 10; i++)
      await p.app.inject({ method: 'GET', url: '/api/campaigns', headers: p.auth });
    for (let i = 0; i < 4; i++) await p.app.inject({ method: 'GET', url: '/api/campaigns' }); // 401
    for (let i = 0; i < 5; i++) await p.app.inject({ method: 'GET', url: '/health' });
    const second = (await get(p.auth)).json();
    assert.ok(second.traffic.rates, 'a rate once two samples are 0.5 s apart');
    assert.equal(
      second.traffic.requests - a.traffic.requests,
      14,
      'the /health calls and polls are not counted',
    );
    assert.equal(second.traffic.clientErrors - a.traffic.clientErrors, 4);
    const seconds = second.traffic.windowSeconds;
    assert.ok(Math.abs(second.traffic.rates.requests * seconds - 14) < 1, JSON.stringify(second.traffic));
    assert.ok(Math.abs(second.traffic.rates.clientErrors * seconds - 4) < 1, JSON.stringify(second.traffic));
    assert.equal(second.traffic.rates.errors, 0);

    // A non-admin sees health, traffic and queue depth, but no failure details.
    const { key } = await createApiKey(p.kit.pool, 'viewer', ['events']);
    const viewer = (await get({ authorization: `Bearer ${key}` })).json();
    assert.equal(viewer.health.healthy, true);
    assert.ok(viewer.queue.depth >= 1);
    assert.equal(viewer.queue.failed, 1);
    assert.equal(viewer.failedJobs, undefined);
    assert.equal(viewer.metrics, undefined);
  });

  it('when the page comes back after an hour away, then the rate covers the last seconds, not the hour', async () => {
    const p = await startPlatform();
    const rates = new TrafficRates();
    const t0 = Date.now();
    await rates.sample(p.kit, t0);
    const burst = async (n: number) => {
      for (let i = 0; i < n; i++) await p.app.inject({ url: '/api/auth/me', headers: p.auth });
    };
    await burst(20);
    // An hour later: the hour-old snapshot is no base for a rate (it averaged 20 requests over 3,600 s).
    const back = await rates.sample(p.kit, t0 + 3_600_000);
    assert.equal(back.rates, null);
    await burst(20);
    const next = await rates.sample(p.kit, t0 + 3_602_000);
    assert.equal(next.windowSeconds, 2);
    assert.equal(next.rates?.requests, 10, '20 requests in the 2 s since');
  });
});
