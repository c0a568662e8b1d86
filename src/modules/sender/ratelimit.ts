// Rate limits shared by every worker process: a token bucket per limit in one PostgreSQL row.
// `take` always grants and may leave the bucket in debt; the debt divided by the rate is how long
// the caller must wait. One round trip per sub-batch, fair across processes, and no lost tokens
// when a worker dies (a dead worker simply stops taking).
import type { Queryable } from '../../kit/db.ts';

export interface Limit {
  /** Metric label: batch, provider, api_key */
  kind: string;
  key: string;
  ratePerSecond: number;
}

/** A bucket holds at most one second of tokens (at least one). */
const burstOf = (limit: Limit) => Math.max(1, limit.ratePerSecond);

/** Takes `n` tokens from the bucket; returns the seconds to wait before sending them. */
export async function take(db: Queryable, limit: Limit, n: number): Promise<number> {
  const burst = burstOf(limit);
  const { rows } = await db.query<{ tokens: number }>(
    `INSERT INTO sender_rate_buckets AS b (key, tokens, updated_at) VALUES ($1, $3::float8 - $4::float8, clock_timestamp())
     ON CONFLICT (key) DO UPDATE SET
       tokens = least($3::float8, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $2::float8) - $4::float8,
       updated_at = clock_timestamp()
     RETURNING tokens`,
    [limit.key, limit.ratePerSecond, burst, n],
  );
  const tokens = rows[0]!.tokens;
  return tokens >= 0 ? 0 : -tokens / limit.ratePerSecond;
}

/**
 * Puts back `n` tokens taken for messages that were then not sent (the claim found fewer due, or
 * none: recipients waiting for a retry). Kept, they put the bucket in debt for nothing, and every
 * chunk of the batch (or every batch of the provider) waited that debt out.
 */
export async function giveBack(db: Queryable, limit: Limit, n: number): Promise<void> {
  await db.query(
    'UPDATE sender_rate_buckets SET tokens = least($2::float8, tokens + $3::float8) WHERE key = $1',
    [limit.key, burstOf(limit), n],
  );
}

/**
 * Deletes buckets nobody took from for `idleSeconds` (a finished batch, a deleted send config, a
 * key no longer sending). A bucket that old has long refilled to its burst, which is exactly what
 * a missing row starts at, so forgetting it changes no limit: a bucket's debt is at most what the
 * workers took in one round (seconds), never an hour.
 */
export async function forgetIdle(db: Queryable, idleSeconds = 3600): Promise<number> {
  const { rowCount } = await db.query(
    'DELETE FROM sender_rate_buckets WHERE updated_at < clock_timestamp() - make_interval(secs => $1)',
    [idleSeconds],
  );
  return rowCount ?? 0;
}
