// kill -9 a worker in the middle of a 10,000-recipient batch, start another: every recipient is
// received, and kept exactly once by a webhook receiver that verifies each signature and dedupes on
// webhook-id (the idempotency key batch:recipient). The receiver also counts every delivery per id:
// the guarantee to the provider is at least once, and a second delivery may come only for a
// recipient the dead worker held (its chunk running) and had not yet recorded: docs/api/sender.md.
// Once the dead worker's jobs are unlocked, none of them reads as failed.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { processDatabase, spawnTessera, startPlatform, waitFor } from '../../../test/helpers.ts';
import { senderModule } from './index.ts';
import { startWebhookReceiver, webhookSendConfig } from './test-peers.ts';

describe('sender worker crash', () => {
  it('when a worker is killed with SIGKILL mid-batch and another starts, then every recipient is received exactly once', async () => {
    const db = await processDatabase();
    const rx = await startWebhookReceiver({ keep: false });
    after(() => rx.close());
    const api = await startPlatform({ modules: [senderModule], role: 'api', databaseUrl: db });
    // A 30 s heartbeat timeout (default 60 s): longer than the chunk lease, so the sweeper takes the
    // chunks back first, as in production, and the test waits half as long for the unlock.
    const workerEnv = { DATABASE_URL: db, WORKER_HEARTBEAT_TIMEOUT_MS: '30000' };
    const w1 = await spawnTessera('worker', workerEnv);
    await w1.waitHealthy(60000);
    const inject = (method: 'GET' | 'POST', url: string, payload?: unknown) =>
      api.app.inject({ method, url, headers: api.auth, payload: payload as object });
    const res = await inject('POST', '/api/batches', {
      sendConfigId: await webhookSendConfig(api, rx.url),
      template: { subject: 'n{{n}}', text: 'hello {{n}}' },
      recipients: Array.from({ length: 10_000 }, (_, i) => ({ address: `r${i}`, variables: { n: i } })),
    });
    assert.equal(res.statusCode, 201, res.body);
    const id = res.json().id;
    await waitFor(() => rx.seen.size >= 1500, { timeoutMs: 120000, what: '1,500 deliveries' });
    await w1.stop('SIGKILL');
    const atKill = rx.seen.size;
    assert.ok(atKill < 10_000, `killed mid-batch (${atKill} received)`);
    // What the dead worker had in flight: nobody touches these rows until a sweeper takes the
    // chunk back (the api role runs none; the next worker is not started yet).
    // Webhook recipients are not marked before the call: in flight means unrecorded in a chunk
    // the dead worker still held.
    const { rows: inFlight } = await api.kit.pool.query<{ id: number }>(
      `SELECT r.id FROM sender_recipients r
       JOIN sender_chunks c ON c.batch_id = r.batch_id AND r.id BETWEEN c.from_id AND c.to_id
       WHERE r.batch_id = $1 AND c.state = 'running' AND r.state IN ('pending', 'sending')`,
      [id],
    );
    const heldAtKill = new Set(inFlight.map((r) => `${id}:${r.id}`));
    assert.ok(heldAtKill.size > 0, 'the worker died holding unrecorded recipients');
    const w2 = await spawnTessera('worker', workerEnv);
    await w2.waitHealthy(60000);
    const b = await waitFor(
      async () => {
        const v = (await inject('GET', `/api/batches/${id}`)).json();
        return v.state === 'completed' ? v : undefined;
      },
      { timeoutMs: 240000, intervalMs: 500, what: 'the batch to complete on the second worker' },
    );
    assert.equal(b.progress.sent, 10_000);
    assert.equal(b.progress.failed, 0);
    assert.equal(rx.rejected(), 0);
    assert.equal(rx.seen.size, 10_000, 'every recipient received');
    for (let i = 1; i <= 10_000; i++) assert.ok(rx.seen.has(`${id}:${i}`), `recipient ${i} received`);
    // Re-sends after the crash carry the same webhook-id, so the receiver kept one message each;
    // every repeat is of a recipient that was in flight when the worker died, and no more than once.
    const repeated = [...rx.seen].filter(([, n]) => n > 1);
    for (const [webhookId, n] of repeated) {
      assert.ok(
        heldAtKill.has(webhookId),
        `${webhookId} delivered ${n} times but was not in flight at the kill`,
      );
      assert.equal(n, 2, `${webhookId} delivered ${n} times`);
    }
    assert.equal(
      rx.raw(),
      10_000 + repeated.length,
      'every delivery beyond one per recipient is a counted repeat',
    );
    // Recorded state is exactly once: every recipient row is `sent` once, and the counter agrees.
    const { rows: states } = await api.kit.pool.query(
      `SELECT state, count(*)::int AS n FROM sender_recipients WHERE batch_id = $1 GROUP BY state`,
      [id],
    );
    assert.deepEqual(states, [{ state: 'sent', n: 10_000 }]);
    assert.match(w2.output(), /SENDER_CHUNK_RECOVERED/);
    // The sweeper queued the dead worker's chunks again (their 20 s lease ran out) while its jobs
    // were still locked to it; then the heartbeat timeout passed and w2 unlocked them. Before,
    // those superseded jobs then read as failed (25 of 25 attempts, no error), 8 of them here.
    await waitFor(() => /JOB_LOCKS_RELEASED/.test(w2.output()), {
      timeoutMs: 90000,
      what: 'the dead worker judged and its jobs unlocked',
    });
    const failed = (await inject('GET', '/api/admin/jobs?state=failed')).json().jobs;
    assert.deepEqual(failed, [], 'no job reads as failed');
    await w2.stop();
  });
});
