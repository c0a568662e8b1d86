import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { startPlatform } from '../../../test/helpers.ts';
import { codesModule } from './index.ts';
import type { CodesService } from './service.ts';

describe('codes: reserve, assign, release and expiry', async () => {
  const p = await startPlatform({ modules: [codesModule], listen: true });
  const rpc = p.kit.rpc.client<CodesService>('codes');
  const call = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object) =>
    p.app.inject({ method, url, headers: p.auth, ...(payload ? { payload } : {}) });
  const campaign = async (id: string, codes: number, extra: Record<string, unknown> = {}) => {
    const c = await call('POST', '/api/campaigns', {
      id,
      name: id,
      format: { length: 10, alphabet: 'alphanumeric' },
      ...extra,
    });
    assert.equal(c.statusCode, 201, c.body);
    if (codes)
      assert.equal((await call('POST', `/api/campaigns/${id}/codes`, { count: codes })).statusCode, 201);
  };
  const countsInDb = async (id: string) => {
    const { rows } = await p.kit.pool.query(
      `SELECT k.available, k.reserved, k.assigned,
         (SELECT count(*) FILTER (WHERE state IN (0, 3)) FROM codes WHERE campaign_no = k.no)::int AS a,
         (SELECT count(*) FILTER (WHERE state = 1) FROM codes WHERE campaign_no = k.no)::int AS r,
         (SELECT count(*) FILTER (WHERE state = 2) FROM codes WHERE campaign_no = k.no)::int AS s
       FROM codes_campaigns k WHERE k.id = $1`,
      [id],
    );
    return rows[0];
  };

  it('when a reserveId is repeated, then codes_reserved_total counts its codes once, and a repeat with another count is 409', async () => {
    await campaign('repeat', 10);
    const reservedTotal = async () => {
      const text = (await p.app.inject('/metrics')).body;
      const line = text
        .split('\n')
        .find((l) => l.startsWith('codes_reserved_total{') && l.includes('campaign="repeat"'));
      return Number(line?.split(' ').at(-1));
    };
    for (let i = 0; i < 3; i++) {
      const r = await call('POST', '/api/campaigns/repeat/reservations', { count: 2, reserveId: 'a' });
      assert.equal(r.statusCode, 201, r.body);
    }
    assert.equal(await reservedTotal(), 2, 'two codes reserved, however often the request was retried');
    assert.equal(
      (await call('POST', '/api/campaigns/repeat/reservations/a/assign', { userId: 'u' })).statusCode,
      200,
    );
    assert.equal(
      (await call('POST', '/api/campaigns/repeat/reservations', { count: 2, reserveId: 'a' })).statusCode,
      201,
    );
    assert.equal(await reservedTotal(), 2, 'nor after it was assigned');
    const other = await call('POST', '/api/campaigns/repeat/reservations', { count: 5, reserveId: 'a' });
    assert.equal(other.statusCode, 409, other.body);
    assert.equal(
      other.json().message,
      'reservation a already holds 2 code(s), not 5: repeat a reserve with the count it asked for, or use a new reserveId',
    );
  });

  it('when codes are reserved, assigned and released, then each step answers per the contract', async () => {
    await campaign('flow', 10);
    const r = await call('POST', '/api/campaigns/flow/reservations', { count: 3, reserveId: 'order-1' });
    assert.equal(r.statusCode, 201, r.body);
    const res = r.json();
    assert.equal(res.reserveId, 'order-1');
    assert.equal(res.codes.length, 3);
    assert.ok(Date.parse(res.expiresAt) > Date.now());
    const same = (
      await call('POST', '/api/campaigns/flow/reservations', { count: 3, reserveId: 'order-1' })
    ).json();
    assert.deepEqual([...same.codes].sort(), [...res.codes].sort());
    const held = await call('GET', '/api/campaigns/flow/reservations/order-1');
    assert.equal(held.statusCode, 200, held.body);
    assert.deepEqual(
      { ...(held.json() as object), createdAt: undefined },
      {
        reserveId: 'order-1',
        state: 'reserved',
        codes: [...res.codes].sort(),
        userId: null,
        createdAt: undefined,
        expiresAt: res.expiresAt,
        assignedAt: null,
        endedAt: null,
      },
    );
    const looked = (await call('GET', `/api/campaigns/flow/codes/${res.codes[0]}`)).json();
    assert.equal(looked.state, 'reserved');
    assert.equal(looked.reserveId, 'order-1');
    const a = await call('POST', '/api/campaigns/flow/reservations/order-1/assign', { userId: 'u1' });
    assert.equal(a.statusCode, 200, a.body);
    assert.deepEqual(a.json().codes, [...res.codes].sort());
    assert.equal(a.json().userId, 'u1');
    const owned = (await call('GET', `/api/campaigns/flow/codes/${res.codes[0]}`)).json();
    assert.deepEqual(
      [owned.state, owned.expiresAt, owned.reservedAt !== null],
      ['assigned', null, true],
      'an assigned code shows no expiry (its reservation keeps it, for the record)',
    );
    assert.equal(
      (await call('POST', '/api/campaigns/flow/reservations/order-1/assign', { userId: 'u1' })).statusCode,
      200,
    );
    const mine = (await call('GET', '/api/campaigns/flow/users/u1/codes')).json();
    assert.deepEqual(
      mine.codes.map((c: { code: string; state: string; userId: string }) => [c.code, c.state, c.userId]),
      [...res.codes].sort().map((c: string) => [c, 'assigned', 'u1']),
    );
    assert.equal(mine.next, null);
    const page1 = (await call('GET', '/api/campaigns/flow/users/u1/codes?limit=2')).json();
    assert.deepEqual(
      page1.codes.map((c: { code: string }) => c.code),
      [...res.codes].sort().slice(0, 2),
    );
    const page2 = (
      await call('GET', `/api/campaigns/flow/users/u1/codes?limit=2&after=${page1.next}`)
    ).json();
    assert.deepEqual(
      [page2.codes.map((c: { code: string }) => c.code), page2.next],
      [[...res.codes].sort().slice(2), null],
    );
    // `after` is a code, read as lookups read one: typed in the other case it still pages on.
    const folded = (
      await call('GET', `/api/campaigns/flow/users/u1/codes?limit=2&after=${page1.next.toLowerCase()}`)
    ).json();
    assert.deepEqual(folded.codes, page2.codes);
    assert.deepEqual((await call('GET', '/api/campaigns/flow/users/nobody/codes')).json(), {
      userId: 'nobody',
      codes: [],
      next: null,
    });
    const badLimit = await call('GET', '/api/campaigns/flow/users/u1/codes?limit=0');
    assert.equal(badLimit.statusCode, 400);
    assert.match(badLimit.json().message, /limit/);
    assert.equal((await call('GET', '/api/campaigns/missing/users/u1/codes')).statusCode, 404);
    const assigned = (await rpc.getReservation({ campaignId: 'flow', reserveId: 'order-1' })) as any;
    assert.equal(assigned.state, 'assigned');
    assert.equal(assigned.userId, 'u1');
    assert.equal(assigned.assignedAt, a.json().assignedAt);
    const other = await call('POST', '/api/campaigns/flow/reservations/order-1/assign', { userId: 'u2' });
    assert.equal(other.statusCode, 409);
    assert.match(
      other.json().message,
      /already assigned to another user, and an assignment is final: reserve new codes for this user$/,
    );
    assert.deepEqual((await call('DELETE', '/api/campaigns/flow/reservations/order-1')).json(), {
      released: 0,
    });
    const r2 = (await call('POST', '/api/campaigns/flow/reservations', { count: 2 })).json();
    assert.match(r2.reserveId, /^[0-9a-f-]{36}$/);
    const rel = await call('DELETE', `/api/campaigns/flow/reservations/${r2.reserveId}`);
    assert.deepEqual(rel.json(), { released: 2 });
    const ended = (await call('GET', `/api/campaigns/flow/reservations/${r2.reserveId}`)).json();
    assert.equal(ended.state, 'released');
    assert.deepEqual(ended.codes, [...r2.codes].sort(), 'the codes it held, for the record');
    assert.ok(Date.parse(ended.endedAt) >= Date.parse(ended.createdAt));
    assert.equal((await call('GET', `/api/campaigns/flow/codes/${r2.codes[0]}`)).json().state, 'available');
    const late = await call('POST', `/api/campaigns/flow/reservations/${r2.reserveId}/assign`, {
      userId: 'u9',
    });
    assert.equal(late.statusCode, 409);
    assert.match(
      late.json().message,
      /: it was released and its codes went back to the pool: reserve again$/,
    );
    const inv = (await call('GET', '/api/campaigns/flow')).json().inventory;
    assert.deepEqual(inv, { available: 7, reserved: 0, assigned: 3, total: 10 });
  });

  it('when inventory is short, unknown or not reserved, then 409 / 404 say what to do', async () => {
    const short = await call('POST', '/api/campaigns/flow/reservations', { count: 8 });
    assert.equal(short.statusCode, 409);
    assert.match(short.json().message, /has 7 code\(s\) available, fewer than the 8 asked for/);
    assert.equal((await call('GET', '/api/campaigns/flow')).json().inventory.available, 7);
    const unknown = await call('POST', '/api/campaigns/flow/reservations/nope/assign', { userId: 'u' });
    assert.equal(unknown.statusCode, 409);
    assert.match(unknown.json().message, /no such reservation.*reserve codes first/);
    const rel = await call('DELETE', '/api/campaigns/flow/reservations/nope');
    assert.equal(rel.statusCode, 404);
    assert.match(rel.json().message, /reservation nope not found/);
    const get = await call('GET', '/api/campaigns/flow/reservations/nope');
    assert.equal(get.statusCode, 404);
    assert.match(
      get.json().message,
      /reservation nope not found in campaign flow: use the reserveId reserve returned/,
    );
    const badGet = await call('GET', '/api/campaigns/flow/reservations/has%20space');
    assert.equal(badGet.statusCode, 400);
    assert.match(badGet.json().message, /reserveId/);
    await assert.rejects(rpc.getReservation({ campaignId: 'flow', reserveId: 'a b' }), { statusCode: 400 });
    assert.equal((await call('GET', '/api/campaigns/missing/reservations/x')).statusCode, 404);
    const badId = await call('POST', '/api/campaigns/flow/reservations', {
      count: 1,
      reserveId: 'has space',
    });
    assert.equal(badId.statusCode, 400);
    assert.match(badId.json().message, /reserveId/);
    const noUser = await call('POST', '/api/campaigns/flow/reservations/x/assign', {});
    assert.equal(noUser.statusCode, 400);
    assert.match(noUser.json().message, /userId/);
    const blankUser = await call('POST', '/api/campaigns/flow/reservations/x/assign', { userId: ' \t ' });
    assert.equal(blankUser.statusCode, 400);
    assert.match(blankUser.json().message, /userId must hold a character other than spaces/);
    await assert.rejects(
      rpc.reserve({ campaignId: 'flow', count: 0 }),
      /count must be a whole number from 1/,
    );
    await assert.rejects(rpc.reserve({ campaignId: 'missing', count: 1 }), { statusCode: 404 });
  });

  it('when one reserveId comes twice in a batch with two counts, then each request is judged on its own count', async () => {
    await campaign('twice', 100);
    const ask = (reserveId: string, count: number) =>
      rpc.reserve({ campaignId: 'twice', reserveId, count }).then(
        (r) => ({ count, status: 201, codes: r.codes.length, message: '' }),
        (e) => ({ count, status: e.statusCode as number, codes: 0, message: String(e.message) }),
      );
    // Before: the second shared the first one's answer, a 201 with 2 codes to a request for 5.
    for (let round = 0; round < 5; round++) {
      const id = `twice-${round}`;
      // The first request runs alone; the two after it queue behind it and go in one batch.
      const [, a, b] = await Promise.all([ask(`lane-${round}`, 1), ask(id, 2), ask(id, 5)]);
      const won = [a, b].filter((x) => x.status === 201);
      assert.equal(won.length, 1, JSON.stringify([a, b]));
      assert.equal(won[0]!.codes, won[0]!.count, JSON.stringify([a, b]));
      const lost = a.status === 201 ? b : a;
      assert.equal(lost.status, 409);
      assert.match(lost.message, new RegExp(`already holds ${won[0]!.count} code\\(s\\), not ${lost.count}`));
    }
    // A retry with the held count, batched behind a request with another count, still gets its codes.
    assert.equal((await ask('held', 2)).status, 201);
    const [, other, retry] = await Promise.all([ask('lane-x', 1), ask('held', 5), ask('held', 2)]);
    assert.equal(other.status, 409);
    assert.deepEqual([retry.status, retry.codes], [201, 2], retry.message);
  });

  it('when other transactions hold the codes a reserve needs, then it runs again, and 409 only if they keep them', async () => {
    await campaign('held', 10);
    const no = (await p.kit.pool.query(`SELECT no FROM codes_campaigns WHERE id = 'held'`)).rows[0].no;
    // Another reserve (asking for more than there is) has locked every code and will give them back.
    const other = await p.kit.pool.connect();
    const lockAll = async () => {
      await other.query('BEGIN');
      await other.query('SELECT code FROM codes WHERE campaign_no = $1 FOR UPDATE', [no]);
    };
    try {
      await lockAll();
      const asked = rpc.reserve({ campaignId: 'held', count: 2 });
      await new Promise((r) => setTimeout(r, 30));
      await other.query('ROLLBACK');
      // Before: 409 "has 0 code(s) available" with all ten free.
      assert.equal((await asked).codes.length, 2);

      await lockAll();
      const kept = await call('POST', '/api/campaigns/held/reservations', { count: 2 });
      await other.query('ROLLBACK');
      assert.equal(kept.statusCode, 409, kept.body);
      assert.match(kept.json().message, /has 8 code\(s\) available, but other requests held them .*: retry/);
    } finally {
      other.release();
    }
    assert.deepEqual(await countsInDb('held'), { available: 8, reserved: 2, assigned: 0, a: 8, r: 2, s: 0 });
  });

  it('when a released reserveId is reserved again and comes up short, then it stays released', async () => {
    await campaign('history', 3);
    assert.equal(
      (await call('POST', '/api/campaigns/history/reservations', { count: 1, reserveId: 'h1' })).statusCode,
      201,
    );
    assert.equal((await call('DELETE', '/api/campaigns/history/reservations/h1')).statusCode, 200);
    const before = (await call('GET', '/api/campaigns/history/reservations/h1')).json();
    assert.equal(before.state, 'released');
    const short = await call('POST', '/api/campaigns/history/reservations', { count: 10, reserveId: 'h1' });
    assert.equal(short.statusCode, 409, short.body);
    // Before: 404, its history gone.
    const after = await call('GET', '/api/campaigns/history/reservations/h1');
    assert.equal(after.statusCode, 200, after.body);
    assert.deepEqual(after.json(), before);
    assert.equal(
      (await call('POST', '/api/campaigns/history/reservations', { count: 2, reserveId: 'h1' })).statusCode,
      201,
    );
  });

  it('when a reserveId and a userId are 200 characters (the most allowed), then every path route takes them', async () => {
    await campaign('long-ids', 2);
    const rid = `r${'x'.repeat(199)}`;
    // 200 characters, 400 UTF-16 units, 2,400 characters once URL-encoded.
    const user = '😀'.repeat(200);
    const r = await call('POST', '/api/campaigns/long-ids/reservations', { count: 1, reserveId: rid });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal((await call('GET', `/api/campaigns/long-ids/reservations/${rid}`)).statusCode, 200);
    const a = await call('POST', `/api/campaigns/long-ids/reservations/${rid}/assign`, { userId: user });
    assert.equal(a.statusCode, 200, a.body);
    const mine = await call('GET', `/api/campaigns/long-ids/users/${encodeURIComponent(user)}/codes`);
    assert.equal(mine.statusCode, 200, mine.body);
    assert.deepEqual(
      mine.json().codes.map((c: { code: string }) => c.code),
      r.json().codes,
    );
    const r2 = (
      await call('POST', '/api/campaigns/long-ids/reservations', { count: 1, reserveId: `${rid.slice(1)}2` })
    ).json();
    assert.deepEqual((await call('DELETE', `/api/campaigns/long-ids/reservations/${r2.reserveId}`)).json(), {
      released: 1,
    });
  });

  it('when a reservation outlives its TTL, then its codes are reported available and return to the pool', async () => {
    await campaign('ttl', 4);
    const r = await rpc.reserve({ campaignId: 'ttl', count: 2, reserveId: 'short', ttlSeconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.equal((await call('GET', `/api/campaigns/ttl/codes/${r.codes[0]}`)).json().state, 'available');
    const lapsed = (await call('GET', '/api/campaigns/ttl/reservations/short')).json();
    assert.equal(lapsed.state, 'expired', 'expired before the cron has swept it');
    assert.equal(lapsed.endedAt, r.expiresAt);
    const assign = await call('POST', '/api/campaigns/ttl/reservations/short/assign', { userId: 'late' });
    assert.equal(assign.statusCode, 409);
    assert.match(
      assign.json().message,
      /: it expired and its codes went back to the pool: reserve again \(a longer ttlSeconds/,
    );
    assert.deepEqual((await call('GET', '/api/campaigns/ttl')).json().inventory, {
      available: 4,
      reserved: 0,
      assigned: 0,
      total: 4,
    });
    // That GET swept it: it ended when it expired, as it read before, not at the sweep.
    const swept = (await call('GET', '/api/campaigns/ttl/reservations/short')).json();
    assert.equal(swept.endedAt, r.expiresAt);
    const again = await rpc.reserve({ campaignId: 'ttl', count: 4, reserveId: 'short' });
    assert.equal(again.codes.length, 4);
    const text = (await p.app.inject('/metrics')).body;
    assert.match(text, /codes_expired_total\{campaign="ttl"[^}]*\} 2/);
  });

  it('when more than 10,000 expired reservations wait unswept, then a retry of one of them is a new reservation, not its expired codes', async () => {
    await campaign('backlog', 4);
    const no = (await p.kit.pool.query("SELECT no FROM codes_campaigns WHERE id = 'backlog'")).rows[0].no;
    // 10,000 reservations that expired an hour ago (holding no codes, so only the sweep's limit is
    // at stake), made first, so they come first in table order and in expiry order. The one
    // retried is made without a reserveId, on the path that sweeps nothing, as most are.
    await p.kit.pool.query(
      `INSERT INTO codes_reservations (campaign_no, reserve_id, state, count, expires_at, codes)
       SELECT $1, 'old-' || i, 'reserved', 1, now() - interval '1 hour', '{}' FROM generate_series(1, 10000) i`,
      [no],
    );
    const first = await rpc.reserve({ campaignId: 'backlog', count: 1, ttlSeconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1200));
    // The retry: its old code went back to the pool when it expired, so it must not be answered.
    const retry = await rpc.reserve({ campaignId: 'backlog', count: 1, reserveId: first.reserveId });
    assert.ok(
      Date.parse(retry.expiresAt) > Date.now(),
      `a live reservation, not the expired one: ${retry.expiresAt}`,
    );
    const held = (await call('GET', `/api/campaigns/backlog/codes/${retry.codes[0]}`)).json();
    assert.deepEqual([held.state, held.reserveId], ['reserved', first.reserveId]);
    if (retry.codes[0] !== first.codes[0]) {
      const old = (await call('GET', `/api/campaigns/backlog/codes/${first.codes[0]}`)).json();
      assert.equal(old.state, 'available');
    }
    // Another id takes every code left: none of them is the retried reservation's.
    const rest = await rpc.reserve({ campaignId: 'backlog', count: 3, reserveId: 'others' });
    assert.ok(!rest.codes.includes(retry.codes[0]!), 'the retried code is handed out once');
  });

  it('when a reservation past its TTL is released before the cron sweeps it, then it answers as after the sweep: expired, released 0', async () => {
    await campaign('lapse', 3);
    await rpc.reserve({ campaignId: 'lapse', count: 2, reserveId: 'late', ttlSeconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1200));
    // The release comes first: nothing (no GET of the campaign, no cron) has swept it yet.
    const del = await call('DELETE', '/api/campaigns/lapse/reservations/late');
    assert.equal(del.statusCode, 200, del.body);
    assert.deepEqual(del.json(), { released: 0 });
    assert.equal((await call('GET', '/api/campaigns/lapse/reservations/late')).json().state, 'expired');
    assert.equal((await call('GET', '/api/campaigns/lapse')).json().inventory.available, 3);
    const text = (await p.app.inject('/metrics')).body;
    assert.match(text, /codes_expired_total\{campaign="lapse"[^}]*\} 2/);
    assert.doesNotMatch(text, /codes_released_total\{campaign="lapse"/);
  });

  it('when maxPerUser is set, then an assign past it is 409', async () => {
    await campaign('limited', 5, { maxPerUser: 2 });
    const a = await rpc.reserve({ campaignId: 'limited', count: 2 });
    await rpc.assign({ campaignId: 'limited', reserveId: a.reserveId, userId: 'greedy' });
    const b = await rpc.reserve({ campaignId: 'limited', count: 1 });
    await assert.rejects(rpc.assign({ campaignId: 'limited', reserveId: b.reserveId, userId: 'greedy' }), {
      statusCode: 409,
      message:
        /\(1 code\(s\)\) would give user greedy 3 code\(s\) of campaign limited, who holds 2; maxPerUser is 2$/,
    });
    // A reservation bigger than maxPerUser could never be assigned to anyone: refused up front.
    await assert.rejects(rpc.reserve({ campaignId: 'limited', count: 3 }), {
      statusCode: 422,
      message: /a reservation of 3 could never be assigned: reserve at most 2$/,
    });
    assert.equal(
      (await call('GET', '/api/campaigns/limited')).json().inventory.reserved,
      1,
      'only b is reserved',
    );
  });

  it('when 64 HTTP clients reserve until the pool is empty, then every code is handed out once and the rest get 409', async () => {
    const total = 3000;
    await campaign('race', total);
    const url = `${p.address()}/api/campaigns/race/reservations`;
    const seen: string[] = [];
    let conflicts = 0;
    await Promise.all(
      Array.from({ length: 64 }, async (_, client) => {
        for (let i = 0; ; i++) {
          const res = await fetch(url, {
            method: 'POST',
            headers: { ...p.auth, 'content-type': 'application/json' },
            body: JSON.stringify({ count: 1 + ((client + i) % 3) }),
          });
          const body = (await res.json()) as { codes?: string[] };
          if (res.status === 409) {
            conflicts++;
            // A 409 can only mean short: stop once fewer than 3 remain for everybody.
            const inv = (await call('GET', '/api/campaigns/race')).json().inventory;
            if (inv.available < 3) return;
            continue;
          }
          assert.equal(res.status, 201, JSON.stringify(body));
          seen.push(...body.codes!);
        }
      }),
    );
    // Drain what is left one by one: the pool must empty exactly.
    for (;;) {
      const r = await call('POST', '/api/campaigns/race/reservations', { count: 1 });
      if (r.statusCode === 409) break;
      seen.push(...r.json().codes);
    }
    assert.equal(new Set(seen).size, seen.length, 'no code handed out twice');
    assert.equal(seen.length, total, 'pool exactly drained');
    assert.ok(conflicts > 0, 'the last requests got 409');
    const c = await countsInDb('race');
    assert.deepEqual(c, { available: 0, reserved: total, assigned: 0, a: 0, r: total, s: 0 });
  });

  it('when random create/reserve/assign/release/expire sequences run, then the database always matches a simple model', async () => {
    let run = 0;
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('reserve' as const),
        count: fc.integer({ min: 1, max: 4 }),
        id: fc.integer({ min: 0, max: 7 }),
      }),
      fc.record({
        kind: fc.constant('assign' as const),
        id: fc.integer({ min: 0, max: 7 }),
        user: fc.integer({ min: 0, max: 2 }),
      }),
      fc.record({ kind: fc.constant('release' as const), id: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant('expire' as const), id: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant('generate' as const), count: fc.integer({ min: 1, max: 5 }) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 12 }),
        fc.array(op, { maxLength: 25 }),
        async (initial, ops) => {
          const id = `model-${run++}`;
          await campaign(id, 0);
          if (initial) await call('POST', `/api/campaigns/${id}/codes`, { count: initial });
          // model: reservation id → {codes, state}
          const model = new Map<string, { n: number; state: 'reserved' | 'assigned'; user?: string }>();
          let total = initial;
          const live = () => [...model.values()];
          for (const o of ops) {
            const rid = `r${'id' in o ? o.id : 0}`;
            if (o.kind === 'generate') {
              await call('POST', `/api/campaigns/${id}/codes`, { count: o.count });
              total += o.count;
            } else if (o.kind === 'reserve') {
              const held = live().reduce((a, r) => a + r.n, 0);
              const existing = model.get(rid);
              const res = await call('POST', `/api/campaigns/${id}/reservations`, {
                count: o.count,
                reserveId: rid,
              });
              if (existing)
                assert.equal(
                  res.statusCode,
                  existing.n === o.count ? 201 : 409,
                  'same reserveId answers again, if it asks for the same count',
                );
              else if (total - held >= o.count) {
                assert.equal(res.statusCode, 201, res.body);
                assert.equal(res.json().codes.length, o.count);
                model.set(rid, { n: o.count, state: 'reserved' });
              } else assert.equal(res.statusCode, 409, res.body);
            } else if (o.kind === 'assign') {
              const r = model.get(rid);
              const res = await call('POST', `/api/campaigns/${id}/reservations/${rid}/assign`, {
                userId: `u${o.user}`,
              });
              if (r && (r.state === 'reserved' || r.user === `u${o.user}`)) {
                assert.equal(res.statusCode, 200, res.body);
                r.state = 'assigned';
                r.user = `u${o.user}`;
              } else assert.equal(res.statusCode, 409, res.body);
            } else if (o.kind === 'release') {
              const r = model.get(rid);
              const res = await call('DELETE', `/api/campaigns/${id}/reservations/${rid}`);
              if (r?.state === 'reserved') {
                assert.deepEqual(res.json(), { released: r.n });
                model.delete(rid);
              } else if (r) assert.deepEqual(res.json(), { released: 0 });
            } else {
              // expire: move the reservation's deadline into the past, then let the lazy check run
              const r = model.get(rid);
              await p.kit.pool.query(
                `UPDATE codes_reservations SET expires_at = now() - interval '1 second'
               WHERE reserve_id = $1 AND campaign_no = (SELECT no FROM codes_campaigns WHERE id = $2)`,
                [rid, id],
              );
              await p.kit.pool.query(
                `UPDATE codes SET expires_at = now() - interval '1 second'
               WHERE reserve_id = $1 AND campaign_no = (SELECT no FROM codes_campaigns WHERE id = $2)`,
                [rid, id],
              );
              if (r?.state === 'reserved') model.delete(rid);
            }
            // invariants after every step
            const inv = (await call('GET', `/api/campaigns/${id}`)).json().inventory;
            const reserved = live()
              .filter((r) => r.state === 'reserved')
              .reduce((a, r) => a + r.n, 0);
            const assigned = live()
              .filter((r) => r.state === 'assigned')
              .reduce((a, r) => a + r.n, 0);
            assert.deepEqual(inv, { available: total - reserved - assigned, reserved, assigned, total });
            const db = await countsInDb(id);
            assert.equal(db.a, inv.available);
            assert.equal(db.r, reserved);
            assert.equal(db.s, assigned);
            const { rows } = await p.kit.pool.query(
              `SELECT reserve_id, count(*)::int AS n FROM codes
             WHERE campaign_no = (SELECT no FROM codes_campaigns WHERE id = $1) AND state IN (1, 2) GROUP BY reserve_id`,
              [id],
            );
            for (const row of rows)
              assert.equal(row.n, model.get(row.reserve_id)?.n, `codes held by ${row.reserve_id}`);
            for (const [rid, r] of model) {
              const got = (await call('GET', `/api/campaigns/${id}/reservations/${rid}`)).json();
              assert.deepEqual([got.state, got.codes.length, got.userId], [r.state, r.n, r.user ?? null]);
            }
          }
        },
      ),
      { numRuns: 25 },
    );
  });
});

describe('codes: the operations at debug (seed 004 DEBUG=titan:codes*)', async () => {
  const p = await startPlatform({ modules: [codesModule], env: { DEBUG: 'tessera:codes*' } });
  const call = (method: 'POST' | 'DELETE', url: string, payload?: object) =>
    p.app.inject({ method, url, headers: p.auth, ...(payload ? { payload } : {}) });

  it('when DEBUG=tessera:codes*, then reserve, assign and release each log a line naming the reservation', async () => {
    const made = await call('POST', '/api/campaigns', {
      id: 'traced',
      name: 'traced',
      format: { length: 8, alphabet: 'numeric' },
    });
    assert.equal(made.statusCode, 201, made.body);
    await call('POST', '/api/campaigns/traced/codes', { count: 5 });
    await call('POST', '/api/campaigns/traced/reservations', { count: 2, reserveId: 'a' });
    await call('POST', '/api/campaigns/traced/reservations/a/assign', { userId: 'u1' });
    await call('POST', '/api/campaigns/traced/reservations', { count: 1, reserveId: 'b' });
    await call('DELETE', '/api/campaigns/traced/reservations/b');
    const line = (msg: string) => p.logs.events(msg).find((l) => l.campaign === 'traced');
    const reserved = line('CODES_RESERVED');
    assert.deepEqual([reserved?.module, reserved?.reserveId, reserved?.count], ['codes', 'a', 2]);
    assert.equal(line('CODES_ASSIGNED')?.userId, 'u1');
    assert.equal(line('CODES_RELEASED')?.released, 1);
  });
});
