-- Counts by user per week (Monday to Sunday, UTC). A ranged top-users question reads a whole week as
-- one row per user instead of seven day rows, taking out the few days of it outside the range (see
-- userRollupPlan in analytics.ts): "the last 7 days" reads 2 to 5 row sets instead of 8.
CREATE TABLE events_user_week_counts (
  week date NOT NULL,
  user_id text NOT NULL,
  n bigint NOT NULL,
  PRIMARY KEY (week, user_id)
) WITH (fillfactor = 70);

INSERT INTO events_user_week_counts (week, user_id, n)
SELECT date_trunc('week', day::timestamp)::date, user_id, sum(n)
FROM events_user_day_counts GROUP BY 1, 2;
