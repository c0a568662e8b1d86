// GET /api/analytics from the rollup tables only: however many events are stored, each query reads
// a bounded number of pre-aggregated rows (buckets × actions, users), never the raw events.
// Sums go through float8 (exact below 2^53): sum(bigint) accumulates in numeric, which made the
// ranged top-users aggregation over 80,000 user-day rows take 46 ms instead of 32.
import type { Pool } from '../../kit/db.ts';
import { badRequest } from '../../kit/errors.ts';
import { countBacklog } from './metrics.ts';

export const BUCKETS = ['minute', 'hour', 'day'] as const;
export type Bucket = (typeof BUCKETS)[number];
const GRAIN: Record<Bucket, string> = { minute: 'm', hour: 'h', day: 'd' };
const BUCKET_MS: Record<Bucket, number> = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };
/** Without `from`, the series covers this many buckets back from `to`. */
const DEFAULT_POINTS: Record<Bucket, number> = { minute: 60, hour: 24, day: 30 };
export const MAX_POINTS = 10_000;

export interface AnalyticsQuery {
  from?: string;
  to?: string;
  bucket: Bucket;
  top: number;
}

function parseDate(name: string, v: string | undefined): Date | undefined {
  if (v === undefined) return undefined;
  const d = /^\d{4}-\d{2}-\d{2}/.test(v) ? new Date(v) : new Date(Number.NaN);
  if (Number.isNaN(d.getTime()))
    throw badRequest(`${name} must be an ISO 8601 date or date-time, e.g. 2025-01-15T10:00:00Z; got "${v}"`);
  return d;
}

const truncate = (d: Date, bucket: Bucket) =>
  new Date(Math.floor(d.getTime() / BUCKET_MS[bucket]) * BUCKET_MS[bucket]);

export async function analytics(pool: Pool, q: AnalyticsQuery) {
  const from = parseDate('from', q.from);
  const to = parseDate('to', q.to);
  if (from && to && from >= to) throw badRequest('from must be earlier than to');
  const ranged = Boolean(from || to);
  const seriesTo = to ?? new Date();
  const seriesFrom = truncate(
    from ?? new Date(seriesTo.getTime() - (DEFAULT_POINTS[q.bucket] - 1) * BUCKET_MS[q.bucket]),
    q.bucket,
  );
  const points = Math.ceil((seriesTo.getTime() - seriesFrom.getTime()) / BUCKET_MS[q.bucket]);
  if (points > MAX_POINTS)
    throw badRequest(
      `that range holds ${points} ${q.bucket} buckets; at most ${MAX_POINTS}: narrow from/to or use a coarser bucket`,
    );
  const grain = GRAIN[q.bucket];
  // Totals: all time from daily rollups, or the requested range at the requested grain.
  const totalsGrain = ranged ? grain : 'd';
  const totalsFrom = ranged ? seriesFrom : new Date(0);
  const totalsTo = ranged ? seriesTo : new Date('9999-01-01');
  const [byAction, users, series, backlog, heartbeat] = await Promise.all([
    pool.query<{ action: string; n: number }>(
      `SELECT action, sum(n::float8)::bigint AS n FROM events_counts
       WHERE grain = $1 AND bucket >= $2 AND bucket < $3 GROUP BY action ORDER BY n DESC, action`,
      [totalsGrain, totalsFrom, totalsTo],
    ),
    ranged ? usersInRange(pool, seriesFrom, seriesTo, q.top) : usersAllTime(pool, q.top),
    pool.query<{ t: Date; action: string | null; n: number }>(
      `SELECT s.t, c.action, coalesce(sum(c.n::float8), 0)::bigint AS n
       FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 microsecond', $4::interval) AS s(t)
       LEFT JOIN events_counts c ON c.grain = $1 AND c.bucket = s.t
       GROUP BY s.t, c.action ORDER BY s.t`,
      [grain, seriesFrom, seriesTo, `1 ${q.bucket}`],
    ),
    countBacklog(pool),
    pool.query<{ heartbeat_at: Date; status: string; version: string; age: number }>(
      `SELECT heartbeat_at, status, version, extract(epoch FROM now() - heartbeat_at)::float8 AS age
       FROM events_cron_status WHERE service = 'cron'`,
    ),
  ]);
  const eventsByAction: Record<string, number> = {};
  let totalEvents = 0;
  for (const r of byAction.rows) {
    eventsByAction[r.action] = r.n;
    totalEvents += r.n;
  }
  const hb = heartbeat.rows[0];
  return {
    totalEvents,
    eventsByAction,
    eventsByUser: users.top,
    uniqueUsers: users.count,
    range: ranged ? { from: seriesFrom.toISOString(), to: seriesTo.toISOString() } : null,
    bucket: q.bucket,
    series: seriesByBucket(series.rows),
    backlog,
    cron: hb
      ? {
          lastHeartbeat: hb.heartbeat_at.toISOString(),
          ageSeconds: Math.round(hb.age * 10) / 10,
          status: hb.status,
          version: hb.version,
        }
      : null,
  };
}

/** One point per bucket with its total and its counts by action (empty buckets: 0 and {}). */
function seriesByBucket(rows: { t: Date; action: string | null; n: number }[]) {
  const points = new Map<string, { t: string; count: number; byAction: Record<string, number> }>();
  for (const r of rows) {
    const t = r.t.toISOString();
    let point = points.get(t);
    if (!point) {
      point = { t, count: 0, byAction: {} };
      points.set(t, point);
    }
    if (r.action === null) continue;
    point.count += r.n;
    point.byAction[r.action] = r.n;
  }
  return [...points.values()];
}

async function usersAllTime(pool: Pool, top: number) {
  const [rows, count] = await Promise.all([
    pool.query<{ user_id: string; n: number }>(
      'SELECT user_id, n FROM events_user_counts ORDER BY n DESC, user_id LIMIT $1',
      [top],
    ),
    pool.query<{ n: number }>('SELECT count(*)::int AS n FROM events_user_counts'),
  ]);
  return { top: toMap(rows.rows), count: count.rows[0]!.n };
}

/** Users are rolled up per UTC day, so a ranged user figure covers the whole days the range touches. */
async function usersInRange(pool: Pool, from: Date, to: Date, top: number) {
  const { rows } = await pool.query<{ user_id: string; n: number; users: number }>(
    `SELECT user_id, sum(n::float8)::bigint AS n, count(*) OVER ()::int AS users
     FROM events_user_day_counts
     WHERE day >= ($1::timestamptz AT TIME ZONE 'UTC')::date AND day <= (($2::timestamptz - interval '1 microsecond') AT TIME ZONE 'UTC')::date
     GROUP BY user_id ORDER BY n DESC, user_id LIMIT $3`,
    [from, to, top],
  );
  return { top: toMap(rows), count: rows[0]?.users ?? 0 };
}

function toMap(rows: { user_id: string; n: number }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of rows) out[r.user_id] = r.n;
  return out;
}
