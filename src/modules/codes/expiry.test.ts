// Lazy expiry: every read of the inventory (list, one campaign, the codes_available gauge) treats
// reservations past their TTL as returned, before any cron has run; and the sweep inside reserve
// counts what it returns in codes_expired_total like the cron does. Role api: no cron and no jobs
// run in this platform, so nothing but the code under test can return a code to the pool.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPlatform } from '../../../test/helpers.ts';
import { codesModule } from './index.ts';

describe('codes: expired reservations before the expiry cron runs', async () => {
  const p = await startPlatform({ modules: [codesModule], role: 'api' });
  const call = (method: 'GET' | 'POST', url: string, payload?: object) =>
    p.app.inject({ method, url, headers: p.auth, ...(payload ? { payload } : {}) });
  const campaign = async (id: string, codes: number) => {
    const c = await call('POST', '/api/campaigns', {
      id,
      name: id,
      format: { length: 8, alphabet: 'numeric' },
    });
    assert.equal(c.statusCode, 201, c.body);
    assert.equal((await call('POST', `/api/campaigns/${id}/codes`, { count: codes })).statusCode, 201);
  };
  const reserve = async (id: string, body: object) => {
    const r = await call('POST', `/api/campaigns/${id}/reservations`, body);
    assert.equal(r.statusCode, 201, r.body);
    return r.json() as { reserveId: string; codes: string[]; expiresAt: string };
  };
  const untilPast = (expiresAt: string) => sleep(Math.max(0, Date.parse(expiresAt) - Date.now()) + 100);
  const metric = async (name: string, id: string) => {
    const text = (await p.app.inject('/metrics')).body;
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`campaign="${id}"`));
    return line === undefined ? undefined : Number(line.split(' ').at(-1));
  };
  const reservationState = async (id: string, reserveId: string) =>
    (
      await p.kit.pool.query(
        `SELECT state FROM codes_reservations
         WHERE reserve_id = $2 AND campaign_no = (SELECT no FROM codes_campaigns WHERE id = $1)`,
        [id, reserveId],
      )
    ).rows[0]?.state;

  it('when a reservation passes its TTL, then GET /api/campaigns, the codes_available gauge and GET /api/campaigns/:id report its codes available', async () => {
    await campaign('lazy', 5);
    // 3 s: the two reads below must still see it live on a loaded machine.
    const r = await reserve('lazy', { count: 2, ttlSeconds: 3 });
    const listed = async () =>
      (await call('GET', '/api/campaigns')).json().campaigns.find((c: { id: string }) => c.id === 'lazy')
        .inventory;
    assert.deepEqual(await listed(), { available: 3, reserved: 2, assigned: 0, total: 5 });
    assert.equal(await metric('codes_available', 'lazy'), 3);

    await untilPast(r.expiresAt);
    assert.deepEqual(await listed(), { available: 5, reserved: 0, assigned: 0, total: 5 });
    assert.equal(await metric('codes_available', 'lazy'), 5);
    // Those reads wrote nothing: the reservation is still waiting for a sweep.
    assert.equal(await reservationState('lazy', r.reserveId), 'reserved');

    assert.deepEqual((await call('GET', '/api/campaigns/lazy')).json().inventory, {
      available: 5,
      reserved: 0,
      assigned: 0,
      total: 5,
    });
  });

  it('when reserve has to sweep expired reservations to fill a request, then codes_expired_total counts them', async () => {
    await campaign('swept', 3);
    const first = await reserve('swept', { count: 3, ttlSeconds: 1 });
    assert.equal(await metric('codes_expired_total', 'swept'), undefined);
    await untilPast(first.expiresAt);
    // No read of the campaign in between: only reserve's own sweep can return the three codes.
    const second = await reserve('swept', { count: 3 });
    assert.deepEqual([...second.codes].sort(), [...first.codes].sort());
    assert.equal(await reservationState('swept', first.reserveId), 'expired');
    assert.equal(await metric('codes_expired_total', 'swept'), 3);
    assert.equal(await metric('codes_reserved_total', 'swept'), 6);
    assert.deepEqual((await call('GET', '/api/campaigns/swept')).json().inventory, {
      available: 0,
      reserved: 3,
      assigned: 0,
      total: 3,
    });
  });
});
