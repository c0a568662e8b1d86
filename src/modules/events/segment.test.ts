import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
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
    assert.deepEqual(rows[2].properties, { name: 'Home', path: '/' }, "a page's name is kept");
    assert.deepEqual(rows[3].properties, { plan: 'pro' });
    assert.ok(
      rows.every((r) => r.message_id),
      'the client messageId is kept for dedupe',
    );
  });

  it('when the official client flushes good calls with a bad one, then the good ones are stored and the bad one is logged', async () => {
    await p.kit.pool.query('TRUNCATE events_raw, events_raw_batches');
    const analytics = new Analytics({ writeKey, host: p.address(), flushAt: 6, maxRetries: 0 });
    const errors: unknown[] = [];
    analytics.on('error', (err) => errors.push(err));
    for (let i = 0; i < 5; i++) analytics.track({ userId: `good-${i}`, event: 'Viewed' });
    analytics.track({ userId: 'skewed', event: 'Viewed', timestamp: new Date(Date.now() + 25 * 3_600_000) });
    await analytics.closeAndFlush({ timeout: 10_000 });
    // Before: the batch's 400 made the client drop all six.
    assert.deepEqual(errors, []);
    assert.deepEqual(
      (await raw()).map((r) => r.user_id),
      ['good-0', 'good-1', 'good-2', 'good-3', 'good-4'],
    );
    const refused = p.logs.events('VALIDATION_ERROR').filter((l) => l.source === 'segment');
    assert.ok(
      refused.some((l) => /batch\[5\]\.timestamp .* more than 24 h in the future/.test(String(l.reason))),
    );
  });

  it('when a batch holds invalid calls, then the rest are stored and the answer lists the refused ones; with none valid, 400', async () => {
    await p.kit.pool.query('TRUNCATE events_raw, events_raw_batches');
    const res = await send('/v1/batch', {
      batch: [
        { type: 'track', userId: 'a', event: 'ok' },
        { type: 'track', userId: 'b', event: 'x'.repeat(129) },
        null,
        { type: 'group', userId: 'c', groupId: 'g-1', traits: { size: 3 } },
        { type: 'alias', userId: 'd', previousId: 'anon-4' },
      ],
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { success: boolean; rejected: { index: number; message: string }[] };
    assert.equal(body.success, true);
    assert.deepEqual(
      body.rejected.map((r) => r.index),
      [1, 2],
    );
    assert.match(body.rejected[0]!.message, /batch\[1\]\.event must be at most 128 characters/);
    assert.match(body.rejected[1]!.message, /^batch\[2\] must be a JSON object/);
    const rows = await raw();
    assert.deepEqual(
      rows.map((r) => [r.user_id, r.properties]),
      [
        ['a', null],
        ['c', { groupId: 'g-1', size: 3 }],
        ['d', { previousId: 'anon-4' }],
      ],
    );
    const none = await send('/v1/batch', { batch: [{ type: 'track', userId: 'a' }, 7] });
    assert.equal(none.status, 400);
    assert.match(
      ((await none.json()) as { message: string }).message,
      /no call in the batch is valid: batch\[0\]\.event is required for track calls.*; batch\[1\] must be a JSON object/,
    );
  });

  it('when a batch comes gzip-compressed, then it is decoded and stored; bad gzip is a 400, a bomb a 413, deflate a 415', async () => {
    await p.kit.pool.query('TRUNCATE events_raw, events_raw_batches');
    const post = (body: Buffer, encoding: string) =>
      fetch(`${p.address()}/v1/batch`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-encoding': encoding,
          authorization: basic(writeKey),
        },
        body,
      });
    const batch = { batch: [1, 2, 3].map((i) => ({ type: 'track', userId: `gz-${i}`, event: 'Zipped' })) };
    const ok = await post(gzipSync(JSON.stringify(batch)), 'gzip');
    assert.equal(ok.status, 200, await ok.clone().text());
    assert.deepEqual(await ok.json(), { success: true });
    assert.deepEqual(
      (await raw()).map((r) => r.user_id),
      ['gz-1', 'gz-2', 'gz-3'],
    );

    const bad = await post(Buffer.from(JSON.stringify(batch)), 'gzip');
    assert.equal(bad.status, 400);
    assert.match(
      ((await bad.json()) as { message: string }).message,
      /^the body is sent as Content-Encoding gzip but is not valid gzip \(/,
    );

    // 2 MB of spaces compress to ~2 KB: the limit is on what they decode to.
    const bomb = gzipSync(`{"batch":[${' '.repeat(2 * 1024 * 1024)}]}`);
    assert.ok(bomb.length < 10_000);
    const big = await post(bomb, 'gzip');
    assert.equal(big.status, 413);
    assert.match(((await big.json()) as { message: string }).message, /over this route's limit of 1 MB/);

    const deflate = await post(gzipSync('{}'), 'deflate');
    assert.equal(deflate.status, 415);
    assert.equal(
      ((await deflate.json()) as { message: string }).message,
      'Content-Encoding deflate is not supported: send the body uncompressed or gzip-compressed',
    );
    assert.equal((await raw()).length, 3, 'nothing else stored');
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
    [
      'the event is longer than 128 characters',
      '/v1/track',
      { userId: 'u', event: 'e'.repeat(129) },
      /^event must be at most 128 characters/,
    ],
    [
      'the messageId is longer than 256 characters',
      '/v1/track',
      { userId: 'u', event: 'e', messageId: 'm'.repeat(300) },
      /^messageId must be at most 256 characters/,
    ],
    ['batch is missing', '/v1/batch', { calls: [] }, /\{"batch"/],
    ['batch is empty', '/v1/batch', { batch: [] }, /batch is empty/],
    [
      'the only batch item has an unknown type',
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
