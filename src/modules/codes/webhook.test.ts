import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { startPlatform, waitFor } from '../../../test/helpers.ts';
import { codesModule } from './index.ts';

describe('codes: POST /api/generate (seed 000, Standard Webhooks)', async () => {
  const p = await startPlatform({ modules: [codesModule] });
  const signer = new Webhook(p.kit.webhookSecret);
  let n = 0;
  const send = (
    body: string,
    opts: { id?: string; at?: Date; wh?: Webhook; headers?: Record<string, string> } = {},
  ) => {
    const id = opts.id ?? `msg_${n++}`;
    const at = opts.at ?? new Date();
    return p.app.inject({
      method: 'POST',
      url: '/api/generate',
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
        'webhook-signature': (opts.wh ?? signer).sign(id, at, body),
        ...opts.headers,
      },
      payload: body,
    });
  };
  const generated = async () =>
    (
      await p.kit.pool.query(
        `SELECT count(*)::int AS n FROM codes WHERE campaign_no = (SELECT no FROM codes_campaigns WHERE id = 'batch-codes')`,
      )
    ).rows[0]?.n ?? 0;

  it('when 10,000 signed calls arrive, then every answer is a distinct 6-character A-Z0-9 code', async () => {
    const codes: string[] = [];
    for (let batch = 0; batch < 100; batch++) {
      const answers = await Promise.all(Array.from({ length: 100 }, () => send('{}')));
      for (const res of answers) {
        assert.equal(res.statusCode, 201, res.body);
        codes.push(res.json().code);
      }
    }
    assert.equal(codes.length, 10_000);
    for (const c of codes) assert.match(c, /^[A-Z0-9]{6}$/);
    assert.equal(new Set(codes).size, 10_000);
    const c = (await p.app.inject({ url: '/api/campaigns/batch-codes', headers: p.auth })).json();
    assert.equal(c.inventory.assigned, 10_000, 'handed-out codes can never be reserved by anyone else');
    const metrics = (await p.app.inject('/metrics')).body;
    assert.match(
      metrics,
      /^codes_assigned_total\{campaign="batch-codes"[^}]*\} 10000$/m,
      `as the inventory counts them: ${metrics
        .split('\n')
        .filter((l) => l.includes('assigned_total'))
        .join('; ')}`,
    );
    // Its id is taken: a campaign of that name made by hand would change what the webhook hands out.
    const mine = await p.app.inject({
      method: 'POST',
      url: '/api/campaigns',
      headers: p.auth,
      payload: { id: 'batch-codes', name: 'mine', format: { length: 4, alphabet: 'numeric' } },
    });
    assert.equal(mine.statusCode, 409, mine.body);
    assert.match(mine.json().message, /^batch-codes is the campaign of POST \/api\/generate/);
    // Nor may its inventory be added to or reserved from through the campaign routes.
    const other = async (url: string, payload: string, type = 'application/json') =>
      p.app.inject({ method: 'POST', url, headers: { ...p.auth, 'content-type': type }, payload });
    for (const [res, what] of [
      [await other('/api/campaigns/batch-codes/codes', '{"count": 3}'), 'generate codes'],
      [await other('/api/campaigns/batch-codes/codes/import', 'AAAAAA\n', 'text/csv'), 'import codes'],
      [await other('/api/campaigns/batch-codes/reservations', '{"count": 1}'), 'reserve codes'],
    ] as const) {
      assert.equal(res.statusCode, 409, res.body);
      assert.match(
        res.json().message,
        new RegExp(
          `^batch-codes is the campaign of POST /api/generate, which alone hands out its codes: ${what} in a campaign of your own`,
        ),
      );
    }
    assert.equal(await generated(), 10_000, 'nothing was added');
    const patched = await p.app.inject({
      method: 'PATCH',
      url: '/api/campaigns/batch-codes',
      headers: p.auth,
      payload: { maxPerUser: 1 },
    });
    assert.equal(patched.statusCode, 409, patched.body);
    assert.match(patched.json().message, /whose settings are that route's$/);
    const assigned = await other('/api/campaigns/batch-codes/reservations/r1/assign', '{"userId": "u"}');
    assert.equal(assigned.statusCode, 409, assigned.body);
    assert.match(assigned.json().message, /reserve and assign codes in a campaign of your own/);
  });

  it('when a body holds a field other than count, then 400 names it and nothing is generated', async () => {
    const before = await generated();
    const typo = await send(JSON.stringify({ cout: 5 }));
    assert.equal(typo.statusCode, 400, typo.body);
    assert.match(typo.json().message, /must NOT have the property "cout"/);
    assert.equal(await generated(), before);
  });

  it('when {count} is sent, then {codes} holds that many new codes; a count over 1,000 is 400', async () => {
    const res = await send(JSON.stringify({ count: 250 }));
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(new Set(res.json().codes).size, 250);
    const big = await send(JSON.stringify({ count: 1001 }));
    assert.equal(big.statusCode, 400);
    assert.match(big.json().message, /count/);
  });

  it('when a signed webhook-id is too long to remember, then that delivery is 400 and the ones beside it still get codes', async () => {
    const long = `msg_${'x'.repeat(4000)}`;
    const [bad, ...rest] = await Promise.all([
      send('{}', { id: long }),
      ...Array.from({ length: 31 }, () => send('{}')),
    ]);
    assert.equal(bad!.statusCode, 400, bad!.body);
    assert.match(bad!.json().message, /^webhook-id must be at most 256 bytes/);
    assert.deepEqual(
      rest.map((r) => r.statusCode),
      rest.map(() => 201),
    );
  });

  it("when a verified delivery fails, then the sender's retry with the same id is served, not refused as a replay", async () => {
    assert.equal((await send('{}')).statusCode, 201); // the campaign exists
    await p.kit.pool.query('ALTER TABLE codes RENAME TO codes_away');
    const failed = await send('{}', { id: 'msg_retry_me' });
    await p.kit.pool.query('ALTER TABLE codes_away RENAME TO codes');
    assert.equal(failed.statusCode, 500, failed.body);
    // The id is forgotten once the failed answer is sent: the retry is a first delivery.
    const retried = await waitFor(
      async () => {
        const res = await send('{}', { id: 'msg_retry_me' });
        return res.statusCode === 201 && res;
      },
      { what: 'the retry to be served' },
    );
    assert.match(retried.json().code, /^[A-Z0-9]{6}$/);
    // Refused deliveries forget their id too, so a retry meets the same 400, not a 401.
    for (let i = 0; i < 2; i++) {
      const tooMany = await send(JSON.stringify({ count: 1001 }), { id: 'msg_too_many' });
      assert.equal(tooMany.statusCode, 400, tooMany.body);
      await waitFor(
        async () =>
          (await p.kit.pool.query(`SELECT 1 FROM webhook_seen WHERE id = 'msg_too_many'`)).rowCount === 0,
        { what: 'the refused delivery to be forgotten' },
      );
    }
    // A replay's 401 never forgets the id of the delivery it copies.
    for (let i = 0; i < 2; i++) {
      const replay = await send('{}', { id: 'msg_retry_me' });
      assert.equal(replay.statusCode, 401, replay.body);
      // The access log holds only the 401; this line holds why.
      const why = p.logs.events('WEBHOOK_REJECTED').find((l) => l.reqId === replay.headers['x-request-id']);
      assert.match(String(why?.reason), /^webhook-id msg_retry_me was already used/);
    }
  });

  it('when a signed delivery has no body at all, then it answers one code, as {} does', async () => {
    const id = 'msg_no_body';
    const at = new Date();
    const bare = await p.app.inject({
      method: 'POST',
      url: '/api/generate',
      headers: {
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
        'webhook-signature': signer.sign(id, at, ''),
      },
    });
    const emptyJson = await send('');
    for (const res of [bare, emptyJson]) {
      assert.equal(res.statusCode, 201, res.body);
      assert.match(res.json().code, /^[A-Z0-9]{6}$/);
    }
  });

  it('when the signature is missing, wrong, stale or replayed, then 401, nothing is generated and each is counted once', async () => {
    const webhookFailures = async () => {
      const text = (await p.app.inject('/metrics')).body;
      return Number(text.match(/^tessera_auth_failures_total\{[^}]*kind="webhook"[^}]*\} (\d+)/m)?.[1] ?? 0);
    };
    const failuresBefore = await webhookFailures();
    const before = await generated();
    const body = JSON.stringify({ count: 5 });
    const wrong = await send(body, {
      wh: new Webhook(Buffer.from('not-the-secret-at-all').toString('base64')),
    });
    assert.equal(wrong.statusCode, 401);
    assert.match(wrong.json().message, /signature/);
    const stale = await send(body, { at: new Date(Date.now() - 10 * 60 * 1000) });
    assert.equal(stale.statusCode, 401);
    const unsigned = await p.app.inject({
      method: 'POST',
      url: '/api/generate',
      headers: { 'content-type': 'application/json' },
      payload: body,
    });
    assert.equal(unsigned.statusCode, 401);
    assert.match(unsigned.json().message, /webhook-signature/);
    assert.equal((await send(body, { id: 'once' })).statusCode, 201);
    const replay = await send(body, { id: 'once' });
    assert.equal(replay.statusCode, 401);
    assert.match(replay.json().message, /already used/);
    const tampered = await send(body, {
      headers: { 'webhook-signature': signer.sign('other', new Date(), body) },
    });
    assert.equal(tampered.statusCode, 401);
    assert.equal(await generated(), before + 5, 'only the one valid call generated codes');
    assert.equal(await webhookFailures(), failuresBefore + 5, 'wrong, stale, unsigned, replay, tampered');
  });
});
