// Real peers: e-mails to a local SMTP server, webhooks to a local receiver that verifies every
// signature with the standardwebhooks package; send configs keep their secrets.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startPlatform, type TestPlatform, waitFor } from '../../../test/helpers.ts';
import { senderModule } from './index.ts';
import { batchFinished, startSmtpSink, startWebhookReceiver, WEBHOOK_SECRET } from './test-peers.ts';

const inject = (p: TestPlatform, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) =>
  p.app.inject({ method, url, headers: p.auth, payload: payload as object });

const finished = (p: TestPlatform, id: string) => batchFinished(p, id, 60000);

describe('sender channels with real peers', () => {
  it('when a batch goes to the local SMTP server, then each e-mail has its own subject, body, variables and List-Unsubscribe', async () => {
    const smtp = await startSmtpSink();
    after(() => smtp.close());
    const p = await startPlatform({
      modules: [senderModule],
      env: { SENDER_PUBLIC_URL: 'https://mail.example.com' },
    });
    const cfg = await inject(p, 'POST', '/api/send-configs', {
      name: 'local smtp',
      channel: 'email',
      settings: { host: '127.0.0.1', port: smtp.port, from: 'Shop <news@example.com>', ignoreTLS: true },
      secret: 'smtp-password-never-shown',
    });
    assert.equal(cfg.statusCode, 201, cfg.body);
    assert.equal(cfg.json().hasSecret, true);
    assert.ok(!cfg.body.includes('smtp-password-never-shown'), 'secret not returned');
    const listed = await inject(p, 'GET', '/api/send-configs');
    assert.ok(!listed.body.includes('smtp-password-never-shown'));
    const recipients = Array.from({ length: 50 }, (_, i) => ({
      address: `user${i}@example.com`,
      variables: { name: `Ann ${i}`, plan: i % 2 ? 'gold' : 'basic' },
    }));
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId: cfg.json().id,
      template: {
        subject: 'Welcome {{name}}',
        html: '<p>Hi {{name}}, your plan is <b>{{plan}}</b></p>',
        text: 'Hi {{name}}, your plan is {{plan}}',
      },
      recipients,
    });
    assert.equal(res.statusCode, 201, res.body);
    const b = await finished(p, res.json().id);
    assert.equal(b.progress.sent, 50);
    assert.equal(smtp.mails.length, 50);
    const m7 = smtp.mails.find((m) => m.to[0] === 'user7@example.com')!;
    assert.match(m7.raw, /Subject: Welcome Ann 7/);
    assert.match(m7.raw, /Hi Ann 7, your plan is gold/);
    assert.match(m7.raw, /List-Unsubscribe:\s+<https:\/\/mail\.example\.com\/api\/unsubscribe\/[^>]+>/);
    assert.match(m7.raw, /List-Unsubscribe-Post: List-Unsubscribe=One-Click/);
    assert.equal(new Set(smtp.mails.map((m) => m.to[0])).size, 50, 'one e-mail per recipient');

    const test = await inject(p, 'POST', `/api/send-configs/${cfg.json().id}/test`, {
      to: 'ops@example.com',
    });
    assert.equal(test.statusCode, 200, test.body);
    await waitFor(() => smtp.mails.some((m) => m.to[0] === 'ops@example.com'));
  });

  it('when a batch goes to a webhook receiver, then every delivery verifies with standardwebhooks and carries its variables', async () => {
    const rx = await startWebhookReceiver({ failRate: 0.3 });
    after(() => rx.close());
    // A 20 ms first retry: with the default 500 ms, one of 300 recipients refused 7 times in a row
    // (p ≈ 0.07) waits about a minute for its next try, longer than the test waits.
    const p = await startPlatform({ modules: [senderModule], env: { SENDER_RETRY_BASE_MS: '20' } });
    const cfg = await inject(p, 'POST', '/api/send-configs', {
      name: 'hook',
      channel: 'webhook',
      settings: { url: rx.url },
      secret: WEBHOOK_SECRET,
    });
    assert.equal(cfg.statusCode, 201, cfg.body);
    assert.ok(!cfg.body.includes(WEBHOOK_SECRET));
    const res = await inject(p, 'POST', '/api/batches', {
      sendConfigId: cfg.json().id,
      maxAttempts: 20,
      template: { subject: 'Order {{order}}', text: 'Thanks {{name}}' },
      recipients: Array.from({ length: 300 }, (_, i) => ({
        address: `r${i}`,
        variables: { name: `N${i}`, order: i },
      })),
    });
    const b = await finished(p, res.json().id);
    assert.equal(b.progress.sent, 300);
    assert.equal(rx.rejected(), 0, 'every signature verified');
    assert.equal(rx.seen.size, 300);
    assert.ok(
      [...rx.seen.values()].every((n) => n === 1),
      'none delivered twice',
    );
    const body = rx.bodies.find((x) => x.to === 'r42')!;
    assert.equal(body.subject, 'Order 42');
    assert.equal(body.text, 'Thanks N42');
  });

  it('when a send config is invalid, then the answer is a 400 that names the field', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const cases: [unknown, RegExp][] = [
      [{ name: 'x', channel: 'email', settings: { port: 25, from: 'a@b.c' } }, /settings\.host/],
      [{ name: 'x', channel: 'email', settings: { host: 'h', port: 0, from: 'a@b.c' } }, /settings\.port/],
      [{ name: 'x', channel: 'email', settings: { host: 'h', port: 25 } }, /settings\.from/],
      [
        { name: 'x', channel: 'webhook', settings: { url: 'ftp://x' }, secret: WEBHOOK_SECRET },
        /settings\.url/,
      ],
      [{ name: 'x', channel: 'webhook', settings: { url: 'http://x' } }, /secret/],
      [{ name: 'x', channel: 'webhook', settings: { url: 'http://x' }, secret: 'nope!' }, /whsec_/],
      [{ name: 'x', channel: 'mock', settings: { failureRate: 2 } }, /failureRate/],
      [{ name: 'x', channel: 'mock', settings: { colour: 1 } }, /settings\.colour is not a mock setting/],
      [{ name: 'x', channel: 'fax' }, /channel/],
    ];
    for (const [body, message] of cases) {
      const res = await inject(p, 'POST', '/api/send-configs', body);
      assert.equal(res.statusCode, 400, JSON.stringify(body));
      assert.match(res.json().message, message);
    }
    const ok = await inject(p, 'POST', '/api/send-configs', { name: 'm', channel: 'mock' });
    assert.equal(ok.statusCode, 201);
    assert.equal(
      (await inject(p, 'POST', '/api/send-configs', { name: 'm', channel: 'mock' })).statusCode,
      409,
    );
    const missing = '00000000-0000-0000-0000-000000000000';
    assert.equal((await inject(p, 'GET', `/api/send-configs/${missing}`)).statusCode, 404);
    assert.equal((await inject(p, 'DELETE', `/api/send-configs/${missing}`)).statusCode, 404);
    const unreachable = await inject(p, 'POST', '/api/send-configs', {
      name: 'dead smtp',
      channel: 'email',
      settings: { host: '127.0.0.1', port: 1, from: 'a@example.com', ignoreTLS: true },
    });
    const t = await inject(p, 'POST', `/api/send-configs/${unreachable.json().id}/test`, {
      to: 'a@example.com',
    });
    assert.equal(t.statusCode, 502);
    assert.match(t.json().message, /the provider did not take the test message/);
    // Before: a 502 "smtp: No recipients defined", as if the provider had refused it.
    const typo = await inject(p, 'POST', `/api/send-configs/${unreachable.json().id}/test`, {
      to: 'not an address',
    });
    assert.equal(typo.statusCode, 400);
    assert.equal(typo.json().message, 'to "not an address" is not an e-mail address');
    const b = await inject(p, 'POST', '/api/batches', {
      sendConfigId: ok.json().id,
      template: { subject: 's', text: 't' },
      recipients: [{ address: 'a' }],
    });
    assert.equal(b.statusCode, 201);
    assert.equal((await inject(p, 'DELETE', `/api/send-configs/${ok.json().id}`)).statusCode, 409);
    await finished(p, b.json().id);
  });
});
