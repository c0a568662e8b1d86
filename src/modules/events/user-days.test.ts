import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countInRangeSql, rowsOfRange } from './user-days.ts';

describe('ranged user figures: which rows of events_user_days and which day columns are read', () => {
  const day = (iso: string) => Date.parse(iso) / 86_400_000;

  it('when the range is the last 8 days, then one row per user, summing only its days in range', () => {
    // Tuesday 2026-11-24 to Tuesday 2026-12-01: days 2 to 9 of the row from Monday 2026-11-23.
    const rows = rowsOfRange(day('2026-11-24'), day('2026-12-01'));
    assert.deepEqual(rows, [
      { start: '2026-11-23', columns: ['d2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9'] },
    ]);
    assert.deepEqual(countInRangeSql(rows, 3), { sql: 'd2 + d3 + d4 + d5 + d6 + d7 + d8 + d9', params: [] });
  });

  it('when the range starts on a Sunday and lasts 8 days, then it still fits in one row', () => {
    const rows = rowsOfRange(day('2025-12-07'), day('2025-12-14'));
    assert.deepEqual(rows, [
      { start: '2025-12-01', columns: ['d7', 'd8', 'd9', 'd10', 'd11', 'd12', 'd13', 'd14'] },
    ]);
  });

  it('when a range is longer, then rows 14 days apart, partial ones matched by their start', () => {
    // Wednesday 2025-12-03 to Monday 2026-01-05: 34 days over three rows.
    const rows = rowsOfRange(day('2025-12-03'), day('2026-01-05'));
    assert.deepEqual(
      rows.map((r) => [r.start, r.columns.length]),
      [
        ['2025-12-01', 12],
        ['2025-12-15', 14],
        ['2025-12-29', 8],
      ],
    );
    const all = 'd1 + d2 + d3 + d4 + d5 + d6 + d7 + d8 + d9 + d10 + d11 + d12 + d13 + d14';
    assert.deepEqual(countInRangeSql(rows, 3), {
      sql: `CASE start WHEN $3::date THEN d3 + d4 + d5 + d6 + d7 + d8 + d9 + d10 + d11 + d12 + d13 + d14 WHEN $4::date THEN d1 + d2 + d3 + d4 + d5 + d6 + d7 + d8 ELSE ${all} END`,
      params: ['2025-12-01', '2025-12-29'],
    });
  });

  it('when a range covers whole rows, then every row adds all its days and none is matched', () => {
    const rows = rowsOfRange(day('2025-12-01'), day('2025-12-28'));
    assert.deepEqual(
      rows.map((r) => r.start),
      ['2025-12-01', '2025-12-15'],
    );
    assert.deepEqual(countInRangeSql(rows, 3).params, []);
  });
});
