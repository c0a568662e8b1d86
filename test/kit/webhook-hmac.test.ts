import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { NativeHmacWebhook } from '../../src/kit/auth.ts';

describe('webhook signatures with node:crypto HMAC', () => {
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  const theirs = new Webhook(secret);
  const ours = new NativeHmacWebhook(secret);
  const at = new Date();

  it('when the same message is signed by the package and by ours, then the signatures are identical', () => {
    const bodies = ['{}', '', '{"count":1000}', '{"name":"Zoë — 名前 🎟"}', 'x'.repeat(70_000)];
    for (const body of bodies) {
      for (const id of ['msg_1', `msg_${randomBytes(12).toString('hex')}`]) {
        assert.equal(ours.sign(id, at, body), theirs.sign(id, at, body), `${id} ${body.slice(0, 20)}`);
        assert.equal(ours.sign(id, at, Buffer.from(body)), theirs.sign(id, at, body));
      }
    }
  });

  it('when a signature is wrong or stale, then verification fails as the package does', () => {
    const headers = (id: string, when: Date, signature: string) => ({
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(when.getTime() / 1000)),
      'webhook-signature': signature,
    });
    const good = headers('msg_ok', at, theirs.sign('msg_ok', at, '{}'));
    assert.equal(ours.verify('{}', good, { jsonParse: false }), undefined);
    assert.throws(() => ours.verify('{"x":1}', good), WebhookVerificationError, 'another body');
    const other = new Webhook(`whsec_${randomBytes(32).toString('base64')}`);
    assert.throws(
      () => ours.verify('{}', headers('msg_ok', at, other.sign('msg_ok', at, '{}'))),
      WebhookVerificationError,
      'another secret',
    );
    const old = new Date(Date.now() - 10 * 60_000);
    assert.throws(
      () => ours.verify('{}', headers('msg_old', old, theirs.sign('msg_old', old, '{}'))),
      /too old/,
    );
    // Several signatures (key rotation): one matching v1 is enough.
    const rotated = headers('msg_r', at, `v1,${'A'.repeat(44)} ${theirs.sign('msg_r', at, '{}')}`);
    assert.equal(ours.verify('{}', rotated, { jsonParse: false }), undefined);
  });
});
