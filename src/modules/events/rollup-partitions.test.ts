// Migration 005 splits the user rollups by a hash of user_id, and a ranged top-users answer is the
// merge of one query per partition. These tests hold the three parts together: the migration keeps
// every row, the partitions are the ones analytics.ts asks, and the merged answer is the one a
// single query over all users gives, ties included. Migration 006 splits the counts by action by
// grain: it too must keep every row, each in its grain's partition.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { startPlatform } from '../../../test/helpers.ts';
import { mergeUserHalves, USER_ROLLUP_PARTITIONS } from './analytics.ts';
import { eventsModule } from './index.ts';

const migration = (name: string) => readFileSync(new URL(`./migrations/${name}`, import.meta.url), 'utf8');

describe('mergeUserHalves', () => {
  it('when halves tie on a count, then the userId first in byte order wins, and the user counts add up', () => {
    const merged = mergeUserHalves(
      [
        {
          top: [
            { user_id: 'b', n: 9 },
            { user_id: 'Ａ', n: 5 },
            { user_id: 'Z', n: 5 },
          ],
          count: 7,
        },
        {
          top: [
            { user_id: 'a', n: 5 },
            { user_id: '😀', n: 5 },
            { user_id: 'c', n: 1 },
          ],
          count: 4,
        },
      ],
      4,
    );
    // Byte (code point) order: 'Z' < 'a' < 'Ａ' (U+FF21) < '😀' (U+1F600). JavaScript's own string
    // order compares UTF-16 units, and the emoji's surrogate (0xD83D) would sort before 0xFF21.
    assert.deepEqual(
      merged.top.map((u) => u.user_id),
      ['b', 'Z', 'a', 'Ａ'],
    );
    assert.equal(merged.count, 11);
  });
});

describe('events: rollups split by user hash (migration 005) and by grain (006)', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'api' });
  const db = p.kit.pool;
  const partitionsOf = async (table: string) =>
    (
      await db.query<{ name: string }>(
        `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass ORDER BY 1`,
        [table],
      )
    ).rows.map((r) => r.name);

  it('when migrated, then each rollup has the partitions analytics asks, named as it asks them', async () => {
    const names = (t: string) => Array.from({ length: USER_ROLLUP_PARTITIONS }, (_, k) => `${t}_h${k}`);
    assert.deepEqual(await partitionsOf('events_user_days'), names('events_user_days'));
  });

  it('when a database holds unsplit rollups, then the migration keeps every row', async () => {
    // Rebuild the rollups as migration 004 left them, with rows, and run 005 on them.
    await db.query(`DROP TABLE events_user_day_counts, events_user_week_counts`);
    await db.query(`CREATE TABLE events_user_day_counts (day date NOT NULL, user_id text NOT NULL,
      n bigint NOT NULL, PRIMARY KEY (day, user_id)) WITH (fillfactor = 70)`);
    await db.query(`CREATE TABLE events_user_week_counts (week date NOT NULL, user_id text NOT NULL,
      n bigint NOT NULL, PRIMARY KEY (week, user_id)) WITH (fillfactor = 70)`);
    await db.query(`INSERT INTO events_user_day_counts
      SELECT '2025-01-01'::date + d, 'user_' || u, d * 100 + u FROM generate_series(0, 9) d, generate_series(1, 50) u`);
    await db.query(`INSERT INTO events_user_week_counts
      SELECT '2024-12-30'::date + 7 * w, 'user_' || u, w * 100 + u FROM generate_series(0, 1) w, generate_series(1, 50) u`);
    const snapshot = async () => ({
      days: (await db.query('SELECT day, user_id, n FROM events_user_day_counts ORDER BY 1, 2')).rows,
      weeks: (await db.query('SELECT week, user_id, n FROM events_user_week_counts ORDER BY 1, 2')).rows,
    });
    const before = await snapshot();
    await db.query(migration('005_user_rollups_by_user_hash.sql'));
    assert.deepEqual(await snapshot(), before);
    assert.equal((await partitionsOf('events_user_day_counts')).length, USER_ROLLUP_PARTITIONS);
    // Both halves hold users, and each user's rows sit in one of them.
    const spread = await db.query<{ part: string; users: number }>(
      `SELECT tableoid::regclass::text AS part, count(DISTINCT user_id)::int AS users
       FROM events_user_day_counts GROUP BY 1 ORDER BY 1`,
    );
    assert.equal(spread.rows.length, USER_ROLLUP_PARTITIONS);
    assert.equal(
      spread.rows.reduce((a, r) => a + r.users, 0),
      50,
    );
  });

  it('when top users are asked over a range, then the merged halves equal one query over all users, ties included', async () => {
    // 40 users over 20 days from Wednesday 2025-03-05, counts that tie often (n mod 4), stored by
    // 14-day rows (migration 008); the expected answers are asked of the days.
    await db.query(`CREATE TABLE user_days AS
      SELECT '2025-03-05'::date + d AS day, 'u' || u AS user_id, 1 + (u * 7 + d) % 4 AS n
      FROM generate_series(0, 19) d, generate_series(1, 40) u`);
    await db.query(
      'SELECT events_user_days_add(array_agg(day), array_agg(user_id), array_agg(n)) FROM user_days',
    );
    for (const [from, to, top] of [
      ['2025-03-05', '2025-03-15', 7],
      ['2025-03-06', '2025-03-13', 5],
      ['2025-03-10', '2025-03-12', 40],
      ['2025-03-06', '2025-03-24', 10], // two whole weeks between two partial ones
    ] as const) {
      const { rows } = await db.query<{ user_id: string; n: number }>(
        `SELECT user_id, sum(n)::int AS n FROM user_days WHERE day >= $1 AND day < $2
         GROUP BY 1 ORDER BY n DESC, user_id COLLATE "C"`,
        [from, to],
      );
      const res = await p.app.inject({
        url: `/api/analytics?from=${from}&to=${to}&bucket=day&top=${top}`,
        headers: p.auth,
      });
      const body = res.json();
      assert.deepEqual(
        Object.entries(body.eventsByUser),
        rows.slice(0, top).map((r) => [r.user_id, r.n]),
        `${from} to ${to}, top ${top}`,
      );
      assert.equal(body.uniqueUsers, rows.length);
    }
  });

  it("when a database holds counts of all grains in one table, then migration 006 keeps every row in its grain's partition", async () => {
    await db.query('DROP TABLE events_counts');
    await db.query(`CREATE TABLE events_counts (grain "char" NOT NULL CHECK (grain IN ('m', 'h', 'd')),
      bucket timestamptz NOT NULL, action text NOT NULL, n bigint NOT NULL, PRIMARY KEY (grain, bucket, action))`);
    await db.query(`INSERT INTO events_counts
      SELECT g, '2025-01-01T00:00:00Z'::timestamptz + i * interval '1 minute', 'a' || (i % 3), i
      FROM generate_series(1, 200) i, unnest(ARRAY['m', 'h', 'd']::"char"[]) g`);
    const rows = 'SELECT grain, bucket, action, n FROM events_counts ORDER BY 1, 2, 3';
    const before = (await db.query(rows)).rows;
    await db.query(migration('006_counts_by_grain.sql'));
    assert.deepEqual((await db.query(rows)).rows, before);
    const where = await db.query<{ part: string; grains: string }>(
      `SELECT tableoid::regclass::text AS part, string_agg(DISTINCT grain::text, '') AS grains
       FROM events_counts GROUP BY 1 ORDER BY 1`,
    );
    assert.deepEqual(where.rows, [
      { part: 'events_counts_day', grains: 'd' },
      { part: 'events_counts_hour', grains: 'h' },
      { part: 'events_counts_minute', grains: 'm' },
    ]);
    await assert.rejects(
      db.query(`INSERT INTO events_counts VALUES ('x', now(), 'a', 1)`),
      /no partition of relation "events_counts" found/,
    );
  });
});

describe('events: user rollups in 14-day rows with a column per day (migration 008)', async () => {
  const p = await startPlatform({ modules: [eventsModule], role: 'api' });
  const db = p.kit.pool;
  // All as (day, user_id, n) rows with n > 0, so the old and the new rollup compare directly. Each
  // day is in two rows: as d1-d7 of its week's row and as d8-d14 of the row before; both must agree.
  const oldDays = 'SELECT day::text, user_id, n::int FROM events_user_day_counts ORDER BY 1, 2';
  const newDays = (
    columns: string,
    offset: number,
  ) => `SELECT (start + ${offset} + k::int - 1)::text AS day, user_id, n::int
    FROM events_user_days, unnest(ARRAY[${columns}]) WITH ORDINALITY AS x(n, k)
    WHERE n > 0 ORDER BY 1, 2`;
  const firstWeeks = newDays('d1, d2, d3, d4, d5, d6, d7', 0);
  const secondWeeks = newDays('d8, d9, d10, d11, d12, d13, d14', 7);

  it('when a database holds user day rollups, then the migration keeps every day of every user, in both its rows', async () => {
    // Undo 008, store day rows as the previous release did (two weeks and a day), run 008 again.
    await db.query(`DROP TABLE events_user_days;
      DROP TRIGGER events_user_day_counts_carry ON events_user_day_counts;
      DROP FUNCTION events_user_day_counts_carry(), events_user_days_add(date[], text[], bigint[])`);
    await db.query(`INSERT INTO events_user_day_counts
      SELECT '2025-01-27'::date + d, 'user_' || u, d * 100 + u FROM generate_series(0, 14) d, generate_series(1, 30) u`);
    await db.query(migration('008_user_days.sql'));
    const days = (await db.query(oldDays)).rows;
    assert.equal(days.length, 15 * 30);
    assert.deepEqual((await db.query(firstWeeks)).rows, days);
    assert.deepEqual((await db.query(secondWeeks)).rows, days);
    assert.deepEqual(
      (await db.query('SELECT DISTINCT start::text FROM events_user_days ORDER BY 1')).rows.map(
        (r) => r.start,
      ),
      ['2025-01-20', '2025-01-27', '2025-02-03', '2025-02-10'],
    );
  });

  it('when a worker of the previous release adds to the day rollups, then both rows of each day get the same counts', async () => {
    // Its statement: new (day, user) rows inserted, existing ones bumped.
    await db.query(`INSERT INTO events_user_day_counts (day, user_id, n)
      VALUES ('2025-01-27', 'user_1', 5), ('2025-02-09', 'user_1', 7), ('2025-03-01', 'newcomer', 3)
      ON CONFLICT (day, user_id) DO UPDATE SET n = events_user_day_counts.n + EXCLUDED.n`);
    const days = (await db.query(oldDays)).rows;
    assert.equal(days.find((r) => r.user_id === 'user_1' && r.day === '2025-01-27')?.n, 6);
    assert.deepEqual((await db.query(firstWeeks)).rows, days);
    assert.deepEqual((await db.query(secondWeeks)).rows, days);
  });
});
