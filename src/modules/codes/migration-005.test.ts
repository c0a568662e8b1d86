// Migration 005 moved the list of a reservation's codes onto its row. A database upgraded from 004
// holds live reservations whose codes were known only through codes.reserve_id: the migration's
// backfill must give each reserved or assigned reservation exactly the codes it holds. This runs
// that backfill statement (read from the migration file) on reservations made by the API, with
// their lists wiped, and compares the result with the lists the API wrote.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { apiOk, startPlatform } from '../../../test/helpers.ts';
import { codesModule } from './index.ts';

const migration = readFileSync(new URL('./migrations/005_reservation_codes.sql', import.meta.url), 'utf8');
const backfill = migration.slice(
  migration.indexOf('UPDATE codes_reservations'),
  migration.indexOf('DROP INDEX'),
);

describe('codes: migration 005 backfills the codes of live reservations', async () => {
  const p = await startPlatform({ modules: [codesModule], role: 'api' });
  const call = apiOk(p);

  it('gives each reserved or assigned reservation the codes it holds, in allocation order', async () => {
    await call('POST', '/api/campaigns', {
      id: 'm005',
      name: 'm005',
      format: { length: 6, alphabet: 'numeric' },
    });
    await call('POST', '/api/campaigns/m005/codes', { count: 40 });
    const reserve = (count: number) =>
      call('POST', '/api/campaigns/m005/reservations', { count }) as Promise<{
        reserveId: string;
        codes: string[];
      }>;
    const [kept, assigned, released] = [
      await reserve(3),
      await reserve(1),
      await reserve(5),
      await reserve(2),
    ];
    await call('POST', `/api/campaigns/m005/reservations/${assigned.reserveId}/assign`, { userId: 'u1' });
    await call('DELETE', `/api/campaigns/m005/reservations/${released.reserveId}`);
    const lists = `SELECT reserve_id, state, codes FROM codes_reservations
                   WHERE state IN ('reserved', 'assigned') ORDER BY reserve_id`;
    const written = (await p.kit.pool.query(lists)).rows;
    assert.equal(written.length, 3);
    assert.deepEqual(written.find((r) => r.reserve_id === kept.reserveId)?.codes, kept.codes);

    await p.kit.pool.query(`UPDATE codes_reservations SET codes = '{}'`);
    await p.kit.pool.query(backfill);
    assert.deepEqual((await p.kit.pool.query(lists)).rows, written);
  });
});
