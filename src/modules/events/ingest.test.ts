import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { startPlatform } from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';
import { eventsModule } from './index.ts';
import { rawEvents } from './raw-fixture.ts';

describe('events ingestion', async () => {
  // role api: no worker, so raw rows stay where the API put them. Default log settings (info, no
  // DEBUG): what an operator sees.
  const p = await startPlatform({ modules: [eventsModule], role: 'api' });
  const post = (payload: unknown, headers: Record<string, string> = p.auth) =>
    p.app.inject({ method: 'POST', url: '/api/events', headers, payload: payload as object });
  const raw = () => rawEvents(p.kit.pool);
  const clear = () => p.kit.pool.query('TRUNCATE events_raw, events_raw_batches, events_message_ids');

  it('when one event is posted, then 201 and it is stored with its fields, logged as EVENT_INSERTED', async () => {
    await clear();
    const res = await post({ userId: 'user_001', action: 'page_view', properties: { path: '/home' } });
    assert.equal(res.statusCode, 201);
    assert.deepEqual(res.json(), { accepted: 1, duplicates: 0 });
    const rows = await raw();
    assert.equal(rows.length, 1);
    assert.equal(rows[0].user_id, 'user_001');
    assert.equal(rows[0].action, 'page_view');
    assert.deepEqual(rows[0].properties, { path: '/home' });
    assert.ok(Math.abs(rows[0].ts.getTime() - Date.now()) < 60_000, 'timestamp defaults to now');
    const lines = p.logs.events('EVENT_INSERTED');
    assert.equal(lines.length, 1, 'one line at the default level, no per-event debug lines');
    assert.equal(lines[0]!.level, 30, 'info');
    assert.equal(lines[0]!.module, 'events');
    assert.equal(lines[0]!.source, 'api');
    assert.equal(lines[0]!.count, 1);
    assert.equal(lines[0]!.duplicates, 0);
  });

  it('when 1,000 events arrive in one request, then EVENT_INSERTED is logged once with count 1000', async () => {
    await clear();
    const before = p.logs.events('EVENT_INSERTED').length;
    const res = await post(Array.from({ length: 1000 }, (_, i) => ({ userId: `u${i}`, action: 'bulk' })));
    assert.equal(res.statusCode, 201);
    const lines = p.logs.events('EVENT_INSERTED').slice(before);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.count, 1000);
    assert.equal(lines[0]!.requests, 1);
  });

  it('when an array of events with timestamps is posted, then all are stored with those timestamps', async () => {
    await clear();
    const events = Array.from({ length: 1000 }, (_, i) => ({
      userId: `u${i % 7}`,
      action: i % 2 ? 'click' : 'view',
      timestamp: new Date(Date.UTC(2025, 0, 15, 10, 0, i % 60)).toISOString(),
    }));
    const res = await post(events);
    assert.equal(res.statusCode, 201);
    assert.equal(res.json().accepted, 1000);
    const rows = await raw();
    assert.equal(rows.length, 1000);
    assert.equal(rows[5].ts.toISOString(), '2025-01-15T10:00:05.000Z');
  });

  it('when an epoch-millisecond timestamp is sent, then it is accepted', async () => {
    await clear();
    const res = await post({ userId: 'u', action: 'a', timestamp: Date.UTC(2025, 0, 1) });
    assert.equal(res.statusCode, 201);
    assert.equal((await raw())[0].ts.toISOString(), '2025-01-01T00:00:00.000Z');
  });

  it('when the same messageId is sent twice, then the second is acknowledged as a duplicate and stored once', async () => {
    await clear();
    const e = { userId: 'u1', action: 'buy', messageId: 'msg-1' };
    assert.deepEqual((await post(e)).json(), { accepted: 1, duplicates: 0 });
    const again = await post(e);
    assert.equal(again.statusCode, 201);
    assert.deepEqual(again.json(), { accepted: 0, duplicates: 1 });
    const both = await post([e, { ...e, messageId: 'msg-2' }, { ...e, messageId: 'msg-2' }]);
    assert.deepEqual(both.json(), { accepted: 1, duplicates: 2 });
    assert.equal((await raw()).length, 2);
  });

  it('when many requests arrive at once, then each gets 201, every event is stored once and EVENT_INSERTED counts them per insert', async () => {
    await clear();
    const before = p.logs.events('EVENT_INSERTED').length;
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        post({ userId: `c${i}`, action: 'burst', messageId: `b-${i % 150}` }),
      ),
    );
    assert.ok(results.every((r) => r.statusCode === 201));
    const accepted = results.reduce((n, r) => n + r.json().accepted, 0);
    assert.equal(accepted, 150);
    assert.equal((await raw()).length, 150);
    const lines = p.logs.events('EVENT_INSERTED').slice(before);
    const sum = (k: string) => lines.reduce((n, l) => n + (l[k] as number), 0);
    assert.equal(sum('count'), 150);
    assert.equal(sum('duplicates'), 50);
    assert.equal(sum('requests'), 200);
    assert.ok(lines.length < 200, `${lines.length} lines for 200 requests: one per committed insert`);
  });

  const invalid: [string, unknown, RegExp][] = [
    ['userId is missing', { action: 'a' }, /userId is required/],
    ['userId is a number', { userId: 5, action: 'a' }, /userId must be a non-empty string/],
    ['action is blank', { userId: 'u', action: '  ' }, /action must be a non-empty string/],
    ['a field is unknown', { userId: 'u', action: 'a', user_id: 'x' }, /user_id is not a known field/],
    [
      'properties is an array',
      { userId: 'u', action: 'a', properties: [1] },
      /properties must be a JSON object/,
    ],
    [
      'timestamp is not a date',
      { userId: 'u', action: 'a', timestamp: 'yesterday' },
      /timestamp must be an ISO 8601/,
    ],
    // Date reads these as 03-02, the next midnight and 1 BC: stored, they were a different instant.
    ...[
      '2026-02-30T10:00:00Z',
      '2025-02-29',
      '2026-04-31T00:00:00Z',
      '2026-01-01T24:00:00Z',
      '0000-01-01T00:00:00Z',
    ].map((timestamp): [string, unknown, RegExp] => [
      `timestamp ${timestamp} does not exist`,
      { userId: 'u', action: 'a', timestamp },
      /names a date or time that does not exist/,
    ]),
    // Date reads a time without an offset in the server's zone: replicas would store different instants.
    ...['2025-01-15T10:00:00', '2025-01-15 10:00', '2025-01-15T10:00:00.250'].map(
      (timestamp): [string, unknown, RegExp] => [
        `timestamp ${timestamp} has no UTC offset`,
        { userId: 'u', action: 'a', timestamp },
        /^timestamp ".*" has no UTC offset.*add Z for UTC/,
      ],
    ),
    // No year-0 field to refuse, yet before year 1: the worker dead-lettered them after a 201.
    ...[-62_167_219_200_000, -8_640_000_000_000_000, '0001-01-01T00:30:00+01:00'].map(
      (timestamp): [string, unknown, RegExp] => [
        `timestamp ${timestamp} is before year 1`,
        { userId: 'u', action: 'a', timestamp },
        /timestamp is before 0001-01-01T00:00:00Z/,
      ],
    ),
    // Date drops the fraction: 1.5 was stored as 00:00:00.001.
    [
      'timestamp is a fractional number',
      { userId: 'u', action: 'a', timestamp: 1.5 },
      /^timestamp 1\.5 has a fraction: a timestamp given as a number is whole milliseconds since the epoch/,
    ],
    [
      'userId is 257 emoji',
      { userId: '😀'.repeat(257), action: 'a' },
      /userId must be at most 256 characters/,
    ],
    [
      'timestamp is 25 h ahead',
      { userId: 'u', action: 'a', timestamp: new Date(Date.now() + 25 * 3600_000).toISOString() },
      /more than 24 h in the future/,
    ],
    ['the array is empty', [], /array is empty/],
    [
      'the array has 1001 events',
      Array.from({ length: 1001 }, () => ({ userId: 'u', action: 'a' })),
      /at most 1000/,
    ],
    [
      'the third event is bad',
      [{ userId: 'u', action: 'a' }, { userId: 'u', action: 'a' }, { userId: 'u' }],
      /events\[2\]\.action is required/,
    ],
    ['an array item is a string', ['hello'], /events\[0\] must be an object.*, got a string$/],
    ['userId is 300 characters', { userId: 'x'.repeat(300), action: 'a' }, /at most 256 characters/],
    ['userId holds a NUL character', { userId: 'u\u0000', action: 'a' }, /userId must not contain a NUL/],
    [
      'a property value in the second event holds a NUL character',
      [
        { userId: 'u', action: 'a' },
        { userId: 'u', action: 'a', properties: { note: 'x\u0000y' } },
      ],
      /events\[1\]\.properties must not contain a NUL/,
    ],
    // 32,000 UTF-16 units, under the limit when units were counted, but 64 KB as stored.
    [
      'properties are 16,000 emoji',
      { userId: 'u', action: 'a', properties: { p: '😀'.repeat(16_000) } },
      /^properties are 64,008 bytes as UTF-8 JSON; send at most 32,768 bytes \(32 KB\)$/,
    ],
    [
      'a property holds half an emoji (a string cut between its two UTF-16 units)',
      { userId: 'u', action: 'a', properties: { title: 'launch 🚀'.slice(0, -1) } },
      /^body\.properties\.title holds a lone surrogate/,
    ],
  ];
  for (const [what, body, message] of invalid) {
    it(`when ${what}, then 400 saying what to fix, VALIDATION_ERROR logged, nothing stored`, async () => {
      await clear();
      const before = p.logs.events('VALIDATION_ERROR').length;
      const res = await post(body);
      assert.equal(res.statusCode, 400);
      assert.equal(res.json().error, 'Bad Request');
      assert.match(res.json().message, message);
      assert.equal(p.logs.events('VALIDATION_ERROR').length, before + 1);
      assert.equal((await raw()).length, 0);
    });
  }

  it('when a userId is 256 emoji (512 UTF-16 units), then it is accepted: limits count characters', async () => {
    assert.equal((await post({ userId: '😀'.repeat(256), action: 'a' })).statusCode, 201);
  });

  it('when a Segment call sends a fractional epoch timestamp, then 400 too: it shares the rule', async () => {
    await clear();
    const res = await p.app.inject({
      method: 'POST',
      url: '/v1/track',
      headers: { authorization: `Basic ${Buffer.from(`${p.key}:`).toString('base64')}` },
      payload: { userId: 'u', event: 'e', timestamp: 1736936625000.5 },
    });
    assert.equal(res.statusCode, 400, res.body);
    assert.match(res.json().message, /timestamp 1736936625000\.5 has a fraction: .* whole milliseconds/);
    assert.equal((await raw()).length, 0);
  });

  it('when properties are exactly 32,768 bytes of JSON, then they are accepted', async () => {
    const properties = { p: 'x'.repeat(32_768 - '{"p":""}'.length) };
    assert.equal(Buffer.byteLength(JSON.stringify(properties)), 32_768);
    assert.equal((await post({ userId: 'u', action: 'a', properties })).statusCode, 201);
  });

  it('when a timestamp is 23 h ahead, then it is accepted', async () => {
    const res = await post({
      userId: 'u',
      action: 'a',
      timestamp: new Date(Date.now() + 23 * 3600_000).toISOString(),
    });
    assert.equal(res.statusCode, 201);
  });

  const send = (contentType: string | undefined, payload: string) =>
    p.app.inject({
      method: 'POST',
      url: '/api/events',
      headers: { ...p.auth, ...(contentType ? { 'content-type': contentType } : {}) },
      payload: Buffer.from(payload),
    });
  const validationLineOf = (res: Awaited<ReturnType<typeof send>>) =>
    p.logs.events('VALIDATION_ERROR').find((l) => l.reqId === res.headers['x-request-id']);

  it('when the body is not JSON, then 400 and VALIDATION_ERROR logged for that request', async () => {
    const res = await send('application/json', '{"userId":');
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /not valid JSON/);
    const line = validationLineOf(res);
    assert.ok(line, 'VALIDATION_ERROR with the request id');
    assert.equal(line.module, 'events');
    assert.match(line.reason as string, /not valid JSON/);
  });

  it('when JSON arrives as text/plain, then 400 says to send application/json, and a field error names its field', async () => {
    const text = await send('text/plain', '{"userId":"u","action":"a"}');
    assert.equal(text.statusCode, 400);
    assert.match(text.json().message, /Content-Type: application\/json/);
    assert.ok(validationLineOf(text));
    const twice = await send(
      'application/json',
      JSON.stringify(JSON.stringify({ userId: 'u', action: 'a' })),
    );
    assert.equal(twice.statusCode, 400);
    assert.match(twice.json().message, /encoded twice/);
    const missing = await send('application/json', '{"userId":"u"}');
    assert.equal(validationLineOf(missing)?.field, 'action');
  });

  it('when properties are nested 100,000 levels deep, then 400 names them, not 500', async () => {
    await clear();
    const deep = `${'['.repeat(100_000)}1${']'.repeat(100_000)}`;
    const res = await send('application/json', `{"userId":"u","action":"a","properties":{"k":${deep}}}`);
    assert.equal(res.statusCode, 400, res.body);
    assert.match(res.json().message, /^properties are nested too deeply/);
    assert.equal((await raw()).length, 0);
  });

  it('when the content type is missing or not JSON, then 415 says to send application/json', async () => {
    for (const type of [undefined, 'application/x-www-form-urlencoded']) {
      const res = await send(type, 'userId=u&action=a');
      assert.equal(res.statusCode, 415);
      assert.match(res.json().message, /send application\/json/);
    }
  });

  it('when the body is over 1 MB, then 413 names the limit and how to split', async () => {
    const big = JSON.stringify({ userId: 'u', action: 'a', properties: { x: 'y'.repeat(1_100_000) } });
    const res = await send('application/json', big);
    assert.equal(res.statusCode, 413);
    assert.equal(
      res.json().message,
      "the request body is over this route's limit of 1 MB: split the events over more requests (up to 1,000 events and 1 MB each)",
    );
  });

  it('when the body is gzip-compressed, then 415 says to send it uncompressed, not that the JSON is bad', async () => {
    const res = await p.app.inject({
      method: 'POST',
      url: '/api/events',
      headers: { ...p.auth, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      payload: gzipSync('{"userId":"u","action":"a"}'),
    });
    assert.equal(res.statusCode, 415);
    assert.equal(res.json().message, 'Content-Encoding gzip is not supported: send the body uncompressed');
  });

  it('when no key or a key without the events scope is sent, then 401 and 403', async () => {
    assert.equal((await post({ userId: 'u', action: 'a' }, {})).statusCode, 401);
    const { key } = await createApiKey(p.kit.pool, 'books only', ['books']);
    const res = await post({ userId: 'u', action: 'a' }, { 'x-api-key': key });
    assert.equal(res.statusCode, 403);
    assert.match(res.json().message, /"events" scope/);
    const { key: eventsKey } = await createApiKey(p.kit.pool, 'events', ['events']);
    assert.equal((await post({ userId: 'u', action: 'a' }, { 'x-api-key': eventsKey })).statusCode, 201);
  });

  it('when events were ingested, then events_ingested_total counts them on /metrics', async () => {
    await post([
      { userId: 'm', action: 'x' },
      { userId: 'm', action: 'y' },
    ]);
    const body = (await p.app.inject('/metrics')).body;
    const line = body
      .split('\n')
      .find((l) => l.startsWith('events_ingested_total{') && l.includes('source="api"'));
    assert.ok(line, 'events_ingested_total present');
    assert.ok(Number(line.split(' ').at(-1)) >= 2);
    assert.match(body, /# TYPE events_backlog gauge/);
    assert.match(body, /# TYPE events_processing_lag_seconds histogram/);
  });
});

describe('events ingestion with DEBUG=tessera:events*', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'api', env: { DEBUG: 'tessera:events*' } });

  it('when events are posted, then each one is also logged at debug with its userId and action', async () => {
    const res = await p.app.inject({
      method: 'POST',
      url: '/api/events',
      headers: p.auth,
      payload: [
        { userId: 'user_001', action: 'page_view' },
        { userId: 'user_002', action: 'click' },
      ],
    });
    assert.equal(res.statusCode, 201);
    const lines = p.logs.events('EVENT_INSERTED');
    const perEvent = lines.filter((l) => l.level === 20);
    assert.deepEqual(
      perEvent.map((l) => [l.userId, l.action, l.module]),
      [
        ['user_001', 'page_view', 'events'],
        ['user_002', 'click', 'events'],
      ],
    );
    assert.deepEqual(
      lines.filter((l) => l.level === 30).map((l) => l.count),
      [2],
    );
  });
});
