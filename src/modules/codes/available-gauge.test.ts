// The codes_available gauge covers every campaign: it once read the first 1,000 by id, so a
// campaign after them had no series and an alert on it running out could never fire.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform } from '../../../test/helpers.ts';
import { codesModule } from './index.ts';

describe('codes: the codes_available gauge', async () => {
  const p = await startPlatform({ modules: [codesModule], role: 'api' });
  const call = async (method: 'GET' | 'POST', url: string, payload?: object) => {
    const res = await p.app.inject({ method, url, headers: p.auth, ...(payload ? { payload } : {}) });
    assert.ok(res.statusCode < 300, res.body);
    return res.json();
  };
  const gauge = async () => {
    const text = (await p.app.inject('/metrics')).body;
    const series = new Map<string, number>();
    for (const m of text.matchAll(/^codes_available\{[^}]*campaign="([^"]+)"[^}]*\} (\S+)$/gm))
      series.set(m[1]!, Number(m[2]));
    return series;
  };

  it('when there are more than 1,000 campaigns, then each has its series, expired reservations counted available in their own campaign', async () => {
    // 1,500 campaigns written at once, each holding its number of available codes (the counter is
    // what the gauge reads; the codes themselves are not needed).
    await p.kit.pool.query(
      `INSERT INTO codes_campaigns (id, name, length, alphabet, alphabet_preset, reservation_ttl_seconds, fpe_key, available)
       SELECT 'bulk-' || lpad(i::text, 4, '0'), 'bulk', 8, '0123456789', 'numeric', 900, decode(repeat('00', 16), 'hex'), i
       FROM generate_series(1, 1500) i`,
    );
    // Two campaigns whose ids sort after all of them, each with a reservation: zz-a's past its TTL
    // and not swept (no cron in role api), zz-b's live.
    for (const [id, count] of [
      ['zz-a', 5],
      ['zz-b', 3],
    ] as const) {
      await call('POST', '/api/campaigns', { id, name: id, format: { length: 8, alphabet: 'numeric' } });
      await call('POST', `/api/campaigns/${id}/codes`, { count });
    }
    const expired = await call('POST', '/api/campaigns/zz-a/reservations', { count: 2 });
    await call('POST', '/api/campaigns/zz-b/reservations', { count: 1 });
    // Past its TTL without waiting for it (the codes' own expiry is not read by the gauge).
    await p.kit.pool.query(
      `UPDATE codes_reservations SET expires_at = now() - interval '1 minute' WHERE reserve_id = $1`,
      [expired.reserveId],
    );

    const series = await gauge();
    assert.equal(series.size, 1502, 'a series for every campaign');
    assert.equal(series.get('bulk-0001'), 1);
    assert.equal(series.get('bulk-1500'), 1500);
    assert.equal(series.get('zz-a'), 5, 'the expired reservation counts available');
    assert.equal(series.get('zz-b'), 2, 'the live reservation does not, nor does zz-a’s count here');

    // GET /api/campaigns reads the expired reservations once per page, counted by campaign: each
    // campaign gets its own, and one outside the page adds to none on it.
    const inventory = async (query: string) =>
      (await call('GET', `/api/campaigns?${query}`)).campaigns.map(
        (c: { id: string; inventory: { available: number; reserved: number } }) => [
          c.id,
          c.inventory.available,
          c.inventory.reserved,
        ],
      );
    assert.deepEqual(await inventory('after=bulk-1499&limit=2'), [
      ['bulk-1500', 1500, 0],
      ['zz-a', 5, 0],
    ]);
    assert.deepEqual(await inventory('after=zz-a&limit=5'), [['zz-b', 2, 1]]);
  });
});
