-- Reserve's common case (a batch of requests under fresh reserveIds, all served from the codes after
-- the calling process's cursor) as a function, so that PostgreSQL plans it once per connection.
-- As a prepared statement it was planned again on every call: its LIMIT is a parameter, a generic
-- plan guesses a tenth of the campaign for that, so the plan cache judged the generic plan costlier
-- than a custom one and re-planned each time (0.4 ms a batch: a quarter of PostgreSQL's CPU per
-- reservation). Here `plan_cache_mode` makes the function use its generic plan, made at the first
-- call on a connection and kept however the tables grow. So the statement leaves the planner no
-- choice that depends on table size: it has no join (each code's request is found by width_bucket,
-- a binary search over the requests' boundaries), picks through the codes_available index and
-- updates codes through the primary key (`code = ANY`). Sequential and bitmap scans are off as well,
-- so a plan made on a nearly empty table cannot pick them. reserve-plan.test.ts reads the plan.
--
-- It picks `total` available codes at or after `from_seq` (FOR UPDATE SKIP LOCKED) and, only when
-- it got all of them, records one reservation per request (request i takes counts[i] codes, in seq
-- order), marks the codes reserved and moves the campaign's counters. It returns one row per code,
-- or no rows and changes nothing when the codes after the cursor are too few.
CREATE FUNCTION codes_reserve_fresh(
  campaign integer, ids text[], counts integer[], ttls integer[], from_seq bigint, total integer
) RETURNS TABLE (reserve_id text, code text, seq bigint, expires_at timestamptz)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH firsts AS (
    -- Request i gets the picked codes of rank firsts[i] … firsts[i+1]-1.
    SELECT array_agg(x.hi - x.n + 1 ORDER BY x.ord) AS ranks
    FROM (SELECT n, ord, sum(n) OVER (ORDER BY ord) AS hi
          FROM unnest(counts) WITH ORDINALITY AS u(n, ord)) x
  ), picked AS (
    SELECT k.code, k.seq FROM codes k
    WHERE k.campaign_no = campaign AND k.state = 0 AND k.seq >= from_seq
    ORDER BY k.seq LIMIT total FOR UPDATE SKIP LOCKED
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
    -- The same split by seq: request i's codes have seq starts[i] … starts[i+1]-1.
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
  SELECT marked.reserve_id, marked.code, marked.seq, marked.expires_at FROM marked;
END
$$;
