// Unused codes (migration 007): generated codes wait in state 3 outside the codes_available index
// and are found through the primary key from the campaign's unused_from. These tests hold that
// bound to its invariant (no unused code below it) through generation, reservation, the advance
// and its race with a generation, and check that codes back in the pool are still handed out.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { apiOk, startPlatform, waitForLockWait } from '../../../test/helpers.ts';
import { prom } from '../../kit/metrics.ts';
import { Campaigns } from './campaigns.ts';
import { codesModule } from './index.ts';
import { createCodesMetrics } from './metrics.ts';
import { Reservations } from './reservations.ts';

describe('codes: unused codes and unused_from', async () => {
  const p = await startPlatform({ modules: [codesModule], role: 'api' });
  const call = apiOk(p);
  const pool = p.kit.pool;
  const campaigns = new Campaigns(pool);
  const reservations = () =>
    new Reservations(
      pool,
      createCodesMetrics(new prom.Registry(), async () => []),
      p.kit.log,
    );
  const create = async (id: string, prefix = '') => {
    await call('POST', '/api/campaigns', {
      id,
      name: id,
      format: { length: 6, alphabet: 'numeric', prefix },
    });
    return campaigns.get(id);
  };
  const bound = async (no: number) =>
    (
      await pool.query<{ from: string | null; smallest: string | null }>(
        `SELECT unused_from AS from,
           (SELECT min(code) FROM codes WHERE campaign_no = $1 AND state = 3) AS smallest
         FROM codes_campaigns WHERE no = $1`,
        [no],
      )
    ).rows[0]!;

  it('when codes are generated, reserved and generated again, then unused_from never passes the smallest unused code', async () => {
    const c = await create('bound');
    assert.deepEqual(await bound(c.no), { from: null, smallest: null }, 'a new campaign has no unused code');
    await call('POST', '/api/campaigns/bound/codes', { count: 40 });
    let b = await bound(c.no);
    assert.equal(b.from, b.smallest, 'a generation lowers the bound to its smallest code');

    const r = reservations();
    await r.reserve(c, { count: 25 });
    b = await bound(c.no);
    assert.ok(b.from! <= b.smallest!, `${b.from} <= ${b.smallest}`);
    assert.equal(await r.advanceUnusedFrom(c.no), b.smallest);
    assert.equal((await bound(c.no)).from, b.smallest, 'the advance raises it to the smallest unused code');

    await call('POST', '/api/campaigns/bound/codes', { count: 40 });
    b = await bound(c.no);
    assert.ok(b.from! <= b.smallest!, 'a later generation lowers it again when its codes sort lower');

    // Take every code: the bound becomes NULL and reserving more is a plain 409.
    await r.reserve(c, { count: 55 });
    await assert.rejects(
      r.reserve(c, { count: 1 }),
      (err: { statusCode?: number }) => err.statusCode === 409,
    );
    assert.equal(await r.advanceUnusedFrom(c.no), null);
    assert.deepEqual(await bound(c.no), { from: null, smallest: null });
  });

  it('when a generation commits between the advance reading and writing, then the generation wins', async () => {
    const c = await create('race', 'R-');
    await call('POST', '/api/campaigns/race/codes', { count: 20 });
    const r = reservations();
    await r.reserve(c, { count: 20 });
    // A generation in flight: an unused code below every other (no generated code is the bare
    // prefix), and the bound lowered to it.
    const gen = await pool.connect();
    try {
      await gen.query('BEGIN');
      await gen.query(`INSERT INTO codes (campaign_no, code, seq, state) VALUES ($1, 'R-', 1000, 3)`, [c.no]);
      await gen.query(
        `UPDATE codes_campaigns SET available = available + 1,
           unused_from = LEAST(unused_from, 'R-'), unused_epoch = unused_epoch + 1 WHERE no = $1`,
        [c.no],
      );
      // The advance reads the committed state (no unused code), then waits for the campaign row.
      const advance = r.advanceUnusedFrom(c.no);
      await waitForLockWait(pool, 'SET unused_from = $3', 'the advance to wait for the campaign row');
      await gen.query('COMMIT');
      assert.equal(await advance, undefined, 'the compare-and-set on unused_epoch lost');
    } finally {
      gen.release();
    }
    const b = await bound(c.no);
    assert.equal(b.from, 'R-');
    assert.equal(b.smallest, 'R-');
    const got = await r.reserve(c, { count: 1 });
    assert.deepEqual(got.codes, ['R-'], 'the code that arrived below the cursor is still found');
  });

  it('when a campaign has no unused codes, then reserving does not keep re-reading its bound, until codes are generated', async () => {
    const c = await create('imported-only');
    await call('POST', '/api/campaigns/imported-only/codes/import', ['100001', '100002', '100003', '100004']);
    const r = reservations();
    let advances = 0;
    const advance = r.advanceUnusedFrom.bind(r);
    r.advanceUnusedFrom = (no) => {
      advances++;
      return advance(no);
    };
    // The advances run in the background, one after another; wait for the chain.
    const settled = () => r['advancing'];
    // Explicit reserveIds take the general path, whose unused scan comes up short each time.
    for (const id of ['a', 'b', 'c']) {
      await r.reserve(c, { count: 1, reserveId: id });
      await settled();
    }
    assert.equal(advances, 1, 'one advance finds no unused code; the next short scans skip it');

    await call('POST', '/api/campaigns/imported-only/codes', { count: 2 });
    const got = await r.reserve(c, { count: 3, reserveId: 'd' });
    await settled();
    const imported = new Set(['100001', '100002', '100003', '100004']);
    assert.equal(got.codes.filter((code) => imported.has(code)).length, 1, 'two unused, one imported');
    assert.equal(advances, 2, 'once unused codes are found again, a short scan advances the bound');
    // That advance ran while the reservation was in flight, so it saw the codes still unused; the
    // next one finds none left.
    assert.equal(await advance(c.no), null);
  });

  it('when a campaign has imported, released and unused codes, then reservations take unused ones first and then the pool', async () => {
    const c = await create('mixed');
    await call('POST', '/api/campaigns/mixed/codes/import', ['111111', '222222', '333333']);
    await call('POST', '/api/campaigns/mixed/codes', { count: 3 });
    const r = reservations();
    const first = await r.reserve(c, { count: 3 });
    const imported = new Set(['111111', '222222', '333333']);
    assert.ok(
      first.codes.every((code) => !imported.has(code)),
      `unused codes first: ${first.codes}`,
    );
    const held = await r.reserve(c, { count: 2, reserveId: 'held' });
    assert.ok(
      held.codes.every((code) => imported.has(code)),
      'then the imported ones',
    );
    await call('DELETE', '/api/campaigns/mixed/reservations/held');
    const rest = await r.reserve(c, { count: 3 });
    assert.equal(new Set([...first.codes, ...rest.codes]).size, 6, 'the released codes come back');
    await assert.rejects(
      r.reserve(c, { count: 1 }),
      (err: { statusCode?: number }) => err.statusCode === 409,
    );
    const inv = (await call('GET', '/api/campaigns/mixed')).inventory;
    assert.deepEqual(inv, { available: 0, reserved: 6, assigned: 0, total: 6 });
  });
});
