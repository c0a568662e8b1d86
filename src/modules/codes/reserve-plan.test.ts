// codes_reserve_unused (migrations 006–008) runs one generic plan per connection, made at its first call
// and kept whatever the tables grow to. These tests read that plan (auto_explain, on the statement
// inside the function) when it is made on an empty table and used after 20,000 codes arrive
// without an ANALYZE: it must reach codes through indexes only, with no join and no scan of a
// campaign, or a plan made on a fresh install would scan every code on every reservation later;
// and with no subplan, which the generic plan sizes for a tenth of the campaign (migration 008).
// They also check what the function writes when one call serves several requests, and that three
// reservers racing through it (as three processes would) never hand out a code twice.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { apiOk, startPlatform } from '../../../test/helpers.ts';
import { prom } from '../../kit/metrics.ts';
import { Campaigns } from './campaigns.ts';
import { codesModule } from './index.ts';
import { createCodesMetrics } from './metrics.ts';
import { Reservations } from './reservations.ts';

describe('codes: the reserve function', async () => {
  const p = await startPlatform({ modules: [codesModule], role: 'api' });
  const call = apiOk(p);
  const campaigns = new Campaigns(p.kit.pool);
  const campaignNo = async (id: string) => (await campaigns.get(id)).no;

  it('keeps an index-only plan made on an empty table after the table grows', async () => {
    await call('POST', '/api/campaigns', {
      id: 'plan',
      name: 'plan',
      format: { length: 8, alphabet: 'numeric' },
    });
    const no = await campaignNo('plan');
    const client = await p.kit.pool.connect();
    const plans: string[] = [];
    client.on('notice', (n) => {
      // The first line is the run's duration; the rest is the plan.
      if (n.message?.includes('FOR UPDATE SKIP LOCKED')) plans.push(n.message.replace(/^duration.*\n/, ''));
    });
    try {
      await client.query(`LOAD 'auto_explain'`);
      await client.query(`SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
        SET auto_explain.log_level = notice; SET client_min_messages = notice`);
      const reserve = (n: number) =>
        client.query('SELECT * FROM codes_reserve_unused($1, $2, $3, $4, NULL, 0, $5)', [
          no,
          Array.from({ length: n }, (_, i) => `plan-${plans.length}-${i}`),
          Array(n).fill(1),
          Array(n).fill(60),
          n,
        ]);
      assert.equal((await reserve(3)).rowCount, 0, 'an empty campaign has nothing to reserve');
      // Two answers at once (10,000 is the most one request generates without a job).
      for (let i = 0; i < 2; i++) await call('POST', '/api/campaigns/plan/codes', { count: 10_000 });
      assert.equal((await reserve(5)).rowCount, 5);
    } finally {
      client.release(true);
    }
    assert.equal(plans.length, 2);
    for (const plan of plans) {
      assert.doesNotMatch(plan, /Seq Scan|Bitmap|Join|Nested Loop|SubPlan/, plan);
      assert.match(plan, /Index Scan using codes_pkey on codes/, plan);
      assert.match(plan, /Index Cond: \(\(campaign_no = \$1\) AND \(code = ANY/, plan);
    }
    assert.equal(plans[0], plans[1], 'the plan is made once and kept');
  });

  it('gives each request of a call its own codes, reservation row and expiry', async () => {
    await call('POST', '/api/campaigns', {
      id: 'split',
      name: 'split',
      format: { length: 6, alphabet: 'numeric' },
    });
    await call('POST', '/api/campaigns/split/codes', { count: 50 });
    const no = await campaignNo('split');
    const ids = ['a', 'b', 'c'];
    const { rows } = await p.kit.pool.query(
      'SELECT reserve_id, code, seq, expires_at FROM codes_reserve_unused($1, $2, $3, $4, NULL, 0, 6)',
      [no, ids, [2, 1, 3], [60, 120, 600]],
    );
    assert.equal(rows.length, 6);
    const bySeq = rows.sort((a, b) => a.seq - b.seq).map((r) => r.reserve_id);
    assert.deepEqual(bySeq, ['a', 'a', 'b', 'c', 'c', 'c'], 'requests take consecutive codes in order');
    const stored = await p.kit.pool.query(
      `SELECT r.reserve_id, r.count, r.codes, extract(epoch FROM r.expires_at - now())::int AS ttl,
         (SELECT array_agg(k.code ORDER BY k.seq) FROM codes k
          WHERE k.campaign_no = r.campaign_no AND k.reserve_id = r.reserve_id AND k.state = 1
            AND k.expires_at = r.expires_at) AS marked
       FROM codes_reservations r WHERE r.campaign_no = $1 ORDER BY r.reserve_id`,
      [no],
    );
    const codesOf = (id: string) => rows.filter((r) => r.reserve_id === id).map((r) => r.code);
    assert.deepEqual(
      stored.rows.map((r) => [r.reserve_id, r.count, r.ttl]),
      [
        ['a', 2, 60],
        ['b', 1, 120],
        ['c', 3, 600],
      ],
    );
    for (const r of stored.rows) {
      assert.deepEqual(r.codes, codesOf(r.reserve_id));
      assert.deepEqual(r.marked, codesOf(r.reserve_id), 'codes rows carry their reservation and expiry');
    }
    const view = await call('GET', '/api/campaigns/split');
    assert.equal(view.inventory?.reserved ?? view.reserved, 6);
  });

  it('says which codes were unused and which came back to the pool when one call takes both', async () => {
    await call('POST', '/api/campaigns', {
      id: 'mixed',
      name: 'mixed',
      format: { length: 6, alphabet: 'numeric' },
    });
    await call('POST', '/api/campaigns/mixed/codes', { count: 10 });
    const back = await call('POST', '/api/campaigns/mixed/reservations', { count: 3 });
    await call('DELETE', `/api/campaigns/mixed/reservations/${back.reserveId}`);
    const no = await campaignNo('mixed');
    const { rows } = await p.kit.pool.query(
      'SELECT reserve_id, code, unused FROM codes_reserve_unused($1, $2, $3, $4, NULL, 0, 9)',
      [no, ['x', 'y'], [4, 5], [60, 60]],
    );
    assert.equal(rows.length, 9, 'the 7 unused codes, then 2 of the 3 released ones');
    const released = new Set<string>(back.codes);
    for (const r of rows) assert.equal(r.unused, !released.has(r.code), r.code);
    assert.equal(rows.filter((r) => !r.unused).length, 2);
    const marked = await p.kit.pool.query(
      `SELECT count(*)::int AS n FROM codes WHERE campaign_no = $1 AND state = 1 AND reserve_id = ANY ('{x,y}')`,
      [no],
    );
    assert.equal(marked.rows[0].n, 9, 'both kinds are marked reserved under their request');
  });

  it('hands every code out once when three reservers (batches and cursors of their own, as three processes have) race to empty a campaign', async () => {
    const total = 2000;
    await call('POST', '/api/campaigns', {
      id: 'three',
      name: 'three',
      format: { length: 8, alphabet: 'numeric' },
    });
    await call('POST', '/api/campaigns/three/codes', { count: total });
    const campaign = await campaigns.get('three');
    const reservers = Array.from(
      { length: 3 },
      () =>
        new Reservations(
          p.kit.pool,
          createCodesMetrics(new prom.Registry(), async () => []),
          p.kit.log,
        ),
    );
    const seen: string[] = [];
    let conflicts = 0;
    await Promise.all(
      reservers.flatMap((r, k) =>
        Array.from({ length: 24 }, async (_, client) => {
          for (let i = 0; ; i++) {
            try {
              seen.push(...(await r.reserve(campaign, { count: 1 + ((k + client + i) % 3) })).codes);
            } catch (err) {
              assert.equal((err as { statusCode?: number }).statusCode, 409, String(err));
              conflicts++;
              return;
            }
          }
        }),
      ),
    );
    // Each loop stops at its first 409 (fewer codes left than it asked for): drain the rest.
    for (;;) {
      try {
        seen.push(...(await reservers[0]!.reserve(campaign, { count: 1 })).codes);
      } catch {
        break;
      }
    }
    assert.ok(conflicts > 0);
    assert.equal(new Set(seen).size, seen.length, 'no code handed out twice');
    assert.equal(seen.length, total, 'the campaign is exactly drained');
    const { rows } = await p.kit.pool.query(
      `SELECT (SELECT count(*)::int FROM codes k JOIN codes_reservations r
                 ON r.campaign_no = k.campaign_no AND r.reserve_id = k.reserve_id AND k.code = ANY (r.codes)
               WHERE k.campaign_no = c.no AND k.state = 1) AS listed,
              c.available, c.reserved
       FROM codes_campaigns c WHERE c.id = 'three'`,
    );
    assert.deepEqual(rows[0], { listed: total, available: 0, reserved: total });
  });
});
