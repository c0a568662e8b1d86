// utcIso formats PostgreSQL's text of a UTC timestamp without building a Date (GET of one code
// reads four timestamps a row); its output must be the string Date#toISOString gives, with
// milliseconds truncated. The reference is PostgreSQL's own to_char of the same value.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { UTC_TEXT_TYPES, utcIso } from '../../src/kit/db.ts';
import { freshDatabase, testPool } from '../helpers.ts';

const ISO_MS = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`;

describe('utcIso', () => {
  it('when PostgreSQL sends UTC timestamps as text, then they read as Date#toISOString writes them', async () => {
    const pool = testPool(await freshDatabase({ empty: true }));
    after(() => pool.end());
    const fixed = [
      '2026-12-02 12:55:39+00', // whole second: PostgreSQL prints no fraction
      '2026-12-02 12:55:39.5+00', // trailing zeros trimmed
      '2026-12-02 12:55:39.05+00',
      '2026-12-02 12:55:39.145+00',
      '2026-12-02 12:55:39.999999+00', // truncated, never rounded up into the next second
      '2026-12-02 23:59:59.000001+05:30', // another zone in, UTC out
      '0500-01-01 00:00:00.25+00', // a year below 1000 keeps its four digits
    ];
    const { rows } = await pool.query({
      text: `SELECT t AT TIME ZONE 'UTC' AS utc, to_char(t AT TIME ZONE 'UTC', ${ISO_MS}) AS expected
             FROM unnest($1::timestamptz[] || ARRAY(
               SELECT now() - random() * interval '100 years' FROM generate_series(1, 500))) AS t`,
      values: [fixed],
      types: UTC_TEXT_TYPES,
    });
    assert.equal(rows.length, fixed.length + 500);
    for (const r of rows) {
      assert.equal(typeof r.utc, 'string', 'UTC_TEXT_TYPES leaves timestamps as text');
      assert.equal(utcIso(r.utc), r.expected, `from ${r.utc}`);
    }
    assert.equal(utcIso(rows[3].utc), '2026-12-02T12:55:39.145Z');
    assert.equal(utcIso(rows[4].utc), '2026-12-02T12:55:39.999Z');
    assert.equal(utcIso(rows[5].utc), '2026-12-02T18:29:59.000Z');
    assert.equal(utcIso(null), null);
  });

  it('when a timestamp is outside years 0–9999, then it still reads as Date#toISOString writes it', async () => {
    const pool = testPool(await freshDatabase({ empty: true }));
    after(() => pool.end());
    const { rows } = await pool.query({
      text: `SELECT t AT TIME ZONE 'UTC' AS utc
             FROM unnest(ARRAY['10000-01-02 03:04:05.678+00', '0044-03-15 12:00:00+00 BC']::timestamptz[]) AS t`,
      types: UTC_TEXT_TYPES,
    });
    assert.deepEqual(
      rows.map((r) => utcIso(r.utc)),
      ['+010000-01-02T03:04:05.678Z', '-000043-03-15T12:00:00.000Z'],
    );
  });
});
