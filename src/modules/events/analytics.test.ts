import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform } from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';
import { sharedAnalytics } from './analytics.ts';
import { eventsModule } from './index.ts';

describe('GET /api/analytics', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'api' });
  const get = (query: string, headers: Record<string, string> = p.auth) =>
    p.app.inject({ url: `/api/analytics${query}`, headers });

  it('when nothing was ingested, then zeros, an empty user list, a zero-filled series and no heartbeat', async () => {
    const res = await get('');
    assert.equal(res.statusCode, 200);
    const body = res.json();
    assert.equal(body.totalEvents, 0);
    assert.deepEqual(body.eventsByAction, {});
    assert.deepEqual(body.eventsByUser, {});
    assert.equal(body.uniqueUsers, 0);
    assert.equal(body.backlog, 0);
    assert.equal(body.cron, null);
    assert.equal(body.bucket, 'hour');
    assert.equal(body.series.length, 24);
    assert.ok(
      body.series.every(
        (s: { count: number; byAction: object }) => s.count === 0 && Object.keys(s.byAction).length === 0,
      ),
    );
  });

  it('when events wait unprocessed, then backlog counts them', async () => {
    await p.app.inject({
      method: 'POST',
      url: '/api/events',
      headers: p.auth,
      payload: [
        { userId: 'a', action: 'x' },
        { userId: 'b', action: 'x' },
      ],
    });
    assert.equal((await get('')).json().backlog, 2);
  });

  it('when identical reads arrive together, then they share one computation; other and later reads run their own', async () => {
    const q = { bucket: 'hour' as const, top: 10 };
    const a = sharedAnalytics(p.kit.pool, q);
    const b = sharedAnalytics(p.kit.pool, { ...q });
    const other = sharedAnalytics(p.kit.pool, { ...q, top: 5 });
    assert.equal(a, b, 'the same question in flight is asked once');
    assert.notEqual(a, other);
    await Promise.all([a, other]);
    const later = sharedAnalytics(p.kit.pool, q);
    assert.notEqual(later, a, 'nothing is kept once the computation ends');
    await later;
    // A failing read is shared while in flight too, and not remembered either.
    const bad = { from: 'yesterday', bucket: 'hour' as const, top: 10 };
    const f1 = sharedAnalytics(p.kit.pool, bad);
    assert.equal(sharedAnalytics(p.kit.pool, bad), f1);
    await assert.rejects(f1, (err: { statusCode?: number }) => err.statusCode === 400);
    const f2 = sharedAnalytics(p.kit.pool, bad);
    assert.notEqual(f2, f1);
    await assert.rejects(f2);
    // Over HTTP: concurrent identical GETs both answer in full.
    const [r1, r2] = await Promise.all([get('?top=3'), get('?top=3')]);
    assert.equal(r1.statusCode, 200);
    assert.deepEqual(r1.json(), r2.json());
  });

  const bad: [string, string, RegExp][] = [
    ['from is not a date', '?from=yesterday', /from must be a real ISO 8601/],
    ['to is not a date', '?to=2025-13-45T99:00:00Z', /to must be a real ISO 8601/],
    ['from is February 30th', '?from=2026-02-30', /from must be a real ISO 8601.*"2026-02-30"/],
    ['to is hour 24', '?to=2026-01-01T24:00:00Z', /to must be a real ISO 8601/],
    [
      'from has no UTC offset',
      '?from=2025-01-15T10:00:00',
      /^from "2025-01-15T10:00:00" has no UTC offset.*add Z/,
    ],
    ['to has no UTC offset', '?to=2025-01-15%2010:00', /^to "2025-01-15 10:00" has no UTC offset/],
    ['from is after to', '?from=2025-01-02&to=2025-01-01', /from must be earlier than to/],
    // Before: 200 with a range running backwards and an empty series.
    ['from is in the future and to is not given', '?from=2099-01-01', /from must be earlier than now/],
    ['bucket is week', '?bucket=week', /^querystring\/bucket must be one of "minute", "hour", "day"$/],
    ['top is 0', '?top=0', /top/],
    ['a year of minutes is asked', '?from=2024-01-01&to=2025-01-01&bucket=minute', /coarser bucket/],
  ];
  for (const [what, query, message] of bad) {
    it(`when ${what}, then 400 saying what to fix`, async () => {
      const res = await get(query);
      assert.equal(res.statusCode, 400);
      assert.match(res.json().message, message);
    });
  }

  it('when only `to` is given, then the series is the last 60 minutes, 24 hours or 30 days before it, every one counted', async () => {
    const to = Date.parse('2025-01-15T00:00:00Z'); // the start of a minute, an hour and a day
    const steps = { minute: [60, 60_000], hour: [24, 3_600_000], day: [30, 86_400_000] } as const;
    try {
      for (const [bucket, [points, step]] of Object.entries(steps)) {
        // One event in each of the `points + 1` buckets before `to`: the oldest is outside the range.
        await p.kit.pool.query(
          `INSERT INTO events_counts (grain, bucket, action, n)
           SELECT $1, to_timestamp(($2::float8 - k * $3::float8) / 1000), 'x', 1 FROM generate_series(1, $4) AS k`,
          [bucket[0], to, step, points + 1],
        );
        const only = async (end: number) =>
          (await get(`?bucket=${bucket}&to=${new Date(end).toISOString()}`)).json();
        // `to` on a bucket's start: the `points` whole buckets before it.
        const aligned = await only(to);
        assert.equal(aligned.series.length, points, bucket);
        assert.equal(aligned.series[0].t, new Date(to - points * step).toISOString(), bucket);
        assert.equal(aligned.range.from, aligned.series[0].t, bucket);
        assert.equal(aligned.totalEvents, points, bucket);
        // `to` inside a bucket: that bucket is the last of `points`, as without any parameter.
        const inside = await only(to + step / 2);
        assert.equal(inside.series.length, points, bucket);
        assert.equal(inside.series.at(-1).t, new Date(to).toISOString(), bucket);
        assert.equal(inside.totalEvents, points - 1, bucket);
      }
    } finally {
      await p.kit.pool.query('TRUNCATE events_counts');
    }
  });

  it('when `to` falls in the first days of year 1, then the window starts there rather than before it', async () => {
    // Before: the default 30 days reached into year 0, a 400 about a date the caller never sent.
    const res = await get('?to=0001-01-03&bucket=day');
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json().range.from, '0001-01-01T00:00:00.000Z');
    assert.equal(res.json().series.length, 2);
  });

  it('when a user and an action are named __proto__, then they are counted in the answer like any other', async () => {
    await p.kit.pool.query(
      `INSERT INTO events_counts (grain, bucket, action, n) VALUES ('d', '2025-02-01', '__proto__', 5), ('d', '2025-02-01', 'click', 2);
       INSERT INTO events_user_counts (user_id, n) VALUES ('__proto__', 5), ('u1', 2)`,
    );
    try {
      const body = (await get('?top=5')).json();
      // Before: assigned as keys, `__proto__` set the objects' prototype and vanished.
      assert.deepEqual(Object.entries(body.eventsByAction), [
        ['__proto__', 5],
        ['click', 2],
      ]);
      assert.equal(body.totalEvents, 7);
      assert.deepEqual(Object.keys(body.eventsByUser), ['__proto__', 'u1']);
    } finally {
      await p.kit.pool.query('TRUNCATE events_counts, events_user_counts');
    }
  });

  it('when all-time top users tie, then the userId first in byte order wins, on a database whose collation says otherwise', async (t) => {
    const { rows } = await p.kit.pool.query(
      `SELECT collname FROM pg_collation WHERE collname IN ('en-US-x-icu', 'en_US.utf8') ORDER BY collname LIMIT 1`,
    );
    if (!rows[0]) return t.skip('this PostgreSQL has no en-US collation to stand for an en_US database');
    // The column takes a linguistic collation, as on a database created with --locale=en_US.UTF-8,
    // where "a_user" sorts before "B_user" (in byte order "B" comes first).
    await p.kit.pool.query(
      `ALTER TABLE events_user_counts ALTER COLUMN user_id TYPE text COLLATE "${rows[0].collname}"`,
    );
    await p.kit.pool.query(`INSERT INTO events_user_counts (user_id, n) VALUES ('a_user', 1), ('B_user', 1)`);
    try {
      assert.deepEqual((await get('?top=1')).json().eventsByUser, { B_user: 1 });
    } finally {
      await p.kit.pool.query('TRUNCATE events_user_counts');
    }
  });

  it('when called without a key or with a books-only key, then 401 and 403', async () => {
    assert.equal((await get('', {})).statusCode, 401);
    const { key } = await createApiKey(p.kit.pool, 'books', ['books']);
    assert.equal((await get('', { authorization: `Bearer ${key}` })).statusCode, 403);
  });
});
