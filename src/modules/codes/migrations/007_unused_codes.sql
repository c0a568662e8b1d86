-- Generated codes that were never handed out get a state of their own, 3 "unused", and leave the
-- codes_available index: that index now holds only codes that came back to the pool (released or
-- expired reservations) and imported codes. A 10-million-code generation paid one btree entry per
-- code in it, ~40% of PostgreSQL's CPU for the load (a COPY of 4M sorted codes: 16.4 s with both
-- indexes, 9.2 s with the primary key alone). Unused codes are found through the primary key in
-- code order instead, from a per-process cursor, and from the campaign's `unused_from`: a lower
-- bound below which the campaign has no unused code.
--
-- Both `available` (the API's state) and the campaign's `available` counter cover states 0 and 3.
ALTER TABLE codes DROP CONSTRAINT IF EXISTS codes_state_check;
-- NOT VALID: every existing row already satisfies the narrower check it replaces.
ALTER TABLE codes ADD CONSTRAINT codes_state_check CHECK (state IN (0, 1, 2, 3)) NOT VALID;

-- The lower bound keeps its invariant ("no unused code of this campaign sorts below it") by two
-- rules: a transaction that writes unused codes lowers it to their smallest code and bumps
-- unused_epoch, both before it commits; and it is raised only by a compare-and-set on
-- unused_epoch after reading, in one snapshot, the smallest unused code at or above it
-- (reservations.ts, advanceUnusedFrom). NULL: the campaign has no unused code.
ALTER TABLE codes_campaigns
  ADD COLUMN unused_from text COLLATE "C",
  ADD COLUMN unused_epoch bigint NOT NULL DEFAULT 0;

-- codes_reserve_fresh (migration 006), picking unused codes first: through the primary key, in
-- code order, from `from_code` or the campaign's unused_from, whichever is greater; then codes back
-- in the pool, through codes_available in seq order from `from_seq` (so a campaign whose codes
-- were generated before this migration, or imported, keeps the one-statement path). Otherwise the
-- same: one generic plan per connection, index paths only, all or nothing; `unused` says which
-- kind each code was, for the caller's cursors. codes_reserve_fresh stays for processes of the
-- previous release during a rolling upgrade (it serves codes in state 0 only); a later release
-- drops it.
CREATE FUNCTION codes_reserve_unused(
  campaign integer, ids text[], counts integer[], ttls integer[], from_code text, from_seq bigint, total integer
) RETURNS TABLE (reserve_id text, code text, seq bigint, expires_at timestamptz, unused boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH firsts AS (
    -- Request i gets the picked codes of rank firsts[i] … firsts[i+1]-1 (ranked by seq).
    SELECT array_agg(x.hi - x.n + 1 ORDER BY x.ord) AS ranks
    FROM (SELECT n, ord, sum(n) OVER (ORDER BY ord) AS hi
          FROM unnest(counts) WITH ORDINALITY AS u(n, ord)) x
  ), picked_unused AS (
    SELECT k.code, k.seq FROM codes k
    WHERE k.campaign_no = campaign AND k.state = 3
      AND k.code >= GREATEST(from_code COLLATE "C",
                             (SELECT c.unused_from FROM codes_campaigns c WHERE c.no = campaign))
    ORDER BY k.code LIMIT total FOR UPDATE SKIP LOCKED
  ), picked_pool AS (
    -- LIMIT 0 (unused codes were enough) ends this scan before it reads a row.
    SELECT k.code, k.seq FROM codes k
    WHERE k.campaign_no = campaign AND k.state = 0 AND k.seq >= from_seq
    ORDER BY k.seq LIMIT total - (SELECT count(*) FROM picked_unused) FOR UPDATE SKIP LOCKED
  ), picked AS (
    SELECT picked_unused.code, picked_unused.seq FROM picked_unused
    UNION ALL SELECT picked_pool.code, picked_pool.seq FROM picked_pool
  ), enough AS (
    SELECT count(*) = total AS ok FROM picked
  ), own AS (
    SELECT p.code, p.seq, width_bucket(p.rn, (SELECT firsts.ranks FROM firsts)) AS i
    FROM (SELECT picked.code, picked.seq, row_number() OVER (ORDER BY picked.seq) AS rn FROM picked) p
    WHERE (SELECT ok FROM enough)
  ), r AS (
    INSERT INTO codes_reservations (campaign_no, reserve_id, state, count, expires_at, codes)
    SELECT campaign, ids[own.i], 'reserved', counts[own.i], now() + make_interval(secs => ttls[own.i]),
      array_agg(own.code ORDER BY own.seq)
    FROM own GROUP BY own.i
  ), c AS (
    UPDATE codes_campaigns SET available = available - total, reserved = reserved + total
    WHERE no = campaign AND (SELECT ok FROM enough)
  ), bounds AS (
    -- The same split by seq: request i's codes have seq starts[i] … starts[i+1]-1 among the picked.
    SELECT array_agg(s.first ORDER BY s.i) AS starts FROM (SELECT own.i, min(own.seq) AS first FROM own GROUP BY own.i) s
  ), marked AS (
    UPDATE codes k SET
      state = 1,
      reserve_id = ids[width_bucket(k.seq, (SELECT bounds.starts FROM bounds))],
      reserved_at = now(),
      expires_at = now() + make_interval(secs => ttls[width_bucket(k.seq, (SELECT bounds.starts FROM bounds))])
    WHERE k.campaign_no = campaign AND k.code = ANY (ARRAY(SELECT own.code FROM own))
    RETURNING k.reserve_id, k.code, k.seq, k.expires_at
  )
  SELECT marked.reserve_id, marked.code, marked.seq, marked.expires_at,
    marked.code IN (SELECT picked_unused.code FROM picked_unused) FROM marked;
END
$$;
