-- Codes are ASCII, so byte order is their true order, and "C" is the one collation PostgreSQL
-- compares with memcmp. Under the database default (en_US.UTF-8, or C.UTF-8 through libc) every
-- btree comparison went through strcoll: a 1M-code COPY into the primary key took 26 s here
-- against 9 s with "C". Rewrites the column and rebuilds its indexes once.
ALTER TABLE codes ALTER COLUMN code TYPE text COLLATE "C";
