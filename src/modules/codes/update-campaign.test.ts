// PATCH /api/campaigns/:id: a campaign's name, reservation TTL and maxPerUser change after it is
// made (a forgotten maxPerUser used to mean a new campaign and a re-import). Two platforms share
// one database here, as two api processes do, because each caches a campaign's settings.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { processDatabase, startPlatform, waitFor } from '../../../test/helpers.ts';
import { prom } from '../../kit/metrics.ts';
import { CAMPAIGN_REFRESH_MS, Campaigns } from './campaigns.ts';
import { codesModule } from './index.ts';
import { createCodesMetrics } from './metrics.ts';
import { Reservations } from './reservations.ts';
import type { CodesService } from './service.ts';

describe('codes: changing a campaign', async () => {
  const db = await processDatabase();
  const one = await startPlatform({ modules: [codesModule], databaseUrl: db });
  const two = await startPlatform({ modules: [codesModule], databaseUrl: db });
  const call = (
    p: typeof one,
    method: 'GET' | 'POST' | 'PATCH',
    url: string,
    payload?: unknown,
    headers: Record<string, string> = {},
  ) =>
    p.app.inject({
      method,
      url,
      headers: { ...p.auth, ...headers },
      ...(payload === undefined ? {} : { payload: payload as object }),
    });
  const patch = (id: string, body: unknown, p = one) => call(p, 'PATCH', `/api/campaigns/${id}`, body);
  const campaign = async (id: string, codes: number) => {
    const made = await call(one, 'POST', '/api/campaigns', {
      id,
      name: id,
      format: { length: 10, alphabet: 'alphanumeric' },
    });
    assert.equal(made.statusCode, 201, made.body);
    assert.equal((await call(one, 'POST', `/api/campaigns/${id}/codes`, { count: codes })).statusCode, 201);
  };
  const reserve = async (p: typeof one, id: string, reserveId: string) => {
    const res = await call(p, 'POST', `/api/campaigns/${id}/reservations`, { count: 1, reserveId });
    assert.equal(res.statusCode, 201, res.body);
    return res.json() as { codes: string[]; expiresAt: string };
  };
  const assign = (p: typeof one, id: string, reserveId: string, userId: string) =>
    call(p, 'POST', `/api/campaigns/${id}/reservations/${reserveId}/assign`, { userId });

  it('when name, reservationTtlSeconds and maxPerUser are patched, then the campaign shows them and the format and codes stay', async () => {
    await campaign('edit', 20);
    const res = await patch('edit', { name: 'Spring sale', reservationTtlSeconds: 60, maxPerUser: 2 });
    assert.equal(res.statusCode, 200, res.body);
    const c = res.json();
    assert.deepEqual(
      [c.name, c.reservationTtlSeconds, c.maxPerUser, c.format.length, c.inventory.total],
      ['Spring sale', 60, 2, 10, 20],
    );
    const read = (await call(two, 'GET', '/api/campaigns/edit')).json();
    assert.deepEqual([read.name, read.reservationTtlSeconds, read.maxPerUser], ['Spring sale', 60, 2]);
    // Only what was named changes; null removes the limit.
    const cleared = (await patch('edit', { maxPerUser: null })).json();
    assert.deepEqual(
      [cleared.name, cleared.reservationTtlSeconds, cleared.maxPerUser],
      ['Spring sale', 60, null],
    );
  });

  it('when maxPerUser is set through one process, then the next assign through another is held to it', async () => {
    await campaign('limit', 10);
    // `two` caches the campaign without a limit first.
    await reserve(two, 'limit', 'first');
    assert.equal((await assign(two, 'limit', 'first', 'ann')).statusCode, 200);
    assert.equal((await patch('limit', { maxPerUser: 1 })).statusCode, 200);
    await reserve(two, 'limit', 'second');
    const refused = await assign(two, 'limit', 'second', 'ann');
    assert.equal(refused.statusCode, 409, refused.body);
    assert.match(refused.json().message, /maxPerUser is 1/);
    // Lifted again, the same assign goes through.
    assert.equal((await patch('limit', { maxPerUser: null })).statusCode, 200);
    assert.equal((await assign(two, 'limit', 'second', 'ann')).statusCode, 200);
  });

  it('when the reservation TTL is patched, then reservations made after it use it in every process, and earlier ones keep their expiry', async () => {
    await campaign('ttl', 10);
    const before = await reserve(two, 'ttl', 'before');
    assert.equal((await patch('ttl', { reservationTtlSeconds: 5 })).statusCode, 200);
    // The patching process applies it at once.
    const here = await reserve(one, 'ttl', 'here');
    assert.ok(Date.parse(here.expiresAt) - Date.now() <= 5_000, here.expiresAt);
    // The other reads the campaign again within CAMPAIGN_REFRESH_MS.
    let n = 0;
    await waitFor(
      async () => Date.parse((await reserve(two, 'ttl', `there-${n++}`)).expiresAt) - Date.now() <= 5_000,
      { what: 'a reservation with the new TTL in the other process', timeoutMs: CAMPAIGN_REFRESH_MS * 3 },
    );
    const kept = (await call(one, 'GET', '/api/campaigns/ttl/reservations/before')).json();
    assert.equal(kept.expiresAt, before.expiresAt);
  });

  it('when requests read before and after a TTL patch share one batch, then each gets the TTL it was asked under', async () => {
    await campaign('batch-ttl', 10);
    const before = await new Campaigns(one.kit.pool).get('batch-ttl'); // 900 s
    const after = { ...before, reservationTtlSeconds: 60 };
    const metrics = createCodesMetrics(new prom.Registry(), async () => []);
    const reservations = new Reservations(one.kit.pool, metrics, one.kit.log);
    // The first runs alone at once; the next two wait and go together, the older first.
    const [, old, fresh] = await Promise.all([
      reservations.reserve(before, { count: 1 }),
      reservations.reserve(before, { count: 1 }),
      reservations.reserve(after, { count: 1 }),
    ]);
    const seconds = (r: { expiresAt: string }) => (Date.parse(r.expiresAt) - Date.now()) / 1000;
    assert.ok(seconds(old!) > 800, old!.expiresAt);
    assert.ok(seconds(fresh!) <= 60, `the patched TTL, not the batch's first: ${fresh!.expiresAt}`);
  });

  it('when a patch is empty, names the format, or holds a bad value, then 400 says what to fix and nothing changes', async () => {
    await campaign('strict', 1);
    const cases: [unknown, RegExp][] = [
      [{}, /at least one of name, reservationTtlSeconds or maxPerUser/],
      [{ format: { length: 8 } }, /format cannot change/],
      // One line for a value-or-null, not ajv's three ending "must match a schema in anyOf".
      [{ maxPerUser: 0 }, /^body\/maxPerUser must be >= 1, or null$/],
      [{ maxPerUser: 2 ** 53 }, /^body\/maxPerUser must be <= 2147483647, or null$/],
      [{ maxPerUser: 'two' }, /^body\/maxPerUser must be integer, or null$/],
      [{ reservationTtlSeconds: 0 }, /reservationTtlSeconds/],
      [{ name: '' }, /name/],
      [{ id: 'other' }, /id/],
    ];
    for (const [body, message] of cases) {
      const res = await patch('strict', body);
      assert.equal(res.statusCode, 400, `${JSON.stringify(body)}: ${res.body}`);
      assert.match(res.json().message, message);
    }
    const c = (await call(one, 'GET', '/api/campaigns/strict')).json();
    assert.deepEqual([c.name, c.reservationTtlSeconds, c.maxPerUser], ['strict', 900, null]);
    const missing = await patch('nope', { name: 'x' });
    assert.equal(missing.statusCode, 404);
    assert.match(missing.json().message, /campaign nope not found/);
    const text = await call(one, 'PATCH', '/api/campaigns/strict', 'name=x', {
      'content-type': 'text/plain',
    });
    assert.equal(text.statusCode, 415, text.body);
  });

  it('when an RPC caller creates or patches a campaign, then the service checks it as the HTTP schema does', async () => {
    const rpc = one.kit.rpc.client<CodesService>('codes');
    await assert.rejects(
      rpc.updateCampaign({ campaignId: 'strict', name: '   ' }),
      (err: { statusCode?: number; message: string }) => err.statusCode === 400 && /name/.test(err.message),
    );
    await assert.rejects(
      rpc.updateCampaign({ campaignId: 'strict', maxPerUser: 1.5 }),
      (err: { statusCode?: number; message: string }) =>
        err.statusCode === 400 && /maxPerUser/.test(err.message),
    );
    // createCampaign too: an alphabet that was not a string was a 500 (TypeError) before.
    for (const [input, message] of [
      [
        { id: 'rpc-a', name: 'x', format: { length: 8, alphabet: 5 } },
        /^format must be \{length, alphabet, prefix\?\}/,
      ],
      [{ id: 'a/b', name: 'x', format: { length: 8, alphabet: 'safe' } }, /^id must be 1-200 characters/],
      [{ id: 'rpc-b', name: ' ', format: { length: 8, alphabet: 'safe' } }, /^name must be a string/],
      [
        { id: 'rpc-c', name: 'x', format: { length: 8, alphabet: 'safe' }, maxPerUser: 0 },
        /^maxPerUser must be/,
      ],
    ] as const)
      await assert.rejects(
        rpc.createCampaign(input as never),
        (err: { statusCode?: number; message: string }) =>
          err.statusCode === 400 && message.test(err.message),
        JSON.stringify(input),
      );
    const ok = await rpc.updateCampaign({ campaignId: 'strict', maxPerUser: 3 });
    assert.equal(ok.maxPerUser, 3);
    assert.ok(
      one.logs.lines.some((l) => l.msg === 'CODES_CAMPAIGN_UPDATED'),
      'the change is logged',
    );
  });
});
