// What happens when the API and the workers meet half-way: a cancel while messages are at the
// provider, a resume and a cancel at once, a pause just as the last chunk finishes, a bounce that
// overtakes the worker's record of the send. Each ends with counts that add up and a state that
// says what happened.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startPlatform, type TestPlatform, waitFor } from '../../../test/helpers.ts';
import { senderModule } from './index.ts';
import { batchFinished, startWebhookReceiver, webhookSendConfig } from './test-peers.ts';

const inject = (p: TestPlatform, method: 'GET' | 'POST', url: string, payload?: unknown) =>
  p.app.inject({ method, url, headers: p.auth, payload: payload as object });

const template = { subject: 's', text: 'n={{n}}' };
const recipients = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ address: `r${i}`, variables: { n: i } }));

async function recipientStates(p: TestPlatform, id: string) {
  const { rows } = await p.kit.pool.query<{ state: string; n: number }>(
    'SELECT state, count(*)::int AS n FROM sender_recipients WHERE batch_id = $1 GROUP BY state ORDER BY state',
    [id],
  );
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

describe('sender lifecycle races', () => {
  it('when a batch is cancelled while its messages are at the provider, then they are recorded as sent, not cancelled', async () => {
    const rx = await startWebhookReceiver({ delayMs: 3000 });
    after(() => rx.close());
    const p = await startPlatform({ modules: [senderModule] });
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId: await webhookSendConfig(p, rx.url),
      template,
      recipients: recipients(20),
    });
    assert.equal(res.statusCode, 201, res.body);
    const id: string = res.json().id;
    await waitFor(() => rx.arrivals.length === 20, {
      timeoutMs: 30000,
      intervalMs: 20,
      what: 'all 20 at the receiver',
    });
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/cancel`)).statusCode, 200);
    await waitFor(
      async () => {
        const b = (await inject(p, 'GET', `/api/batches/${id}`)).json();
        return b.progress.sent + b.progress.cancelled === 20 ? b : undefined;
      },
      { timeoutMs: 30000, what: 'every recipient settled' },
    );
    const b = (await inject(p, 'GET', `/api/batches/${id}`)).json();
    assert.equal(b.state, 'cancelled');
    assert.deepEqual([b.progress.sent, b.progress.cancelled], [20, 0], 'the receiver got all 20');
    assert.deepEqual(await recipientStates(p, id), { sent: 20 });
  });

  it('when a paused batch is resumed and cancelled at the same moment, then a cancel that answered 200 is what the batch ends as', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    for (let i = 0; i < 10; i++) {
      const res = await inject(p, 'POST', '/api/batches', {
        channel: 'mock',
        mock: { latencyMs: 500 },
        template,
        recipients: recipients(5),
      });
      assert.equal(res.statusCode, 201, res.body);
      const id: string = res.json().id;
      await waitFor(async () => (await inject(p, 'GET', `/api/batches/${id}`)).json().state === 'sending', {
        timeoutMs: 30000,
        intervalMs: 20,
        what: 'sending',
      });
      assert.equal((await inject(p, 'POST', `/api/batches/${id}/pause`)).statusCode, 200);
      const [cancel, resume] = await Promise.all([
        inject(p, 'POST', `/api/batches/${id}/cancel`),
        inject(p, 'POST', `/api/batches/${id}/resume`),
      ]);
      assert.equal(cancel.statusCode, 200, cancel.body);
      assert.ok([200, 409].includes(resume.statusCode), resume.body);
      const b = await waitFor(
        async () => {
          const v = (await inject(p, 'GET', `/api/batches/${id}`)).json();
          return v.progress.sent + v.progress.cancelled === 5 ? v : undefined;
        },
        { timeoutMs: 30000, what: 'every recipient settled' },
      );
      assert.equal(b.state, 'cancelled', `round ${i}: resume answered ${resume.statusCode}`);
    }
  });

  it('when a draft is sent by many requests at once, then one answers 200 and the rest 409', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      draft: true,
      template,
      recipients: recipients(3),
    });
    assert.equal(res.statusCode, 201, res.body);
    const id: string = res.json().id;
    const sends = await Promise.all(
      Array.from({ length: 20 }, () => inject(p, 'POST', `/api/batches/${id}/send`)),
    );
    const codes = sends.map((r) => r.statusCode).sort();
    // Before the lock: 19 of 50 answered 200, each believing it had sent the batch.
    assert.deepEqual(codes, [200, ...Array(19).fill(409)]);
    const refused = sends.find((r) => r.statusCode === 409)!.json().message;
    assert.match(refused, /is (queued|sending|completed); only a draft batch can be sent/);
    const b = await batchFinished(p, id, 30000);
    assert.deepEqual([b.state, b.progress.sent], ['completed', 3]);
  });

  it('when a batch was paused just as its last chunk finished, then resume completes it', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      template,
      recipients: recipients(3),
    });
    const id: string = res.json().id;
    await batchFinished(p, id, 30000);
    // The state that race leaves: every chunk done and every recipient sent, the batch paused.
    await p.kit.pool.query(`UPDATE sender_batches SET state = 'paused', finished_at = NULL WHERE id = $1`, [
      id,
    ]);
    const resumed = await inject(p, 'POST', `/api/batches/${id}/resume`);
    assert.equal(resumed.statusCode, 200, resumed.body);
    assert.equal(resumed.json().state, 'completed');
    assert.equal(resumed.json().progress.sent, 3);
    assert.equal(
      p.logs.events('BATCH_COMPLETED').length,
      2,
      'logged when it ran, and again when resume completed it',
    );
  });

  it('when a bounce arrives before the worker has recorded the send, then the send is counted and the recipient ends bounced', async () => {
    const rx = await startWebhookReceiver({ delayMs: 2000 });
    after(() => rx.close());
    const p = await startPlatform({ modules: [senderModule] });
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId: await webhookSendConfig(p, rx.url),
      template,
      recipients: recipients(3),
    });
    const id: string = res.json().id;
    await waitFor(() => rx.arrivals.length === 3, {
      timeoutMs: 30000,
      intervalMs: 20,
      what: 'all 3 at the receiver',
    });
    const body = JSON.stringify({ type: 'bounced', messageId: `${id}:1` });
    const bounce = await p.app.inject({
      method: 'POST',
      url: '/webhooks/prov',
      payload: body,
      headers: { ...p.kit.webhooks.sign(`evt_${id}`, body), 'content-type': 'application/json' },
    });
    assert.equal(bounce.json().recorded, 1, bounce.body);
    const b = await batchFinished(p, id, 30000);
    assert.equal(b.state, 'completed');
    assert.deepEqual([b.progress.sent, b.progress.bounced, b.progress.pending], [3, 1, 0]);
    assert.deepEqual(await recipientStates(p, id), { bounced: 1, sent: 2 });
  });
});
