// Rate limits and scheduledAt end to end, measured where a user would see them: at a webhook
// receiver that verifies every message and notes when it arrived, and in /metrics.
//
// The rate assertion is a lower bound, which load cannot break (a slow machine only sends later):
// a token bucket of rate R and burst B (one second: B = R) grants at most B + R·t tokens in the
// first t seconds, and a chunk takes tokens `n` at a time (n = R/4), so the k-th message can
// arrive no sooner than (k − B − n)/R seconds after the first, less the first message's own trip.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startPlatform, type TestPlatform } from '../../../test/helpers.ts';
import { senderModule } from './index.ts';
import { batchFinished, startWebhookReceiver, webhookSendConfig } from './test-peers.ts';

const inject = (p: TestPlatform, method: 'GET' | 'POST', url: string, payload?: unknown) =>
  p.app.inject({ method, url, headers: p.auth, payload: payload as object });

/** A sample's value from this process's /metrics text (0 when the series is absent). */
async function metric(p: TestPlatform, name: string, labels: Record<string, string>): Promise<number> {
  const text = await p.kit.metrics.registry.metrics();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('sender rate limits and schedules', () => {
  it('when a batch of 30 has ratePerSecond 10, then the receiver sees them spread over at least 1.5 s and the wait metric moves', async () => {
    const rx = await startWebhookReceiver();
    after(() => rx.close());
    const p = await startPlatform({ modules: [senderModule] });
    const waitsBefore = await metric(p, 'sender_rate_limit_waits_total', { limit: 'batch' });
    const N = 30;
    const R = 10;
    const sendConfigId = await webhookSendConfig(p, rx.url);
    // The limiter's clock starts after this; bounds counted from here need no slack for the first
    // message's trip (from the first arrival they did, and a cold first delivery could exceed it).
    const posted = Date.now();
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId,
      ratePerSecond: R,
      template: { subject: 's', text: 'n={{n}}' },
      recipients: Array.from({ length: N }, (_, i) => ({ address: `r${i}`, variables: { n: i } })),
    });
    assert.equal(res.statusCode, 201, res.body);
    const b = await batchFinished(p, res.json().id, 30000);
    assert.equal(b.progress.sent, N);

    const times = rx.arrivals.map((a) => a.at).sort((x, y) => x - y);
    assert.equal(times.length, N, 'each message arrived once');
    const burst = R;
    const take = Math.floor(R / 4);
    for (let k = 1; k <= N; k++) {
      const earliest = Math.max(0, (k - burst - take) / R);
      const seen = (times[k - 1]! - posted) / 1000;
      assert.ok(
        seen >= earliest,
        `message ${k} arrived ${seen} s after the POST; the limit allows ${earliest} s at the soonest`,
      );
    }
    assert.ok((times.at(-1)! - posted) / 1000 >= 1.5, 'the batch took at least 1.5 s');
    const waits = await metric(p, 'sender_rate_limit_waits_total', { limit: 'batch' });
    assert.ok(
      waits > waitsBefore,
      `sender_rate_limit_waits_total{limit="batch"} moved (${waitsBefore} → ${waits})`,
    );
  });

  it('when a batch is scheduled 4 s ahead, then nothing is sent before that time, it counts as scheduled meanwhile, and then every recipient is sent', async () => {
    const rx = await startWebhookReceiver();
    after(() => rx.close());
    const p = await startPlatform({ modules: [senderModule] });
    // 4 s: the POST, two metric reads and the 1 s wait below fit before it on a loaded machine.
    const scheduledAt = new Date(Date.now() + 4000);
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId: await webhookSendConfig(p, rx.url),
      scheduledAt: scheduledAt.toISOString(),
      template: { subject: 's', text: 't' },
      recipients: Array.from({ length: 5 }, (_, i) => ({ address: `r${i}` })),
    });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.json().state, 'queued');
    assert.equal(await metric(p, 'sender_queue_depth', { state: 'scheduled' }), 5);
    assert.equal(await metric(p, 'sender_queue_depth', { state: 'sending' }), 0);
    // A second later, before the time: still queued, nothing at the receiver.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await inject(p, 'GET', `/api/batches/${res.json().id}`)).json().state, 'queued');
    assert.equal(rx.raw(), 0);

    const b = await batchFinished(p, res.json().id, 30000);
    assert.equal(b.progress.sent, 5);
    assert.equal(rx.arrivals.length, 5);
    const first = Math.min(...rx.arrivals.map((a) => a.at));
    assert.ok(
      first >= scheduledAt.getTime(),
      `first message ${first - scheduledAt.getTime()} ms after scheduledAt`,
    );
    assert.ok(new Date(b.startedAt).getTime() >= scheduledAt.getTime(), 'started at or after scheduledAt');
    assert.equal(await metric(p, 'sender_queue_depth', { state: 'scheduled' }), 0);
  });
});
