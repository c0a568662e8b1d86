import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Analytics } from '@segment/analytics-node';
import { startPlatform } from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';
import { eventsModule } from './index.ts';
import { rawEvents } from './raw-fixture.ts';

describe('Segment-compatible ingestion', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'api', listen: true });
  const { key: writeKey } = await createApiKey(p.kit.pool, 'segment source', ['events']);
  const basic = (user: string) => `Basic ${Buffer.from(`${user}:`).toString('base64')}`;
  const raw = () => rawEvents(p.kit.pool);
  const send = (path: string, body: unknown, authorization = basic(writeKey)) =>
    fetch(`${p.address()}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization },
      body: JSON.stringify(body),
    });

  it('when the official @segment/analytics-node client sends to Tessera, then every call is stored', async () => {
    await p.kit.pool.query('TRUNCATE events_raw, events_raw_batches');
    const analytics = new Analytics({ writeKey, host: p.address(), flushAt: 3, maxRetries: 0 });
    const errors: unknown[] = [];
    analytics.on('error', (err) => errors.push(err));
    analytics.track({ userId: 'user_001', event: 'Order Completed', properties: { total: 42 } });
    analytics.track({ anonymousId: 'anon-7', event: 'Signed Up' });
    analytics.page({ userId: 'user_001', name: 'Home', properties: { path: '/' } });
    analytics.identify({ userId: 'user_002', traits: { plan: 'pro' } });
    await analytics.closeAndFlush({ timeout: 10_000 });
    assert.deepEqual(errors, []);
    const rows = await raw();
    assert.deepEqual(
      rows.map((r) => [r.user_id, r.action, r.source]),
      [
        ['user_001', 'Order Completed', 'segment'],
        ['anon-7', 'Signed Up', 'segment'],
        ['user_001', 'page_view', 'segment'],
        ['user_002', 'identify', 'segment'],
      ],
    );
    assert.deepEqual(rows[0].properties, { total: 42 });
    assert.deepEqual(rows[3].properties, { plan: 'pro' });
    assert.ok(
      rows.every((r) => r.message_id),
      'the client messageId is kept for dedupe',
    );
  });

  it('when POST /v1/track is called directly and then resent, then 200 {success:true} and it is stored once', async () => {
    await p.kit.pool.query('TRUNCATE events_raw, events_raw_batches');
    const call = { userId: 'u9', event: 'Clicked', messageId: 'seg-1', timestamp: '2025-01-15T10:00:00Z' };
    for (let i = 0; i < 2; i++) {
      const res = await send('/v1/track', call);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { success: true });
    }
    assert.equal((await raw()).length, 1);
  });

  it('when the write key is wrong or missing, then 401; without the events scope, then 403', async () => {
    const wrong = await send(
      '/v1/batch',
      { batch: [{ type: 'track', userId: 'u', event: 'e' }] },
      basic('nope'),
    );
    assert.equal(wrong.status, 401);
    assert.match(((await wrong.json()) as { message: string }).message, /write key/);
    assert.equal((await send('/v1/track', { userId: 'u', event: 'e' }, '')).status, 401);
    const { key } = await createApiKey(p.kit.pool, 'books', ['books']);
    assert.equal((await send('/v1/track', { userId: 'u', event: 'e' }, basic(key))).status, 403);
  });

  const bad: [string, string, unknown, RegExp][] = [
    ['track has no event', '/v1/track', { userId: 'u' }, /event is required/],
    ['there is no userId or anonymousId', '/v1/track', { event: 'e' }, /userId or anonymousId is required/],
    [
      'the userId is a number',
      '/v1/track',
      { userId: 42, event: 'e' },
      /userId or anonymousId must be a non-empty string of at most 256 characters, got number 42/,
    ],
    [
      'the anonymousId holds a NUL character',
      '/v1/track',
      { anonymousId: 'a\u0000', event: 'e' },
      /anonymousId must not contain a NUL/,
    ],
    ['batch is missing', '/v1/batch', { calls: [] }, /\{"batch"/],
    ['batch is empty', '/v1/batch', { batch: [] }, /batch is empty/],
    [
      'a batch item has an unknown type',
      '/v1/batch',
      { batch: [{ type: 'boom', userId: 'u' }] },
      /batch\[0\]\.type/,
    ],
    [
      'the timestamp is 2 days ahead',
      '/v1/track',
      { userId: 'u', event: 'e', timestamp: new Date(Date.now() + 2 * 86_400_000).toISOString() },
      /24 h in the future/,
    ],
  ];
  for (const [what, path, body, message] of bad) {
    it(`when ${what}, then 400 saying what to fix`, async () => {
      const res = await send(path, body);
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { message: string }).message, message);
    });
  }
});
