-- A ranged top-users question read one row per user per row set: whole weeks
-- (events_user_week_counts) plus the days of them inside the range, or minus the days outside it
-- (events_user_day_counts). "The last 7 days" cost 4 row sets (40,000 rows for 10,000 users),
-- aggregated by user. Here a row holds one user's counts for the 14 days from `start` (a Monday),
-- one column per day, and a row starts every Monday, so each day is held twice (d1-d7 of its week's
-- row, d8-d14 of the row before). Any range of up to 8 days lies within one row: "the last 7 days"
-- reads one row per user and aggregates nothing. Longer ranges read every other row (user-days.ts).
-- Measured with 10M events stored on 2 cores, per half of the users (005): 12 ms before, 6.7 ms
-- with one row per user per week (two rows for 7 days, a first version of this migration), 3.0 ms
-- with one row. The worker writes two rows per user and week of a batch, as it did before (a day
-- row and a week row), at the same cost: 300,000 events drained at 58-61k/s against 55-59k/s.
CREATE TABLE events_user_days (
  start date NOT NULL, -- a Monday; the row holds start ... start + 13
  user_id text NOT NULL,
  d1 bigint NOT NULL DEFAULT 0,
  d2 bigint NOT NULL DEFAULT 0,
  d3 bigint NOT NULL DEFAULT 0,
  d4 bigint NOT NULL DEFAULT 0,
  d5 bigint NOT NULL DEFAULT 0,
  d6 bigint NOT NULL DEFAULT 0,
  d7 bigint NOT NULL DEFAULT 0,
  d8 bigint NOT NULL DEFAULT 0,
  d9 bigint NOT NULL DEFAULT 0,
  d10 bigint NOT NULL DEFAULT 0,
  d11 bigint NOT NULL DEFAULT 0,
  d12 bigint NOT NULL DEFAULT 0,
  d13 bigint NOT NULL DEFAULT 0,
  d14 bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (start, user_id)
) PARTITION BY HASH (user_id);
-- Split by user as in 005 (analytics.ts asks each partition on its own connection); filled to 70%
-- so the worker's bumps are HOT updates (003).
CREATE TABLE events_user_days_h0 PARTITION OF events_user_days
  FOR VALUES WITH (MODULUS 2, REMAINDER 0) WITH (fillfactor = 70);
CREATE TABLE events_user_days_h1 PARTITION OF events_user_days
  FOR VALUES WITH (MODULUS 2, REMAINDER 1) WITH (fillfactor = 70);

-- Adds n[i] events of users[i] on days[i] to both rows that hold each day: the one way rows are
-- written (the worker's batch statement, the copy and the trigger below).
CREATE FUNCTION events_user_days_add(days date[], users text[], n bigint[]) RETURNS void
LANGUAGE sql
AS $$
  INSERT INTO events_user_days AS t (start, user_id, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14)
  SELECT p.start, s.user_id,
    sum(CASE s.day - p.start WHEN 0 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 1 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 2 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 3 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 4 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 5 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 6 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 7 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 8 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 9 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 10 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 11 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 12 THEN s.n ELSE 0 END),
    sum(CASE s.day - p.start WHEN 13 THEN s.n ELSE 0 END)
  FROM unnest(days, users, n) AS s(day, user_id, n)
  CROSS JOIN LATERAL (SELECT date_trunc('week', s.day::timestamp)::date AS monday) w
  CROSS JOIN LATERAL (VALUES (w.monday), (w.monday - 7)) AS p(start)
  GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (start, user_id) DO UPDATE SET
    d1 = t.d1 + EXCLUDED.d1, d2 = t.d2 + EXCLUDED.d2, d3 = t.d3 + EXCLUDED.d3, d4 = t.d4 + EXCLUDED.d4,
    d5 = t.d5 + EXCLUDED.d5, d6 = t.d6 + EXCLUDED.d6, d7 = t.d7 + EXCLUDED.d7, d8 = t.d8 + EXCLUDED.d8,
    d9 = t.d9 + EXCLUDED.d9, d10 = t.d10 + EXCLUDED.d10, d11 = t.d11 + EXCLUDED.d11, d12 = t.d12 + EXCLUDED.d12,
    d13 = t.d13 + EXCLUDED.d13, d14 = t.d14 + EXCLUDED.d14
$$;

-- Rolling upgrade: workers of the previous release go on adding to events_user_day_counts (and
-- events_user_week_counts) until they are replaced. This trigger carries each of their additions
-- over, so the new table misses nothing meanwhile. Created before the copy below: it locks the
-- table against those writers until this migration commits, so every addition is either in the
-- copy or carried over by the trigger, never both. Workers of this release write neither old
-- table; a later release drops them.
CREATE FUNCTION events_user_day_counts_carry() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM events_user_days_add(ARRAY[NEW.day], ARRAY[NEW.user_id],
    ARRAY[NEW.n - CASE WHEN TG_OP = 'UPDATE' THEN OLD.n ELSE 0 END]);
  RETURN NULL;
END
$$;
CREATE TRIGGER events_user_day_counts_carry AFTER INSERT OR UPDATE ON events_user_day_counts
  FOR EACH ROW EXECUTE FUNCTION events_user_day_counts_carry();

-- A week of day rows per call: each call writes two rows per user of that week.
SELECT events_user_days_add(array_agg(day), array_agg(user_id), array_agg(n))
FROM events_user_day_counts GROUP BY date_trunc('week', day::timestamp) ORDER BY date_trunc('week', day::timestamp);
