// Pause, resume and cancel with the batch spread over two worker processes: both stop within about
// a second of the API call (issue 6: "within 1 s across all workers"), nothing arrives twice, and
// the counts add up. The workers are real `tessera start --role worker` processes; WORKER_CONCURRENCY
// 2 each and four chunks make sure both hold chunks when the batch is paused.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { freshDatabase, spawnTessera, startPlatform, waitFor } from '../../../test/helpers.ts';
import { senderModule } from './index.ts';
import { startWebhookReceiver, webhookSendConfig } from './test-peers.ts';

/** A pause or cancel is seen at the next sub-batch or within 200 ms of a wait; the rest is slack for a loaded machine. */
const STOP_WITHIN_MS = 1500;

describe('sender pause and cancel across two workers', () => {
  it('when a batch running on two worker processes is paused, resumed and cancelled, then both workers stop within about a second each time and no message arrives twice', async () => {
    const db = await freshDatabase();
    const rx = await startWebhookReceiver({ keep: false });
    after(() => rx.close());
    const api = await startPlatform({ modules: [senderModule], role: 'api', databaseUrl: db });
    const workers = await Promise.all(
      [1, 2].map(() => spawnTessera('worker', { DATABASE_URL: db, WORKER_CONCURRENCY: '2' })),
    );
    await Promise.all(workers.map((w) => w.waitHealthy(60000)));
    const inject = (method: 'GET' | 'POST', url: string, payload?: unknown) =>
      api.app.inject({ method, url, headers: api.auth, payload: payload as object });

    const total = 2000; // four chunks of 500
    const res = await inject('POST', '/api/batches', {
      sendConfigId: await webhookSendConfig(api, rx.url),
      ratePerSecond: 200,
      template: { subject: 's', text: 'n={{n}}' },
      recipients: Array.from({ length: total }, (_, i) => ({ address: `r${i}`, variables: { n: i } })),
    });
    assert.equal(res.statusCode, 201, res.body);
    const id = res.json().id;

    const runningOwners = async () => {
      const { rows } = await api.kit.pool.query<{ pid: string }>(
        `SELECT DISTINCT split_part(owner, ':', 1) AS pid FROM sender_chunks WHERE batch_id = $1 AND state = 'running'`,
        [id],
      );
      return new Set(rows.map((r) => Number(r.pid)));
    };
    const pids = new Set(workers.map((w) => w.proc.pid));
    await waitFor(
      async () => {
        const owners = await runningOwners();
        return rx.arrivals.length >= 100 && owners.size === 2 && [...owners].every((p) => pids.has(p));
      },
      { timeoutMs: 30000, intervalMs: 50, what: 'both workers sending' },
    );

    /** Calls `action`, then proves the receiver got nothing later than STOP_WITHIN_MS after it. */
    const stops = async (action: 'pause' | 'cancel') => {
      const at = Date.now();
      const r = await inject('POST', `/api/batches/${id}/${action}`);
      assert.equal(r.statusCode, 200, r.body);
      await new Promise((resolve) => setTimeout(resolve, STOP_WITHIN_MS + 1000));
      const late = rx.arrivals.filter((a) => a.at > at + STOP_WITHIN_MS);
      assert.equal(
        late.length,
        0,
        `${late.length} messages arrived more than ${STOP_WITHIN_MS} ms after ${action}`,
      );
      const count = rx.arrivals.length;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.equal(rx.arrivals.length, count, `nothing more arrives after ${action}`);
      return count;
    };

    const atPause = await stops('pause');
    assert.ok(atPause < total, `paused mid-batch (${atPause} received)`);
    assert.equal((await inject('GET', `/api/batches/${id}`)).json().state, 'paused');
    assert.equal((await runningOwners()).size, 0, 'both workers released their chunks');

    assert.equal((await inject('POST', `/api/batches/${id}/resume`)).json().state, 'sending');
    await waitFor(() => rx.arrivals.length >= atPause + 100, {
      timeoutMs: 30000,
      what: 'sending again after resume',
    });
    const atCancel = await stops('cancel');
    assert.ok(atCancel < total, `cancelled mid-batch (${atCancel} received)`);

    const b = await waitFor(
      async () => {
        const v = (await inject('GET', `/api/batches/${id}`)).json();
        return v.progress.sent + v.progress.cancelled === total ? v : undefined;
      },
      { timeoutMs: 30000, what: 'every recipient sent or cancelled' },
    );
    assert.equal(b.state, 'cancelled');
    assert.equal(b.progress.failed, 0);
    assert.equal(b.progress.sent, atCancel, 'what the receiver got is what the batch counts as sent');
    assert.equal(rx.seen.size, atCancel);
    assert.ok(
      [...rx.seen.values()].every((n) => n === 1),
      'no message arrived twice',
    );
    await Promise.all(workers.map((w) => w.stop()));
  });
});
