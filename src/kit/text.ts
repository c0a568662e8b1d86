// Limits on text are documented in characters, and JSON schemas' maxLength counts code points, while
// JavaScript's length counts UTF-16 units: an emoji is two. One count for every hand-written check.

/** True when `v` has more than `max` characters (code points); a string within `max` units is never counted. */
export function longerThan(v: string, max: number): boolean {
  if (v.length <= max) return false;
  let n = 0;
  for (const _ of v) if (++n > max) return true;
  return false;
}
