-- events_raw is a queue: every row is deleted minutes after it is inserted. Vacuum it after a fixed
-- number of dead rows rather than a fraction of the table, so the backlog count (and the worker's
-- claim scan) never wades through millions of dead tuples after a burst.
ALTER TABLE events_raw SET (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 20000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 20000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 20000
);
