import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform, testPool, waitFor } from '../../../test/helpers.ts';
import { eventsModule } from './index.ts';
import { countBacklog, createEventsMetrics } from './metrics.ts';
import { storeRaw } from './raw-fixture.ts';
import { processBatch } from './worker.ts';

const at = (min: number, sec = 0) => new Date(Date.UTC(2025, 0, 15, 10, min, sec)).toISOString();

describe('events worker (running in the platform)', async () => {
  const p = await startPlatform({ modules: [eventsModule] });
  const post = (payload: unknown) =>
    p.app.inject({ method: 'POST', url: '/api/events', headers: p.auth, payload: payload as object });
  const get = async (url: string) => {
    const res = await p.app.inject({ url, headers: p.auth });
    assert.equal(res.statusCode, 200, res.body);
    return res.json();
  };

  it('when events are posted, then the worker processes each once and analytics shows the aggregates', async () => {
    const events = [
      ...Array.from({ length: 30 }, (_, i) => ({
        userId: 'user_001',
        action: 'page_view',
        timestamp: at(0, i),
      })),
      ...Array.from({ length: 20 }, (_, i) => ({ userId: 'user_002', action: 'click', timestamp: at(1, i) })),
      ...Array.from({ length: 10 }, (_, i) => ({
        userId: 'user_003',
        action: 'click',
        timestamp: at(61, i),
      })),
    ];
    assert.equal((await post(events)).statusCode, 201);
    const a = await waitFor(
      async () => {
        const body = await get('/api/analytics');
        return body.totalEvents === 60 && body.backlog === 0 && body;
      },
      { what: 'all 60 events processed' },
    );
    assert.deepEqual(a.eventsByAction, { click: 30, page_view: 30 });
    assert.deepEqual(a.eventsByUser, { user_001: 30, user_002: 20, user_003: 10 });
    assert.equal(a.uniqueUsers, 3);
    const processed = await p.kit.pool.query('SELECT count(*)::int AS n FROM events_processed');
    assert.equal(processed.rows[0].n, 60);
    assert.equal(await countBacklog(p.kit.pool), 0);
    for (const event of ['WORKER_JOB_START', 'WORKER_PROCESSING', 'WORKER_JOB_DONE'])
      assert.ok(p.logs.events(event).length > 0, `${event} logged`);
    const done = p.logs.events('WORKER_JOB_DONE');
    assert.equal(
      done.reduce((n, l) => n + (l.processed as number), 0),
      60,
    );

    const byMinute = await get(`/api/analytics?from=${at(0)}&to=${at(3)}&bucket=minute`);
    assert.deepEqual(
      byMinute.series.map((s: { count: number }) => s.count),
      [30, 20, 0],
    );
    assert.deepEqual(
      byMinute.series.map((s: { byAction: Record<string, number> }) => s.byAction),
      [{ page_view: 30 }, { click: 20 }, {}],
      'each bucket splits by action',
    );
    assert.equal(byMinute.totalEvents, 50, 'the range leaves out 11:01');
    assert.deepEqual(byMinute.eventsByAction, { page_view: 30, click: 20 });
    const byHour = await get(`/api/analytics?from=${at(0)}&to=${at(120)}&bucket=hour`);
    assert.deepEqual(
      byHour.series.map((s: { t: string; count: number }) => [s.t, s.count]),
      [
        ['2025-01-15T10:00:00.000Z', 50],
        ['2025-01-15T11:00:00.000Z', 10],
      ],
    );
    const byDay = await get('/api/analytics?from=2025-01-14&to=2025-01-17&bucket=day&top=2');
    assert.deepEqual(
      byDay.series.map((s: { count: number }) => s.count),
      [0, 60, 0],
    );
    assert.deepEqual(byDay.eventsByUser, { user_001: 30, user_002: 20 });
    assert.equal(byDay.uniqueUsers, 3);
    const metrics = (await p.app.inject('/metrics')).body;
    assert.match(metrics, /^events_processed_total\{[^}]*\} 60$/m);
    assert.match(metrics, /^events_processing_lag_seconds_count\{[^}]*\} 60$/m);
  });

  it('when a stored event does not parse, then it goes to the dead-letter list and the rest are processed', async () => {
    const before = (await get('/api/analytics')).totalEvents;
    // Written around the API (which would refuse it), as a corrupt row or another writer would.
    await storeRaw(
      p.kit.pool,
      `SELECT u AS user_id, 'click' AS action, now() AS ts FROM unnest(ARRAY['', 'ok_user']) AS u`,
    );
    await post({ userId: 'ok_user', action: 'click' }); // wakes the worker
    await waitFor(async () => (await get('/api/analytics')).totalEvents === before + 2, {
      what: 'the parseable events processed',
    });
    const dl = await get('/api/events/dead-letters');
    assert.equal(dl.total, 1);
    assert.equal(dl.deadLetters[0].payload.userId, '');
    assert.match(dl.deadLetters[0].error, /userId must be a non-empty string/);
    assert.equal(p.logs.events('WORKER_PARSE_ERROR').length, 1);
    assert.match(
      (await p.app.inject('/metrics')).body,
      /^events_failed_total\{[^}]*reason="parse"[^}]*\} 1$/m,
    );
  });

  it('when a userId and action are at their limits in characters but over them in UTF-16 units, then the worker counts them too', async () => {
    const userId = '😀'.repeat(256);
    assert.equal((await post({ userId, action: '🎉'.repeat(128) })).statusCode, 201);
    const a = await waitFor(
      async () => {
        const body = await get('/api/analytics?top=1000');
        return body.backlog === 0 && body.eventsByUser[userId] === 1 && body;
      },
      { what: 'the event counted, not dead-lettered' },
    );
    assert.equal(a.eventsByAction['🎉'.repeat(128)], 1);
  });

  it('when a stored batch is not JSON PostgreSQL can read, then the dead letter says so and holds the whole batch', async () => {
    // As an API before 2026-12-03 stored an event with a NUL in it, beside a valid one.
    const text = `[{"userId":"u\\u0000","action":"a","timestamp":"${at(5)}"},{"userId":"ok","action":"a","timestamp":"${at(5)}"}]`;
    await p.kit.pool.query(`INSERT INTO events_raw_batches (n, events, source) VALUES (2, $1, 'api')`, [
      text,
    ]);
    await post({ userId: 'waker', action: 'click' });
    const letter = await waitFor(
      async () =>
        (await get('/api/events/dead-letters?limit=100')).deadLetters.find(
          (d: { payload: { batch?: string } }) => d.payload.batch === text,
        ),
      { what: 'the batch dead-lettered' },
    );
    assert.match(
      letter.error,
      /^the event is null: its stored batch is not a JSON array PostgreSQL can read/,
    );
  });

  it('when dead letters are listed with a bad limit, then 400', async () => {
    const res = await p.app.inject({ url: '/api/events/dead-letters?limit=0', headers: p.auth });
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /limit/);
  });
});

describe('events worker batches (called directly)', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'api' });
  const metrics = createEventsMetrics(new (await import('prom-client')).Registry(), p.kit.pool);
  const seed = async (n: number) => {
    await storeRaw(
      p.kit.pool,
      `SELECT 'u' || (i % 13) AS user_id, 'a' || (i % 5) AS action,
         '2025-01-15T10:00:00Z'::timestamptz + i * interval '1 second' AS ts
       FROM generate_series(1, $1) AS i`,
      [n],
    );
  };
  const totals = async () =>
    (
      await p.kit.pool.query(`SELECT
        (SELECT coalesce(sum(n), 0)::int FROM events_counts WHERE grain = 'd') AS by_action,
        (SELECT coalesce(sum(n), 0)::int FROM events_counts WHERE grain = 'm') AS by_minute,
        (SELECT coalesce(sum(n), 0)::int FROM events_user_counts) AS by_user,
        (SELECT coalesce(sum(d1 + d2 + d3 + d4 + d5 + d6 + d7), 0)::int FROM events_user_days) AS by_user_day,
        (SELECT count(*)::int FROM events_processed) AS processed,
        (SELECT coalesce(sum(n), 0)::int FROM events_raw_batches) AS raw`)
    ).rows[0];
  const deps = {
    pool: p.kit.pool,
    log: p.kit.log,
    metrics,
    batchSize: 100,
    injectBadSchema: (): string | false => false,
  };
  const reset = () =>
    p.kit.pool.query(
      'TRUNCATE events_raw, events_raw_batches, events_processed, events_counts, events_user_counts, events_user_days, events_dead_letter',
    );

  it('when batches are claimed and moved, then each is parsed once by each statement, not once per event', async () => {
    // A guard on the plan's shape rather than on time: with track_functions on, PostgreSQL counts the
    // calls of a plpgsql function in the open transaction. A CLAIM whose plan parsed the batch again
    // for every event took 12 s instead of 13 ms to claim 10,000 events, and no other test noticed.
    await reset();
    await seed(30); // 3 batches of 10 events
    const db = new URL(p.databaseUrl).pathname.slice(1);
    await p.kit.pool.query(`ALTER DATABASE "${db}" SET track_functions = 'pl'`);
    const pool = testPool(p.databaseUrl);
    let calls = -1;
    try {
      const r = await processBatch({
        ...deps,
        pool,
        beforeCommit: async (client) => {
          const { rows } = await client.query<{ n: number }>(
            `SELECT pg_stat_get_xact_function_calls('events_parse'::regproc)::int AS n`,
          );
          calls = rows[0]!.n;
        },
      });
      assert.equal(r.processed, 30);
    } finally {
      await pool.end();
    }
    assert.equal(calls, 6, 'CLAIM and MOVE each parse each of the 3 batches once');
  });

  it('when a batch fails before COMMIT, then nothing of it is counted, and the retry counts each event once', async () => {
    await reset();
    await seed(250);
    await assert.rejects(
      processBatch({
        ...deps,
        beforeCommit: async () => {
          throw new Error('worker died mid-batch');
        },
      }),
      /died mid-batch/,
    );
    assert.deepEqual(await totals(), {
      by_action: 0,
      by_minute: 0,
      by_user: 0,
      by_user_day: 0,
      processed: 0,
      raw: 250,
    });
    while ((await processBatch(deps)).claimed > 0);
    assert.deepEqual(await totals(), {
      by_action: 250,
      by_minute: 250,
      by_user: 250,
      by_user_day: 250,
      processed: 250,
      raw: 0,
    });
  });

  it('when a worker connection dies mid-batch, then its events are claimed again and counted once', async () => {
    await reset();
    await seed(100);
    const client = await p.kit.pool.connect();
    try {
      await client.query('BEGIN');
      // Batches of 10 events: the first five hold 50.
      await client.query('SELECT id FROM events_raw_batches ORDER BY id LIMIT 5 FOR UPDATE SKIP LOCKED');
      // While the dying worker holds half, another worker takes only the other half.
      assert.equal((await processBatch(deps)).claimed, 50);
      client.release(new Error('connection lost')); // destroys the connection: PostgreSQL rolls back
    } catch (err) {
      client.release();
      throw err;
    }
    await waitFor(async () => (await processBatch(deps)).claimed === 50, { what: 'the released half' });
    assert.deepEqual(await totals(), {
      by_action: 100,
      by_minute: 100,
      by_user: 100,
      by_user_day: 100,
      processed: 100,
      raw: 0,
    });
  });

  it('when four workers drain the same backlog at once, then every event is counted exactly once', async () => {
    await reset();
    await seed(3000);
    const drain = async () => {
      let n = 0;
      for (;;) {
        const r = await processBatch(deps);
        if (r.claimed === 0) return n;
        n += r.claimed;
      }
    };
    const counts = await Promise.all([drain(), drain(), drain(), drain()]);
    assert.equal(
      counts.reduce((a, b) => a + b, 0),
      3000,
    );
    assert.ok(counts.filter((c) => c > 0).length > 1, 'the work was shared');
    assert.deepEqual(await totals(), {
      by_action: 3000,
      by_minute: 3000,
      by_user: 3000,
      by_user_day: 3000,
      processed: 3000,
      raw: 0,
    });
  });

  it('when top users are asked over ranges across weeks, then they equal a count of the processed events', async () => {
    await reset();
    // 60 days from a Wednesday, users with different rhythms, 2 to 7 events a day.
    await storeRaw(
      p.kit.pool,
      `SELECT 'u' || (i % 7) AS user_id, 'a' AS action, '2025-03-05T12:00:00Z'::timestamptz + (i % 60) * interval '1 day' AS ts
       FROM generate_series(1, 3000) AS i WHERE (i * 7919) % 11 < 6`,
      [],
      100,
    );
    while ((await processBatch(deps)).claimed > 0);
    const day = (d: number) => new Date(Date.UTC(2025, 2, 5 + d)).toISOString();
    for (const [a, b] of [
      [0, 8],
      [1, 9],
      [3, 11],
      [6, 13],
      [2, 31],
      [0, 60],
      [12, 13],
      [5, 19],
    ] as const) {
      const { rows } = await p.kit.pool.query<{ user_id: string; n: number }>(
        `SELECT user_id, count(*)::int AS n FROM events_processed WHERE ts >= $1 AND ts < $2
         GROUP BY 1 ORDER BY n DESC, user_id`,
        [day(a), day(b)],
      );
      const res = await p.app.inject({
        url: `/api/analytics?from=${day(a)}&to=${day(b)}&bucket=day&top=3`,
        headers: p.auth,
      });
      const body = res.json();
      const expected = Object.fromEntries(rows.slice(0, 3).map((r) => [r.user_id, r.n]));
      assert.deepEqual(body.eventsByUser, expected, `days ${a} to ${b}`);
      assert.equal(body.uniqueUsers, rows.length, `users in days ${a} to ${b}`);
    }
  });
});

describe('events metrics of a worker process', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'worker' });

  it('when nothing has happened yet, then /metrics already has events_failed_total, events_ingested_total and events_duplicates_total at 0 for rate() alerts', async () => {
    const body = (await p.app.inject('/metrics')).body;
    assert.match(body, /^events_failed_total\{[^}]*reason="parse"[^}]*\} 0$/m);
    for (const name of ['events_ingested_total', 'events_duplicates_total'])
      for (const source of ['api', 'segment'])
        assert.match(body, new RegExp(`^${name}\\{[^}]*source="${source}"[^}]*\\} 0$`, 'm'));
  });
});
