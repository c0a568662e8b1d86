-- Every recipient changes state twice (pending → sending → sent). While `state` was in an index
-- predicate, neither change could be a HOT update, so each wrote index entries as well as the row.
-- Without it, the chunk's id range on the primary key finds what a worker needs (a chunk is at
-- most 500 rows), and the updates stay on their page (fillfactor 80 leaves room).
DROP INDEX IF EXISTS sender_recipients_unfinished;
