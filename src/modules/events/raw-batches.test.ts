// Migration 007 stores raw events as batches (one events_raw_batches row of up to 1,000 events of
// one source). These tests hold its parts together: ingestion writes batches within those bounds,
// the worker's claim stops at EVENTS_BATCH_SIZE events, anything in a batch that does not parse is
// dead-lettered without failing the rest, and events in the per-event events_raw (waiting at the
// migration, or written by an api of the previous release during a rolling upgrade) are carried
// over once each, with ids that never meet the ones given out before.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { startPlatform } from '../../../test/helpers.ts';
import { eventsModule } from './index.ts';
import { copyEvents, insertBatches, insertEvents, MAX_EVENTS_PER_BATCH, type Source } from './ingest.ts';
import { countBacklog, createEventsMetrics } from './metrics.ts';
import { rawEvents, storeRaw } from './raw-fixture.ts';
import type { EventRow } from './validate.ts';
import { processBatch } from './worker.ts';

const migration = (name: string) => readFileSync(new URL(`./migrations/${name}`, import.meta.url), 'utf8');

const event = (i: number, messageId: string | null = null): EventRow => ({
  messageId,
  userId: `user_${i % 7}`,
  action: `a${i % 3}`,
  ts: new Date(Date.UTC(2025, 0, 15, 10, 0, i % 60)),
  properties: i % 2 ? JSON.stringify({ i, note: 'tab\there "quoted" \\ back' }) : null,
});

/** `n` events, those `isSegment` picks from segment and the rest from api. */
const twoSources = (n: number, isSegment: (i: number) => boolean) =>
  Array.from({ length: n }, (_, i) => ({
    row: event(i),
    source: (isSegment(i) ? 'segment' : 'api') as Source,
  }));

/** `rows` grouped by source, sources in the order they first appear: the order batches store them. */
const bySource = <T extends { source: string }>(rows: T[]) =>
  [...new Set(rows.map((r) => r.source))].flatMap((source) => rows.filter((r) => r.source === source));

describe('events: raw events stored as batches (migration 007)', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'api' });
  const db = p.kit.pool;
  const metrics = createEventsMetrics(new (await import('prom-client')).Registry(), db);
  const deps = {
    pool: db,
    log: p.kit.log,
    metrics,
    batchSize: 100,
    injectBadSchema: (): string | false => false,
  };
  const reset = () =>
    db.query(
      'TRUNCATE events_raw, events_raw_batches, events_message_ids, events_processed, events_counts, events_user_counts, events_user_days, events_dead_letter',
    );
  const batches = async () =>
    (await db.query<{ n: number; source: string }>('SELECT n, source FROM events_raw_batches ORDER BY id'))
      .rows;

  it('when a group of two sources is copied, then each source gets batches of at most 1,000, in order, fields intact (2,000 api, 500 segment)', async () => {
    await reset();
    const rows = twoSources(2500, (i) => i % 5 === 0);
    await copyEvents(db, rows);
    assert.deepEqual(await batches(), [
      { n: 500, source: 'segment' },
      { n: MAX_EVENTS_PER_BATCH, source: 'api' },
      { n: MAX_EVENTS_PER_BATCH, source: 'api' },
    ]);
    const stored = await rawEvents(db);
    assert.deepEqual(
      stored.map((s) => [s.user_id, s.action, s.ts.toISOString(), s.properties, s.source]),
      // Event 0 is segment's: segment's batch comes first.
      bySource(rows).map(({ row, source }) => [
        row.userId,
        row.action,
        row.ts.toISOString(),
        row.properties === null ? null : JSON.parse(row.properties),
        source,
      ]),
    );
  });

  it('when a small group of two sources is inserted, then it is one statement of one batch per source', async () => {
    await reset();
    const rows = twoSources(30, (i) => i % 3 === 1);
    await insertBatches(db, rows);
    assert.deepEqual(await batches(), [
      { n: 20, source: 'api' },
      { n: 10, source: 'segment' },
    ]);
    assert.deepEqual(
      (await rawEvents(db)).map((s) => [s.user_id, s.properties, s.source]),
      bySource(rows).map(({ row, source }) => [
        row.userId,
        row.properties === null ? null : JSON.parse(row.properties),
        source,
      ]),
    );
  });

  it('when events with messageIds are inserted twice, then the second time stores nothing and reports none new', async () => {
    await reset();
    const rows = Array.from({ length: 30 }, (_, i) => ({ row: event(i, `m${i}`), source: 'api' as Source }));
    assert.equal((await insertEvents(db, rows)).size, 30);
    assert.equal((await insertEvents(db, rows)).size, 0);
    assert.deepEqual(await batches(), [{ n: 30, source: 'api' }]);
    assert.deepEqual(
      (await rawEvents(db)).map((s) => s.message_id),
      rows.map((r) => r.row.messageId),
    );
  });

  it('when the worker claims, then it stops at EVENTS_BATCH_SIZE events, and takes a larger batch whole', async () => {
    await reset();
    await storeRaw(
      db,
      `SELECT 'u' AS user_id, 'a' AS action, now() AS ts FROM generate_series(1, 50)`,
      [],
      10,
    );
    assert.equal((await processBatch({ ...deps, batchSize: 25 })).claimed, 30);
    assert.equal(await countBacklog(db), 20);
    await storeRaw(
      db,
      `SELECT 'u' AS user_id, 'a' AS action, now() AS ts FROM generate_series(1, 300)`,
      [],
      300,
    );
    // The two batches of 10 left, then the batch of 300: the claim stops only once it holds 25.
    assert.equal((await processBatch({ ...deps, batchSize: 25 })).claimed, 20 + 300);
    assert.equal(await countBacklog(db), 0);
  });

  it('when a batch does not parse, or holds a non-object or a bad timestamp, then those are dead-lettered and the rest processed', async () => {
    await reset();
    const good = (user: string) => `{"userId":"${user}","action":"a","timestamp":"2025-01-15T10:00:00.000Z"}`;
    await db.query(
      `INSERT INTO events_raw_batches (n, events, source) VALUES
      (2, 'not json at all', 'api'),
      (2, $1, 'api'),
      (5, $2, 'segment'),
      (1, '{"userId":"x"}', 'api')`,
      [
        `[5, ${good('ok1')}]`,
        // Date.parse takes Feb 30 and 24:00; PostgreSQL refuses the first, so both are dead letters.
        `[{"userId":"late","action":"a","timestamp":"yesterday"}, ${good('ok2')},
          {"userId":"feb","action":"a","timestamp":"2025-02-30T00:00:00Z"},
          {"userId":"midnight","action":"a","timestamp":"2025-01-15T24:00:00Z"},
          {"userId":"tz","action":"a","timestamp":"2025-01-15T10:00:00.123456+01:00"}]`,
      ],
    );
    while ((await processBatch(deps)).claimed > 0);
    assert.equal(await countBacklog(db), 0);
    const processed = await db.query<{ user_id: string; source: string }>(
      'SELECT user_id, source FROM events_processed ORDER BY id',
    );
    assert.deepEqual(processed.rows, [
      { user_id: 'ok1', source: 'api' },
      { user_id: 'ok2', source: 'segment' },
      { user_id: 'tz', source: 'segment' },
    ]);
    const dead = await db.query<{ payload: Record<string, unknown>; error: string }>(
      'SELECT payload, error FROM events_dead_letter ORDER BY id',
    );
    assert.deepEqual(
      dead.rows.map((r) => r.payload),
      [
        { batch: 'not json at all', source: 'api' },
        { event: 5, source: 'api' },
        { userId: 'late', action: 'a', timestamp: 'yesterday', source: 'segment' },
        { userId: 'feb', action: 'a', timestamp: '2025-02-30T00:00:00Z', source: 'segment' },
        { userId: 'midnight', action: 'a', timestamp: '2025-01-15T24:00:00Z', source: 'segment' },
        { batch: '{"userId":"x"}', source: 'api' },
      ],
    );
    for (const k of [2, 3, 4]) assert.match(dead.rows[k]!.error, /timestamp/);
  });

  // Events as an api of the previous release stores them: one events_raw row each.
  const legacyRows = (from: number, to: number) =>
    db.query(`INSERT INTO events_raw (message_id, user_id, action, ts, properties, source)
      SELECT CASE WHEN i % 4 = 0 THEN 'm' || i END, 'u' || (i % 3), 'a',
        '2025-01-15T10:00:00.123456Z'::timestamptz + i * interval '1 minute',
        CASE WHEN i % 2 = 0 THEN jsonb_build_object('i', i, 'none', null) END,
        CASE WHEN i % 5 = 0 THEN 'segment' ELSE 'api' END
      FROM generate_series(${from}, ${to}) i`);
  const legacyView = 'SELECT user_id, action, ts, properties, message_id, source FROM events_raw ORDER BY id';

  it('when a database holds per-event raw rows, then migration 007 moves them into batches, in order, fields intact', async () => {
    await reset();
    // Back to the schema before 007, with events waiting and ids given out, and run 007 on it.
    await db.query('DROP FUNCTION events_parse(text), events_claim(integer), events_adopt_legacy(integer)');
    await db.query('DROP TABLE events_raw_batches');
    await legacyRows(1, 40);
    await db.query(`INSERT INTO events_processed (id, user_id, action, ts, source, received_at)
      VALUES (123456, 'old', 'a', now(), 'api', now())`);
    const before = (await db.query(legacyView)).rows;
    await db.query(migration('007_raw_batches.sql'));
    assert.equal((await db.query('SELECT count(*)::int AS n FROM events_raw')).rows[0].n, 0);
    const { rows: moved } = await db.query<{ n: number; source: string }>(
      'SELECT n, source FROM events_raw_batches ORDER BY id',
    );
    assert.deepEqual(moved, [
      { n: 32, source: 'api' },
      { n: 8, source: 'segment' },
    ]);
    assert.deepEqual(await rawEvents(db), bySource(before));
  });

  it('when an api of the previous release writes events_raw during the rollout, then workers count each of its events once, with ids of their own', async () => {
    await reset();
    await db.query(`INSERT INTO events_processed (id, user_id, action, ts, source, received_at)
      VALUES (123456, 'old', 'a', now(), 'api', now())`);
    await legacyRows(41, 2540);
    await copyEvents(
      db,
      Array.from({ length: 500 }, (_, i) => ({ row: event(i), source: 'api' as Source })),
    );
    assert.equal(await countBacklog(db), 3000, 'the backlog counts both tables');
    const counts = await Promise.all(
      [0, 1, 2].map(async () => {
        let n = 0;
        for (;;) {
          const r = await processBatch(deps);
          if (r.claimed === 0) return n;
          n += r.claimed;
        }
      }),
    );
    assert.equal(
      counts.reduce((a, b) => a + b, 0),
      3000,
    );
    assert.equal(await countBacklog(db), 0);
    const { rows } = await db.query<{ n: number; min: number }>(
      'SELECT count(DISTINCT id)::int AS n, min(id) AS min FROM events_processed WHERE id <> 123456',
    );
    assert.equal(rows[0]!.n, 3000);
    assert.ok(rows[0]!.min > 2 ** 40, 'batch event ids lie 2^40 above the ids events_raw gives out');
  });
});
