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

/** Takes `n` tokens from the bucket; returns the seconds to wait before sending them. */
export async function take(db: Queryable, limit: Limit, n: number): Promise<number> {
  const burst = Math.max(1, limit.ratePerSecond); // one second of capacity
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

export async function forget(db: Queryable, keys: string[]): Promise<void> {
  await db.query('DELETE FROM sender_rate_buckets WHERE key = ANY($1)', [keys]);
}
