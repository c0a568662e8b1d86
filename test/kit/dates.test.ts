// hasRealCalendarFields refuses the dates JavaScript's Date rolls over (2026-02-30 → 03-02). The
// reference for which dates exist is PostgreSQL's own date input, where the events end up.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { hasRealCalendarFields, isLocalTime } from '../../src/kit/dates.ts';
import { freshDatabase, testPool } from '../helpers.ts';

const pad = (n: number, width: number) => String(n).padStart(width, '0');

describe('hasRealCalendarFields', () => {
  it('when given every day 0–32 of months 0–13 around leap-year rules, then it agrees with PostgreSQL', async () => {
    const pool = testPool(await freshDatabase({ empty: true }));
    after(() => pool.end());
    const dates: string[] = [];
    for (const y of [0, 1, 1900, 2000, 2023, 2024, 2100, 9999])
      for (let m = 0; m <= 13; m++)
        for (let d = 0; d <= 32; d++) dates.push(`${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}`);
    const client = await pool.connect();
    try {
      await client.query(`CREATE FUNCTION pg_temp.is_date(t text) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN PERFORM t::date; RETURN true; EXCEPTION WHEN others THEN RETURN false; END $$`);
      const { rows } = await client.query<{ t: string; ok: boolean }>(
        'SELECT t, pg_temp.is_date(t) AS ok FROM unnest($1::text[]) AS t',
        [dates],
      );
      const disagree = rows.filter((r) => hasRealCalendarFields(r.t) !== r.ok).map((r) => r.t);
      assert.deepEqual(disagree, []);
      assert.equal(rows.filter((r) => r.ok).length, 7 * 365 + 2); // 2000 and 2024 are leap years
    } finally {
      client.release();
    }
  });

  it('when the time of day is out of range, then false (PostgreSQL would read 24:00 as the next day)', () => {
    for (const ok of [
      '2026-01-01T00:00',
      '2026-01-01T23:59:59Z',
      '2026-01-01 12:30',
      '2026-01-01T10:00:00.5+02:00',
    ])
      assert.equal(hasRealCalendarFields(ok), true, ok);
    for (const bad of [
      '2026-01-01T24:00:00Z',
      '2026-01-01T10:60',
      '2026-01-01T10:00:60Z',
      'yesterday',
      '26-01-01',
    ])
      assert.equal(hasRealCalendarFields(bad), false, bad);
  });
});

/** Date.parse of each text in a Node process running in time zone `tz`. */
function parsedIn(tz: string, texts: string[]): (number | null)[] {
  const out = execFileSync(
    process.execPath,
    [
      '-e',
      'console.log(JSON.stringify(JSON.parse(process.argv[1]).map((t) => Date.parse(t))))',
      JSON.stringify(texts),
    ],
    { env: { ...process.env, TZ: tz }, encoding: 'utf8' },
  );
  return JSON.parse(out);
}

describe('isLocalTime', () => {
  it('when Date reads a text differently in New York and in UTC, then isLocalTime says so, and only then', () => {
    const texts = [
      // local: Date takes the process's zone
      '2025-01-15T10:00:00',
      '2025-01-15T10:00',
      '2025-01-15 10:00',
      '2025-01-15T10:00:00.250',
      // an instant wherever it is read
      '2025-01-15',
      '2025-01-15T10:00:00Z',
      '2025-01-15T10:00:00.250z',
      '2025-01-15T10:00:00+01:00',
      '2025-01-15T10:00:00-0500',
      '2025-01-15 10:00 GMT',
    ];
    const ny = parsedIn('America/New_York', texts);
    const utc = parsedIn('UTC', texts);
    for (const [i, text] of texts.entries()) {
      assert.notEqual(ny[i], null, `${text} parses`);
      assert.equal(isLocalTime(text), ny[i] !== utc[i], text);
    }
    assert.equal(texts.filter(isLocalTime).length, 4);
  });
});
