-- A large generation is written in parts (sub-ranges of one claimed counter range, on parallel
-- connections). The claimed range is recorded under `<runId>:plan` before any part runs, so a
-- retried job writes the parts it has not finished into the same range, never a second range;
-- each finished part is a `<runId>:<run>.<half>` row written in the part's own transaction.
ALTER TABLE codes_generations ADD COLUMN start_index bigint, ADD COLUMN start_seq bigint;
