-- All-time top users break ties on userId in byte order, as ranged ones do (docs/api/events.md);
-- ordered by the database's collation they came out in another order on an en_US database. The
-- index follows the query's COLLATE "C", so the top N is still read off it without a sort.
CREATE INDEX events_user_counts_top_bytes ON events_user_counts (n DESC, user_id COLLATE "C");
DROP INDEX events_user_counts_top;
