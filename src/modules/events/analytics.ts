// GET /api/analytics from the rollup tables only: however many events are stored, each query reads
// a bounded number of pre-aggregated rows (buckets × actions, users), never the raw events.
// Sums go through float8 (exact below 2^53): sum(bigint) accumulates in numeric, which made the
// ranged top-users aggregation over 80,000 user-day rows take 46 ms instead of 32.
import { hasRealCalendarFields, isLocalTime, localTimeMessage } from '../../kit/dates.ts';
import type { Pool } from '../../kit/db.ts';
import { badRequest } from '../../kit/errors.ts';
import { countBacklog } from './metrics.ts';
import { countInRangeSql, DAY_MS, rowsOfRange } from './user-days.ts';

export const BUCKETS = ['minute', 'hour', 'day'] as const;
export type Bucket = (typeof BUCKETS)[number];
const GRAIN: Record<Bucket, string> = { minute: 'm', hour: 'h', day: 'd' };
const BUCKET_MS: Record<Bucket, number> = { minute: 60_000, hour: 3_600_000, day: DAY_MS };
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
  const d = hasRealCalendarFields(v) ? new Date(v) : new Date(Number.NaN);
  if (Number.isNaN(d.getTime()))
    throw badRequest(
      `${name} must be a real ISO 8601 date or date-time, e.g. 2025-01-15T10:00:00Z; got "${v}"`,
    );
  // The same rule as event timestamps: a range must not move with the server's time zone.
  if (isLocalTime(v)) throw badRequest(localTimeMessage(name, v));
  return d;
}

const truncate = (d: Date, bucket: Bucket) =>
  new Date(Math.floor(d.getTime() / BUCKET_MS[bucket]) * BUCKET_MS[bucket]);

/**
 * Without `from`: the start of the DEFAULT_POINTS buckets that end with the one holding the last
 * instant before `to` (exclusive). Counting back from `to` itself left a bucket out whenever `to`
 * fell on a bucket's start (`to=…T10:00:00Z` gave 23 hours, not 24).
 */
export function defaultFrom(to: Date, bucket: Bucket): Date {
  const last = truncate(new Date(to.getTime() - 1), bucket);
  const from = last.getTime() - (DEFAULT_POINTS[bucket] - 1) * BUCKET_MS[bucket];
  // Never before the first instant a `to` may name: a window reaching past year 1 was PostgreSQL's
  // "date-time it cannot store", a 400 about a value the caller never sent.
  return new Date(Math.max(from, EARLIEST_MS));
}
const EARLIEST_MS = Date.parse('0001-01-01T00:00:00Z');

export type Analytics = Awaited<ReturnType<typeof analytics>>;

const inFlight = new WeakMap<Pool, Map<string, Promise<Analytics>>>();

/**
 * analytics(), with identical reads in flight sharing one computation: a dashboard that many
 * people poll asks the same question at once, and each copy would run the same queries side by
 * side on the same cores, slowing all of them. A caller that joins gets an answer at most one
 * computation older than its request (tens of ms); figures already trail ingestion by the worker's
 * lag. Nothing is kept once the computation ends.
 */
export function sharedAnalytics(pool: Pool, q: AnalyticsQuery): Promise<Analytics> {
  let running = inFlight.get(pool);
  if (!running) {
    running = new Map();
    inFlight.set(pool, running);
  }
  const key = JSON.stringify([q.from ?? null, q.to ?? null, q.bucket, q.top]);
  const joined = running.get(key);
  if (joined) return joined;
  const mine = analytics(pool, q).finally(() => running.delete(key));
  running.set(key, mine);
  return mine;
}

export async function analytics(pool: Pool, q: AnalyticsQuery) {
  const from = parseDate('from', q.from);
  const to = parseDate('to', q.to);
  const seriesTo = to ?? new Date();
  if (from && from >= seriesTo)
    throw badRequest(
      to ? 'from must be earlier than to' : 'from must be earlier than now (to, when not given, is now)',
    );
  const ranged = Boolean(from || to);
  const seriesFrom = from ? truncate(from, q.bucket) : defaultFrom(seriesTo, q.bucket);
  const points = Math.ceil((seriesTo.getTime() - seriesFrom.getTime()) / BUCKET_MS[q.bucket]);
  if (points > MAX_POINTS)
    throw badRequest(
      `that range holds ${points} ${q.bucket} buckets; at most ${MAX_POINTS}: narrow from/to or use a coarser bucket`,
    );
  const grain = GRAIN[q.bucket];
  const [series, byAction, users, backlog, heartbeat] = await Promise.all([
    // The buckets with events, one row each with its counts by action as JSON: one index range scan
    // (a join per bucket from generate_series cost 3x as much); seriesByBucket fills the empty
    // buckets. A row per (bucket, action) instead made the driver parse 3,360 rows for 7 days by
    // hour, ~2.5 ms of the server's CPU.
    pool.query<{ t: number; by_action: Record<string, number> }>(
      `SELECT extract(epoch FROM bucket)::float8 * 1000 AS t, json_object_agg(action, n ORDER BY action) AS by_action
       FROM events_counts WHERE grain = $1 AND bucket >= $2 AND bucket < $3 GROUP BY bucket ORDER BY bucket`,
      [grain, seriesFrom, seriesTo],
    ),
    // A ranged total is the sum of the series just read; all-time totals come from daily rollups.
    ranged
      ? undefined
      : pool.query<{ action: string; n: number }>(
          `SELECT action, sum(n::float8)::bigint AS n FROM events_counts WHERE grain = 'd' GROUP BY action`,
        ),
    ranged ? usersInRange(pool, seriesFrom, seriesTo, q.top) : usersAllTime(pool, q.top),
    countBacklog(pool),
    pool.query<CronStatusRow>(
      `SELECT heartbeat_at, status, version, extract(epoch FROM now() - heartbeat_at)::float8 AS age,
         error, failed_at
       FROM events_cron_status WHERE service = 'cron'`,
    ),
  ]);
  const totals = new Map<string, number>();
  const add = (action: string, n: number) => totals.set(action, (totals.get(action) ?? 0) + n);
  if (byAction) for (const r of byAction.rows) add(r.action, r.n);
  else for (const r of series.rows) for (const [action, n] of Object.entries(r.by_action)) add(action, n);
  const ranking = [...totals].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  // fromEntries, not assignment: `obj["__proto__"] = n` sets the prototype, and an action of that
  // name vanished from the answer while its events stayed in the total.
  const eventsByAction: Record<string, number> = Object.fromEntries(ranking);
  const totalEvents = ranking.reduce((sum, [, n]) => sum + n, 0);
  const hb = heartbeat.rows[0];
  return {
    totalEvents,
    eventsByAction,
    eventsByUser: users.top,
    uniqueUsers: users.count,
    range: ranged ? { from: seriesFrom.toISOString(), to: seriesTo.toISOString() } : null,
    bucket: q.bucket,
    series: seriesByBucket(series.rows, seriesFrom.getTime(), points, BUCKET_MS[q.bucket]),
    backlog,
    cron: hb ? cronStatus(hb) : null,
  };
}

interface CronStatusRow {
  heartbeat_at: Date | null;
  status: string;
  version: string;
  age: number | null;
  error: string | null;
  failed_at: Date | null;
}

/** Seed 003's cron_status fields, plus why and when its last tick failed (null while healthy). */
function cronStatus(r: CronStatusRow) {
  return {
    // null only when the cron has failed on every tick so far.
    lastHeartbeat: r.heartbeat_at?.toISOString() ?? null,
    ageSeconds: r.age === null ? null : Math.round(r.age * 10) / 10,
    status: r.status,
    version: r.version,
    error: r.error,
    failedAt: r.failed_at?.toISOString() ?? null,
  };
}

/** One point per bucket from `from` on, with its total and its counts by action (empty: 0 and {}). */
function seriesByBucket(
  rows: { t: number; by_action: Record<string, number> }[],
  from: number,
  n: number,
  step: number,
) {
  const points = Array.from({ length: n }, (_, k) => ({
    t: new Date(from + k * step).toISOString(),
    count: 0,
    byAction: {} as Record<string, number>,
  }));
  for (const r of rows) {
    const point = points[Math.round((r.t - from) / step)]!;
    point.byAction = r.by_action;
    for (const action in r.by_action) point.count += r.by_action[action]!;
  }
  return points;
}

async function usersAllTime(pool: Pool, top: number) {
  const [rows, count] = await Promise.all([
    pool.query<{ user_id: string; n: number }>(
      // Ties in byte order, as the ranged query and the docs say, whatever the database's collation
      // (migration 010 orders its index alike, so this still reads the top N off the index).
      'SELECT user_id, n FROM events_user_counts ORDER BY n DESC, user_id COLLATE "C" LIMIT $1',
      [top],
    ),
    pool.query<{ n: number }>('SELECT count(*)::int AS n FROM events_user_counts'),
  ]);
  return { top: toMap(rows.rows), count: count.rows[0]!.n };
}

/** Partitions (by a hash of user_id) of the user rollups; migrations 005 and 008 make exactly this many. */
export const USER_ROLLUP_PARTITIONS = 2;

export interface UserCount {
  user_id: string;
  n: number;
}

/** Ties on n go to the userId first in byte order, as `ORDER BY user_id COLLATE "C"` does. */
const byCountThenId = (a: UserCount, b: UserCount) =>
  b.n - a.n || Buffer.compare(Buffer.from(a.user_id), Buffer.from(b.user_id));

/**
 * The top N of all users from each partition's top N: a user's rows all live in one partition, so
 * the overall top N is among the halves' and the user counts add up.
 */
export function mergeUserHalves(halves: { top: UserCount[]; count: number }[], top: number) {
  return {
    top: halves
      .flatMap((h) => h.top)
      .sort(byCountThenId)
      .slice(0, top),
    count: halves.reduce((a, h) => a + h.count, 0),
  };
}

/**
 * Users are rolled up per UTC day, so a ranged user figure covers the whole days the range touches.
 * Each partition of the rollups is asked on its own connection, side by side (see migration 005).
 * A range within one row of events_user_days (up to 8 days always) reads one row per user and adds
 * nothing up (migration 008).
 */
async function usersInRange(pool: Pool, from: Date, to: Date, top: number) {
  const rows = rowsOfRange(Math.floor(from.getTime() / DAY_MS), Math.floor((to.getTime() - 1) / DAY_MS));
  const count = countInRangeSql(rows, 3);
  const params = [rows.map((r) => r.start), top, ...count.params];
  const perUser =
    rows.length === 1
      ? (k: number) => `SELECT user_id, (${count.sql})::float8 AS n FROM events_user_days_h${k}
           WHERE start = ($1::date[])[1]`
      : (k: number) => `SELECT user_id, sum((${count.sql})::float8) AS n FROM events_user_days_h${k}
           WHERE start = ANY($1::date[]) GROUP BY user_id`;
  const half = async (k: number) => {
    const { rows: users } = await pool.query<UserCount & { users: number }>(
      `SELECT user_id, n::bigint AS n, count(*) OVER ()::int AS users FROM (${perUser(k)}) x
       WHERE n > 0 ORDER BY n DESC, user_id COLLATE "C" LIMIT $2`,
      params,
    );
    return { top: users, count: users[0]?.users ?? 0 };
  };
  const parts = Array.from({ length: USER_ROLLUP_PARTITIONS }, (_, k) => half(k));
  const merged = mergeUserHalves(await Promise.all(parts), top);
  return { top: toMap(merged.top), count: merged.count };
}

/** By fromEntries, so a user named `__proto__` is a key like any other (see eventsByAction). */
function toMap(rows: UserCount[]): Record<string, number> {
  return Object.fromEntries(rows.map((r) => [r.user_id, r.n]));
}
