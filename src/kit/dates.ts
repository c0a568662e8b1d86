// JavaScript's Date rolls impossible calendar fields over instead of refusing them: 2026-02-30 is
// read as 2026-03-02 and 24:00 as the next day's midnight. A caller who typed one meant something
// else, so inputs are checked field by field before Date reads them.

const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** True when the fields name a real time of day on a real date, from year 1 (PostgreSQL has no year 0). */
export function realCalendarFields(y: number, mo: number, d: number, h = 0, mi = 0, s = 0): boolean {
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return false;
  return d <= (mo === 2 && isLeap(y) ? 29 : DAYS[mo - 1]!);
}

const CALENDAR_PREFIX = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?/;

/**
 * True when `text` starts with `YYYY-MM-DD`, optionally followed by `Thh:mm` or `Thh:mm:ss`, and
 * those fields are real. The rest of the text (fraction, offset) is left to the parser after it.
 */
export function hasRealCalendarFields(text: string): boolean {
  const m = CALENDAR_PREFIX.exec(text);
  if (!m) return false;
  const [y, mo, d, h, mi, s] = m.slice(1).map((x) => (x === undefined ? 0 : Number(x)));
  return realCalendarFields(y!, mo!, d!, h, mi, s);
}

/** A date followed by a time of day: `2025-01-15T10:00` or `2025-01-15 10:00`. */
const TIME_OF_DAY = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/;
/** What names the zone after the time: Z, a numeric offset (+01:00, -0500, +01), or GMT/UTC. */
const ZONE = /z|[+-]\d|gmt|utc/i;

/**
 * True when `text` gives a time of day without saying which zone it is in ("2025-01-15T10:00:00",
 * "2025-01-15 10:00"). JavaScript's Date reads such a time in the process's local time zone, so
 * replicas in different zones would store different instants for the same text. A date alone is
 * not local: Date reads it as UTC midnight wherever it runs.
 */
export function isLocalTime(text: string): boolean {
  const m = TIME_OF_DAY.exec(text);
  return m !== null && !ZONE.test(text.slice(m[0].length));
}

/** The error text for a local time, naming what to add. */
export function localTimeMessage(name: string, text: string): string {
  return `${name} ${JSON.stringify(text.slice(0, 40))} has no UTC offset, so its instant would depend on the server's time zone: add Z for UTC (2025-01-15T10:00:00Z) or the offset it was taken in (2025-01-15T10:00:00+01:00)`;
}
