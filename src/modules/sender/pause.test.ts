// A chunk whose recipients all wait for a retry further away than the inline wait gives its worker
// slot back and is queued again for the retry time. Pausing and resuming its batch in that window
// must leave it with a queued job: the batch completes. And a pause in the middle of a sub-batch to
// a slow provider stops it there: what was not yet sent waits for the resume, its attempt uncounted.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startPlatform, type TestPlatform, waitFor } from '../../../test/helpers.ts';
import { senderModule } from './index.ts';
import { chunkHolders, startSmtpSink, startWebhookReceiver, webhookSendConfig } from './test-peers.ts';

const inject = (p: TestPlatform, method: 'GET' | 'POST', url: string, payload?: unknown) =>
  p.app.inject({ method, url, headers: p.auth, payload: payload as object });

async function deferredBatch(p: TestPlatform, url: string) {
  const res = await inject(p, 'POST', '/api/batches', {
    sendConfigId: await webhookSendConfig(p, url),
    maxAttempts: 10,
    template: { subject: 's', text: 't {{n}}' },
    // One recipient: its retry waits grow past the inline wait, so the chunk must defer. With three,
    // their jittered retries could fall due less than the inline wait apart to the end, and the
    // batch complete without ever deferring (the test waited a minute for that, ~1 run in 5).
    recipients: [{ address: 'r0', variables: { n: 0 } }],
  });
  assert.equal(res.statusCode, 201, res.body);
  const id: string = res.json().id;
  // Wait until the chunk has handed its slot back: chunk pending, its recipient's retry > 1 s away.
  const { chunkJobAt } = await waitFor(
    async () => {
      const { rows } = await p.kit.pool.query<{ deferred: boolean; at: Date | null }>(
        `SELECT (c.state = 'pending' AND (SELECT bool_and(state = 'pending' AND next_attempt_at > now() + interval '1 second')
                  FROM sender_recipients WHERE batch_id = $1)) AS deferred,
                (SELECT max(run_at) FROM graphile_worker.jobs
                  WHERE key = 'sender:chunk:' || $1 || ':0' AND locked_at IS NULL) AS at
         FROM sender_chunks c WHERE c.batch_id = $1 AND c.no = 0`,
        [id],
      );
      return rows[0]?.deferred && rows[0].at ? { chunkJobAt: rows[0].at } : undefined;
    },
    { timeoutMs: 60000, intervalMs: 50, what: 'the chunk to defer its retry' },
  );
  return { id, chunkJobAt };
}

async function completes(p: TestPlatform, id: string) {
  return waitFor(
    async () => {
      const v = (await inject(p, 'GET', `/api/batches/${id}`)).json();
      return v.state === 'completed' ? v : undefined;
    },
    { timeoutMs: 60000, intervalMs: 200, what: `batch ${id} to complete` },
  );
}

describe('sender pause during a deferred retry', () => {
  it('when a chunk waiting for its retry has lost its queued job, then a sweep queues it again and the batch completes', async () => {
    const rx = await startWebhookReceiver({ failFirst: 5 });
    after(() => rx.close());
    const p = await startPlatform({ modules: [senderModule] });
    const { id } = await deferredBatch(p, rx.url);
    // The state a paused-then-resumed chunk job can end in: chunk pending, batch sending, no job.
    const removed = await p.kit.pool.query(
      `SELECT graphile_worker.remove_job('sender:chunk:' || $1 || ':0') WHERE EXISTS
         (SELECT 1 FROM graphile_worker.jobs WHERE key = 'sender:chunk:' || $1 || ':0' AND locked_at IS NULL)`,
      [id],
    );
    assert.equal(removed.rowCount, 1, 'the queued retry job removed');
    const b = await completes(p, id);
    assert.equal(b.progress.sent, 1);
    assert.equal(rx.seen.size, 1);
    assert.ok(p.logs.events('SENDER_CHUNK_REQUEUED').length > 0, 'requeued by the sweeper');
  });

  it('when a batch is paused and resumed while its chunk waits for a retry, then the chunk still has a job and the batch completes', async () => {
    const rx = await startWebhookReceiver({ failFirst: 5 });
    after(() => rx.close());
    const p = await startPlatform({ modules: [senderModule] });
    const { id } = await deferredBatch(p, rx.url);
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/pause`)).json().state, 'paused');
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/resume`)).json().state, 'sending');
    const b = await completes(p, id);
    assert.equal(b.progress.sent, 1);
    assert.equal(rx.seen.size, 1);
  });

  it('when the retry comes due while the batch is paused, then resume still finds the chunk a job and the batch completes', async () => {
    const rx = await startWebhookReceiver({ failFirst: 5 });
    after(() => rx.close());
    const p = await startPlatform({ modules: [senderModule] });
    const { id, chunkJobAt } = await deferredBatch(p, rx.url);
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/pause`)).json().state, 'paused');
    // Let the deferred job come due and run while paused.
    await waitFor(
      async () => {
        const { rows } = await p.kit.pool.query(
          `SELECT 1 FROM graphile_worker.jobs WHERE key = 'sender:chunk:' || $1 || ':0'`,
          [id],
        );
        return Date.now() > chunkJobAt.getTime() && rows.length === 0;
      },
      { timeoutMs: 30000, what: 'the deferred chunk job to run during the pause' },
    );
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/resume`)).json().state, 'sending');
    const b = await completes(p, id);
    assert.equal(b.progress.sent, 1);
    assert.equal(rx.seen.size, 1);
  });
});

describe('sender pause in the middle of a sub-batch', () => {
  it('when a batch to a slow SMTP server is paused mid-sub-batch, then the messages not yet started stay unsent and uncounted, and after resume each arrives once', async () => {
    // 2 connections × 50 ms a message: a sub-batch of 200 takes ~5 s to send whole.
    const smtp = await startSmtpSink({ delayMs: 50 });
    after(() => smtp.close());
    const p = await startPlatform({ modules: [senderModule] });
    const cfg = await inject(p, 'POST', '/api/send-configs', {
      name: 'slow smtp',
      channel: 'email',
      settings: {
        host: '127.0.0.1',
        port: smtp.port,
        from: 'news@example.com',
        ignoreTLS: true,
        maxConnections: 2,
      },
    });
    assert.equal(cfg.statusCode, 201, cfg.body);
    const total = 300;
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId: cfg.json().id,
      template: { subject: 's', text: 'n={{n}}' },
      recipients: Array.from({ length: total }, (_, i) => ({
        address: `user${i}@example.com`,
        variables: { n: i },
      })),
    });
    assert.equal(res.statusCode, 201, res.body);
    const id: string = res.json().id;
    await waitFor(() => smtp.count() >= 10, { timeoutMs: 30000, intervalMs: 20, what: 'the first messages' });

    const before = smtp.count();
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/pause`)).json().state, 'paused');
    await waitFor(async () => (await chunkHolders(p.kit.pool, id)).size === 0, {
      timeoutMs: 30000,
      intervalMs: 20,
      what: 'the chunk to be let go',
    });
    const late = smtp.count() - before;
    // Without the stop inside the sub-batch, the rest of its 200 (~190) would still go out.
    assert.ok(late < 100, `${late} messages went out after the pause`);
    const { rows } = await p.kit.pool.query<{ state: string; attempts: number; n: number }>(
      `SELECT state, attempts, count(*)::int AS n FROM sender_recipients WHERE batch_id = $1 GROUP BY 1, 2 ORDER BY 1, 2`,
      [id],
    );
    assert.deepEqual(
      rows,
      [
        { state: 'pending', attempts: 0, n: total - smtp.count() },
        { state: 'sent', attempts: 1, n: smtp.count() },
      ],
      'every claimed message not sent is pending again, its attempt not counted',
    );

    assert.equal((await inject(p, 'POST', `/api/batches/${id}/resume`)).json().state, 'sending');
    const b = await completes(p, id);
    assert.equal(b.progress.sent, total);
    assert.equal(b.progress.failed, 0);
    const to = smtp.mails.map((m) => m.to[0]);
    assert.equal(new Set(to).size, total, 'every recipient got one e-mail');
    assert.equal(to.length, total, 'and no recipient two');
  });
});
