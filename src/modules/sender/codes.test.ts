// codeCampaign with the real codes module loaded: every recipient gets its own code through the
// codes RPC service, sees it as {{code}} (checked at a webhook receiver), the code is assigned to
// the recipient in the codes API, and a recipient that fails for good gives its code back.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { startPlatform, type TestPlatform, waitFor } from '../../../test/helpers.ts';
import { conflict, unavailable } from '../../kit/errors.ts';
import { codesModule } from '../codes/index.ts';
import { senderModule } from './index.ts';
import { batchFinished, startWebhookReceiver, webhookSendConfig } from './test-peers.ts';

const inject = (p: TestPlatform, method: 'GET' | 'POST', url: string, payload?: unknown) =>
  p.app.inject({ method, url, headers: p.auth, payload: payload as object });

describe('sender codes', () => {
  it('when a batch names a codeCampaign, then each recipient gets a distinct code assigned before the send as {{code}}, and one the provider refused keeps it', async () => {
    const N = 40;
    const refused = 'refused@example.com';
    const rx = await startWebhookReceiver({ refuse: [refused] });
    after(() => rx.close());
    const p = await startPlatform({ modules: [codesModule, senderModule] });
    const camp = await inject(p, 'POST', '/api/campaigns', {
      id: 'sender-test',
      name: 'sender test',
      format: { length: 10, alphabet: 'alphanumeric' },
    });
    assert.equal(camp.statusCode, 201, camp.body);
    const gen = await inject(p, 'POST', '/api/campaigns/sender-test/codes', { count: N + 10 });
    assert.equal(gen.statusCode, 201, gen.body);
    const inventory = async () =>
      (await inject(p, 'GET', '/api/campaigns/sender-test')).json().inventory as Record<string, number>;
    assert.equal((await inventory()).available, N + 10);

    const recipients = [
      ...Array.from({ length: N }, (_, i) => ({ address: `u${i}@example.com`, variables: { n: i } })),
      { address: refused, variables: { n: -1 } },
    ];
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId: await webhookSendConfig(p, rx.url),
      codeCampaign: 'sender-test',
      template: { subject: 'code for {{n}}', text: 'to={{address}} code={{code}}' },
      recipients,
    });
    assert.equal(res.statusCode, 201, res.body);
    const id = res.json().id;
    const b = await waitFor(
      async () => {
        const v = (await inject(p, 'GET', `/api/batches/${id}`)).json();
        return ['completed', 'failed', 'cancelled'].includes(v.state) ? v : undefined;
      },
      { timeoutMs: 60000, what: 'the batch to finish' },
    );
    assert.equal(b.state, 'completed');
    assert.equal(b.progress.sent, N);
    assert.equal(b.progress.failed, 1);

    // At the receiver: one message per sent recipient, each with a code, no code twice.
    assert.equal(rx.bodies.length, N);
    const codeOf = new Map<string, string>();
    for (const body of rx.bodies) {
      const m = /^to=(\S+) code=(\S+)$/.exec(String(body.text));
      assert.ok(m, `rendered text carries the code: ${body.text}`);
      assert.equal(m[1], body.to);
      codeOf.set(m[1]!, m[2]!);
    }
    assert.equal(codeOf.size, N, 'every sent recipient received a message');
    assert.equal(new Set(codeOf.values()).size, N, 'every recipient a different code');

    // In the codes API: each code assigned to its recipient under reserveId batch:recipient.
    for (let i = 0; i < N; i++) {
      const addr = `u${i}@example.com`;
      const code = codeOf.get(addr);
      assert.ok(code, `${addr} received a code`);
      const v = await inject(p, 'GET', `/api/campaigns/sender-test/codes/${code}`);
      assert.equal(v.statusCode, 200, v.body);
      assert.equal(v.json().state, 'assigned');
      assert.equal(v.json().userId, addr);
      assert.equal(v.json().reserveId, `${id}:${i + 1}`);
    }

    // The refused recipient failed for good. Its code was assigned to it before the send, so it
    // stays that address's: a code that may have gone out is never handed to a second holder.
    const failed = (await inject(p, 'GET', `/api/batches/${id}/recipients?after=${N}&limit=1`)).json()
      .recipients[0];
    assert.equal(failed.address, refused);
    assert.equal(failed.state, 'failed');
    assert.match(failed.error, /422/);
    const inv = await inventory();
    assert.deepEqual([inv.assigned, inv.reserved, inv.available], [N + 1, 0, 9]);
    assert.ok(failed.code, 'the failed recipient had a code before its send');
    assert.ok(![...codeOf.values()].includes(failed.code));
    const v = (await inject(p, 'GET', `/api/campaigns/sender-test/codes/${failed.code}`)).json();
    assert.deepEqual([v.state, v.userId], ['assigned', refused]);
  });

  it('when an address is listed twice and the campaign gives one code per user, then the second is not sent and its code goes back', async () => {
    const p = await startPlatform({ modules: [codesModule, senderModule] });
    const camp = await inject(p, 'POST', '/api/campaigns', {
      id: 'one-each',
      name: 'one each',
      format: { length: 8, alphabet: 'alphanumeric' },
      maxPerUser: 1,
    });
    assert.equal(camp.statusCode, 201, camp.body);
    await inject(p, 'POST', '/api/campaigns/one-each/codes', { count: 5 });
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      codeCampaign: 'one-each',
      template: { subject: 's', text: '{{code}}' },
      recipients: [
        { address: 'kim@example.com' },
        { address: 'kim@example.com' },
        { address: 'lee@example.com' },
      ],
    });
    assert.equal(res.statusCode, 201, res.body);
    const b = await batchFinished(p, res.json().id, 30000);
    assert.deepEqual([b.progress.sent, b.progress.failed], [2, 1]);
    const recipients = (await inject(p, 'GET', `/api/batches/${b.id}/recipients`)).json().recipients;
    const failed = recipients.find((r: { state: string }) => r.state === 'failed');
    // Before: both were sent a code, the second code's assign was refused after the send, and that
    // code went back to the pool to be handed to someone else.
    assert.equal(failed.address, 'kim@example.com');
    assert.match(
      failed.error,
      /^code from campaign one-each not assigned to kim@example\.com, so not sent: .*maxPerUser/,
    );
    assert.equal(failed.attempts, 1, 'refused for good, not retried');
    const freed = (await inject(p, 'GET', `/api/campaigns/one-each/codes/${failed.code}`)).json();
    assert.equal(freed.state, 'available', 'the unsent code is back in the pool');
    const kims = (await inject(p, 'GET', '/api/campaigns/one-each/users/kim@example.com/codes')).json();
    assert.equal(kims.codes.length, 1);
    const inv = (await inject(p, 'GET', '/api/campaigns/one-each')).json().inventory;
    assert.deepEqual([inv.assigned, inv.reserved, inv.available], [2, 0, 3]);
  });

  it('when a batch names a codeCampaign that does not exist, then the create (and a dry run) answers 404 and stores nothing', async () => {
    const p = await startPlatform({ modules: [codesModule, senderModule] });
    for (const dryRun of [false, true]) {
      const res = await inject(p, 'POST', '/api/batches', {
        channel: 'mock',
        codeCampaign: 'no-such-campaign',
        template: { subject: 's', text: '{{code}}' },
        recipients: [{ address: 'a@example.com' }],
        dryRun,
      });
      assert.equal(res.statusCode, 404, res.body);
      assert.match(res.json().message, /codeCampaign "no-such-campaign" not found/);
    }
    const { rows } = await p.kit.pool.query('SELECT count(*)::int AS n FROM sender_batches');
    assert.equal(rows[0].n, 0);
  });

  it('when a batch names the batch-codes campaign of POST /api/generate, then the create answers 409 and stores nothing', async () => {
    const p = await startPlatform({ modules: [codesModule, senderModule] });
    // Made by a signed POST /api/generate: the campaign exists, yet takes no reserve.
    const at = new Date();
    const made = await p.app.inject({
      method: 'POST',
      url: '/api/generate',
      headers: {
        'content-type': 'application/json',
        'webhook-id': 'msg_1',
        'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
        'webhook-signature': new Webhook(p.kit.webhookSecret).sign('msg_1', at, '{}'),
      },
      payload: '{}',
    });
    assert.equal(made.statusCode, 201, made.body);
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      codeCampaign: 'batch-codes',
      template: { subject: 's', text: '{{code}}' },
      recipients: [{ address: 'a@example.com' }],
    });
    // Before: 201, and then every recipient failed on its reserve's 409.
    assert.equal(res.statusCode, 409, res.body);
    assert.match(res.json().message, /only through POST \/api\/generate.*create a campaign of your own/);
    const { rows } = await p.kit.pool.query('SELECT count(*)::int AS n FROM sender_batches');
    assert.equal(rows[0].n, 0);
  });

  /**
   * A codes service stand-in registered under the real name, so the sender reaches it through the
   * same RPC call site: `reserve` answers with `fail(reserveId, call)` or a code.
   */
  function fakeCodes(p: TestPlatform, fail: (reserveId: string, call: number) => Error | undefined) {
    const calls = new Map<string, number>();
    p.kit.rpc.register('codes', {
      getCampaign: async ({ campaignId }: { campaignId: string }) => ({ id: campaignId }),
      reserve: async ({ reserveId }: { reserveId: string }) => {
        const n = (calls.get(reserveId) ?? 0) + 1;
        calls.set(reserveId, n);
        const err = fail(reserveId, n);
        if (err) throw err;
        return { reserveId, codes: [`C-${reserveId.split(':')[1]}`], expiresAt: new Date() };
      },
      assign: async () => ({}),
      release: async () => ({ released: 1 }),
    });
    return calls;
  }

  it('when the codes service answers 503 or times out, then the reservation is retried and the recipients are sent', async () => {
    const p = await startPlatform({ modules: [senderModule], env: { SENDER_RETRY_BASE_MS: '20' } });
    const calls = fakeCodes(p, (_id, n) =>
      n === 1
        ? unavailable('no codes worker is running')
        : n === 2
          ? unavailable('codes.reserve did not answer within 5000 ms')
          : undefined,
    );
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      codeCampaign: 'flaky',
      maxAttempts: 5,
      template: { subject: 's', text: '{{code}}' },
      recipients: Array.from({ length: 5 }, (_, i) => ({ address: `u${i}@example.com` })),
    });
    assert.equal(res.statusCode, 201, res.body);
    const b = await batchFinished(p, res.json().id, 30000);
    assert.equal(b.state, 'completed');
    assert.deepEqual([b.progress.sent, b.progress.failed], [5, 0]);
    const r = (await inject(p, 'GET', `/api/batches/${b.id}/recipients`)).json().recipients;
    assert.deepEqual(
      r.map((x: { attempts: number; code: string }) => [x.attempts, x.code]),
      [1, 2, 3, 4, 5].map((i) => [3, `C-${i}`]),
    );
    assert.deepEqual([...calls.values()], [3, 3, 3, 3, 3]);
  });

  it('when the codes service answers 409 (out of codes) or 404, then the recipient fails at once without retries', async () => {
    const p = await startPlatform({ modules: [senderModule], env: { SENDER_RETRY_BASE_MS: '20' } });
    fakeCodes(p, (id) => (id.endsWith(':1') ? conflict('only 0 codes available') : undefined));
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      codeCampaign: 'short',
      maxAttempts: 5,
      template: { subject: 's', text: '{{code}}' },
      recipients: [{ address: 'a@example.com' }, { address: 'b@example.com' }],
    });
    const b = await batchFinished(p, res.json().id, 30000);
    assert.deepEqual([b.progress.sent, b.progress.failed], [1, 1]);
    const failed = (await inject(p, 'GET', `/api/batches/${b.id}/recipients?state=failed`)).json()
      .recipients[0];
    assert.equal(failed.attempts, 1, 'a permanent answer is not retried');
    assert.match(failed.error, /^no code from campaign short: only 0 codes available$/);
  });

  it('when a reservation lapses between reserve and assign, then the recipient is retried, not failed', async () => {
    const p = await startPlatform({ modules: [senderModule], env: { SENDER_RETRY_BASE_MS: '20' } });
    let assigns = 0;
    p.kit.rpc.register('codes', {
      getCampaign: async ({ campaignId }: { campaignId: string }) => ({ id: campaignId }),
      reserve: async ({ reserveId }: { reserveId: string }) => ({
        reserveId,
        codes: ['C-1'],
        expiresAt: new Date(),
      }),
      assign: async () => {
        if (++assigns === 1)
          throw conflict(
            'reservation r is not reserved: it expired and its codes went back to the pool: reserve again',
          );
        return {};
      },
      release: async () => ({ released: 1 }),
    });
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      codeCampaign: 'tight',
      maxAttempts: 3,
      template: { subject: 's', text: '{{code}}' },
      recipients: [{ address: 'a@example.com' }],
    });
    const b = await batchFinished(p, res.json().id, 30000);
    // Before: failed at once, as if the address were past maxPerUser.
    assert.deepEqual([b.progress.sent, b.progress.failed], [1, 0]);
    assert.equal(assigns, 2);
  });

  it('when the codes service is down at create, then the create answers 503 so the client retries', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    p.kit.rpc.register('codes', {
      getCampaign: async () => {
        throw unavailable('no codes worker is running');
      },
    });
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      codeCampaign: 'any',
      template: { subject: 's', text: '{{code}}' },
      recipients: [{ address: 'a@example.com' }],
    });
    assert.equal(res.statusCode, 503, res.body);
    assert.match(res.json().message, /could not confirm codeCampaign "any"/);
  });
});
