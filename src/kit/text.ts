// Limits on text are documented in characters, and JSON schemas' maxLength counts code points, while
// JavaScript's length counts UTF-16 units: an emoji is two. One count for every hand-written check.

/** True when `v` has more than `max` characters (code points); a string within `max` units is never counted. */
export function longerThan(v: string, max: number): boolean {
  if (v.length <= max) return false;
  let n = 0;
  for (const _ of v) if (++n > max) return true;
  return false;
}

/** A UUID in its usual 8-4-4-4-12 hex spelling, either case. */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
