// Users' event counts per UTC day, for ranged top-users questions (migration 008). A row holds one
// user's counts for the 14 days from `start`, a Monday, in columns d1 … d14. A row starts every
// Monday, so each day is held twice (as d1–d7 of its week's row and d8–d14 of the row before), and
// any range of up to 8 days (and any 14 days from a Monday) lies within a single row: a "last 7
// days" question reads one row per user and needs no aggregation. Longer ranges read every other
// row (non-overlapping, 14 days apart) and add each user's rows up. Writers (the worker, the
// bench) add days through the migration's events_user_days_add, so the rows are written one way.

export const SPAN_DAYS = 14;
export const DAY_COLUMNS = Array.from({ length: SPAN_DAYS }, (_, k) => `d${k + 1}`);

/** A UTC day; day numbers here are days since the epoch. */
export const DAY_MS = 86_400_000;
const isoDay = (day: number) => new Date(day * DAY_MS).toISOString().slice(0, 10);
/** Epoch day 0 was a Thursday, so Monday-based weeks start where (day + 3) % 7 is 0. */
const mondayOf = (day: number) => day - ((day + 3) % 7);

export interface RowOfRange {
  /** The row's first day (a Monday), YYYY-MM-DD. */
  start: string;
  /** Its day columns inside the range. */
  columns: string[];
}

/**
 * The rows that hold the UTC days first … last (epoch day numbers, inclusive), each day in exactly
 * one of them, and which of their columns are inside the range: one row when the range fits in the
 * 14 days from the Monday of its first day, else rows 14 days apart from that Monday on.
 */
export function rowsOfRange(first: number, last: number): RowOfRange[] {
  const rows: RowOfRange[] = [];
  for (let start = mondayOf(first); start <= last; start += SPAN_DAYS) {
    const columns = DAY_COLUMNS.filter((_, k) => start + k >= first && start + k <= last);
    rows.push({ start: isoDay(start), columns });
  }
  return rows;
}

/**
 * SQL for a row's count inside the range: the sum of its day columns in range. Only the first and
 * last rows can be partial; every other row adds all its days. Partial rows are matched on
 * parameters from `$firstParam` on (their starts, in `params`); the SQL itself holds only column
 * names from DAY_COLUMNS.
 */
export function countInRangeSql(rows: RowOfRange[], firstParam: number) {
  const sum = (columns: readonly string[]) => columns.join(' + ');
  const partial = rows.filter((r) => r.columns.length < SPAN_DAYS);
  if (partial.length === 0) return { sql: sum(DAY_COLUMNS), params: [] };
  if (rows.length === 1) return { sql: sum(partial[0]!.columns), params: [] };
  const whens = partial.map((r, k) => `WHEN $${firstParam + k}::date THEN ${sum(r.columns)}`);
  return {
    sql: `CASE start ${whens.join(' ')} ELSE ${sum(DAY_COLUMNS)} END`,
    params: partial.map((r) => r.start),
  };
}
