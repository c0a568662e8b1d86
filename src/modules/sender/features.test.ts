// CSV upload, suppressions and unsubscribe links, signed delivery events, live progress (SSE), and
// the 4xx answers of the batch API.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform, type TestPlatform, waitFor } from '../../../test/helpers.ts';
import { senderModule } from './index.ts';
import { batchFinished } from './test-peers.ts';

const template = { subject: 'Hi {{name}}', text: 'Hello {{name}} from {{city}}' };
const inject = (
  p: TestPlatform,
  method: 'GET' | 'POST' | 'DELETE',
  url: string,
  payload?: unknown,
  headers = {},
) => p.app.inject({ method, url, headers: { ...p.auth, ...headers }, payload: payload as object });

const finished = (p: TestPlatform, id: string) => batchFinished(p, id, 60000);

function sign(p: TestPlatform, body: string, id = `evt_${Math.random().toString(36).slice(2)}`) {
  return { ...p.kit.webhooks.sign(id, body), 'content-type': 'application/json' };
}

/** Delivery events posted as the mock provider, signed unless told otherwise. */
function deliver(p: TestPlatform, body: string, headers: Record<string, string> = sign(p, body)) {
  return p.app.inject({ method: 'POST', url: '/webhooks/mock', payload: body, headers });
}

describe('sender features', () => {
  it('when a CSV is uploaded to a draft batch, then its rows become recipients with their columns as variables', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const draft = await inject(p, 'POST', '/api/batches', { channel: 'mock', draft: true, template });
    assert.equal(draft.statusCode, 201);
    assert.equal(draft.json().state, 'draft');
    const id = draft.json().id;
    const rows = Array.from({ length: 12_001 }, (_, i) => `u${i}@example.com,Name ${i},"City, ${i}"`);
    const csv = `address,name,city\n${rows.join('\n')}\n`;
    const up = await inject(p, 'POST', `/api/batches/${id}/recipients`, csv, { 'content-type': 'text/csv' });
    assert.equal(up.statusCode, 201, up.body);
    assert.deepEqual(up.json(), { added: 12_001, total: 12_001 });
    const more = await inject(p, 'POST', `/api/batches/${id}/recipients`, {
      recipients: [{ address: 'last@example.com', variables: { name: 'Last', city: 'Oslo' } }],
    });
    assert.deepEqual(more.json(), { added: 1, total: 12_002 });
    const r = (await inject(p, 'GET', `/api/batches/${id}/recipients?after=12000&limit=1`)).json();
    assert.deepEqual(r.recipients[0].variables, { name: 'Name 12000', city: 'City, 12000' });
    const sent = await inject(p, 'POST', `/api/batches/${id}/send`);
    assert.equal(sent.json().state, 'queued');
    const b = await finished(p, id);
    assert.equal(b.progress.sent, 12_002);
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/send`)).statusCode, 409);
    const late = await inject(p, 'POST', `/api/batches/${id}/recipients`, 'address\nx@example.com\n', {
      'content-type': 'text/csv',
    });
    assert.equal(late.statusCode, 409);
  });

  it('when a CSV column is named __proto__, then it is a variable like any other, as in a JSON body', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const id = (await inject(p, 'POST', '/api/batches', { channel: 'mock', draft: true, template })).json()
      .id;
    const csv = 'address,__proto__,name\na@example.com,x,Ann\n';
    const up = await inject(p, 'POST', `/api/batches/${id}/recipients`, csv, { 'content-type': 'text/csv' });
    assert.equal(up.statusCode, 201, up.body);
    const r = (await inject(p, 'GET', `/api/batches/${id}/recipients`)).json();
    // Before: assigned as a key, it set the object's prototype and was dropped.
    assert.deepEqual(Object.entries(r.recipients[0].variables).sort(), [
      ['__proto__', 'x'],
      ['name', 'Ann'],
    ]);
  });

  it('when a CSV or a batch body is wrong, then the answer is a 4xx that says what to fix', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const id = (await inject(p, 'POST', '/api/batches', { channel: 'mock', draft: true, template })).json()
      .id;
    const csv = (text: string | Buffer) =>
      inject(p, 'POST', `/api/batches/${id}/recipients`, text, { 'content-type': 'text/csv' });
    // Before: 201 {"added": 0}. A blank file too, and the header alone still adds nobody, as asked.
    for (const empty of ['', '\n\n', '\ufeff']) {
      const res = await csv(empty);
      assert.equal(res.statusCode, 400, JSON.stringify(empty));
      assert.match(res.json().message, /^the CSV is empty: send a header row with an "address"/);
    }
    assert.deepEqual((await csv('address,name\n')).json(), { added: 0, total: 0 });
    const noAddress = await csv('name,city\nA,B\n');
    assert.equal(noAddress.statusCode, 400);
    assert.match(noAddress.json().message, /"address" \(or "email"\) column/);
    const ragged = await csv('address,name\na@example.com,A\nb@example.com,B,extra\n');
    assert.equal(ragged.statusCode, 400);
    assert.match(ragged.json().message, /^the CSV could not be read: .* on line 3$/);
    const xml = await inject(p, 'POST', `/api/batches/${id}/recipients`, '<r/>', {
      'content-type': 'application/xml',
    });
    assert.equal(xml.statusCode, 415);
    assert.match(xml.json().message, /send Content-Type: application\/json or text\/csv/);
    // Before: stored, though the same address in a JSON body is a 400.
    const long = await csv(`address\na@example.com\n${'x'.repeat(321)}\n`);
    assert.equal(long.statusCode, 400);
    assert.equal(long.json().message, 'CSV line 3: the address is longer than 320 characters');
    const nul = await csv('address,name\na@example.com,A\u0000B\n');
    assert.equal(nul.statusCode, 400);
    assert.match(nul.json().message, /^CSV line 2: a field holds a NUL character/);
    // "Müller" saved as Windows-1252 (ü is the one byte 0xFC): before, stored as "M\uFFFDller".
    const latin1 = await csv(
      Buffer.from('address,name\na@example.com,Ann\nb@example.com,M\xfcller\n', 'latin1'),
    );
    assert.equal(latin1.statusCode, 400);
    assert.match(
      latin1.json().message,
      /^the CSV is not UTF-8 \(line 3 holds bytes that are not\): save it as UTF-8/,
    );
    const badJson = await inject(p, 'POST', `/api/batches/${id}/recipients`, { people: [] });
    assert.equal(badJson.statusCode, 400);
    assert.match(badJson.json().message, /recipients/);
    assert.equal((await inject(p, 'POST', `/api/batches/${id}/send`)).statusCode, 409, 'no recipients yet');
    const cases: [unknown, number, RegExp][] = [
      [{ template }, 400, /sendConfigId is required/],
      [{ channel: 'mock', template }, 400, /give at least one recipient/],
      [
        { channel: 'mock', template: { subject: 'x' }, recipients: [{ address: 'a' }] },
        400,
        /html or a text body/,
      ],
      [
        { channel: 'mock', template: { subject: '{{#x}}', text: 't' }, recipients: [{ address: 'a' }] },
        400,
        /template\.subject/,
      ],
      [{ channel: 'mock', template, recipients: [{ address: 'a' }], ratePerSecond: 0 }, 400, /ratePerSecond/],
      [
        { channel: 'mock', template, recipients: [{ address: 'a' }], scheduledAt: 'soon' },
        400,
        /scheduledAt/,
      ],
      [
        { sendConfigId: '00000000-0000-0000-0000-000000000000', template, recipients: [{ address: 'a' }] },
        404,
        /send config/,
      ],
      [
        // A name cut inside an emoji: stored as jsonb, it was a 500.
        {
          channel: 'mock',
          template,
          recipients: [{ address: 'a@example.com', variables: { name: 'Jo 🚀'.slice(0, -1) } }],
        },
        400,
        /^body\.recipients\[0\]\.variables\.name holds a lone surrogate/,
      ],
    ];
    for (const [body, status, message] of cases) {
      const res = await inject(p, 'POST', '/api/batches', body);
      assert.equal(res.statusCode, status, JSON.stringify(body));
      assert.match(res.json().message, message);
    }
    const tooMany = Array.from({ length: 10_001 }, (_, i) => ({ address: `a${i}` }));
    assert.equal(
      (await inject(p, 'POST', '/api/batches', { channel: 'mock', template, recipients: tooMany }))
        .statusCode,
      400,
    );
    const missing = '00000000-0000-0000-0000-000000000000';
    for (const path of ['', '/recipients', '/events'])
      assert.equal((await inject(p, 'GET', `/api/batches/${missing}${path}`)).statusCode, 404);
    for (const action of ['pause', 'resume', 'cancel', 'send'])
      assert.equal((await inject(p, 'POST', `/api/batches/${missing}/${action}`)).statusCode, 404);
    assert.equal((await inject(p, 'GET', '/api/batches/not-a-uuid')).statusCode, 400);
    const draft = (
      await inject(p, 'POST', '/api/batches', { channel: 'mock', draft: true, template })
    ).json();
    const pastInt = await inject(p, 'GET', `/api/batches/${draft.id}/recipients?after=99999999999`);
    assert.equal(pastInt.statusCode, 400, 'past a PostgreSQL integer: 400, not 500');
    assert.match(pastInt.json().message, /after must be <= 2147483647/);
    assert.equal((await p.app.inject({ method: 'GET', url: '/api/batches' })).statusCode, 401);
    // Year 0000 passes the date-time format; PostgreSQL has no year 0.
    const yearZero = await inject(p, 'GET', '/api/batches?before=0000-01-01T00:00:00Z');
    assert.equal(yearZero.statusCode, 400, yearZero.body);
    assert.match(yearZero.json().message, /date-time in the request is not one PostgreSQL can store/);
    const scheduled = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      template,
      recipients: [{ address: 'a@example.com' }],
      scheduledAt: '0000-06-01T00:00:00Z',
    });
    assert.equal(scheduled.statusCode, 400, scheduled.body);
  });

  it('when an address is suppressed or unsubscribes, then later batches skip it and count it', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const add = await inject(p, 'POST', '/api/suppressions', { addresses: ['Blocked@Example.com'] });
    assert.equal(add.statusCode, 201);
    const first = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      template,
      recipients: [
        { address: 'blocked@example.com' },
        { address: 'leaver@example.com' },
        { address: 'ok@example.com' },
      ],
    });
    const b1 = await finished(p, first.json().id);
    assert.equal(b1.progress.suppressed, 1);
    assert.equal(b1.progress.sent, 2);
    // The leaver follows the unsubscribe link of their message (token as the e-mail carries it).
    const { unsubscribeToken } = await import('./unsubscribe.ts');
    const token = unsubscribeToken(p.kit.webhookSecret, b1.id, 2);
    const page = await p.app.inject({ method: 'GET', url: `/api/unsubscribe/${token}` });
    assert.equal(page.statusCode, 200);
    assert.match(page.body, /<form method="post">/);
    const done = await p.app.inject({
      method: 'POST',
      url: `/api/unsubscribe/${token}`,
      payload: 'List-Unsubscribe=One-Click',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(done.statusCode, 200);
    assert.match(done.body, /leaver@example.com is unsubscribed/);
    // RFC 8058's encoding for the one-click POST, as a mailbox provider sends it.
    const multipart = await p.app.inject({
      method: 'POST',
      url: `/api/unsubscribe/${token}`,
      payload: '--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--b--\r\n',
      headers: { 'content-type': 'multipart/form-data; boundary=b' },
    });
    assert.equal(multipart.statusCode, 200, multipart.body);
    assert.equal(
      (await p.app.inject({ method: 'POST', url: `/api/unsubscribe/${token.slice(0, -2)}xx` })).statusCode,
      404,
    );
    const list = (await inject(p, 'GET', '/api/suppressions')).json();
    assert.deepEqual(
      list.suppressions.map((s: { address: string }) => s.address),
      ['blocked@example.com', 'leaver@example.com'],
    );
    const second = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      template,
      recipients: [{ address: 'leaver@example.com' }, { address: 'ok@example.com' }],
    });
    const b2 = await finished(p, second.json().id);
    assert.deepEqual([b2.progress.suppressed, b2.progress.sent], [1, 1]);
    assert.equal((await inject(p, 'DELETE', '/api/suppressions/leaver@example.com')).statusCode, 204);
    assert.equal((await inject(p, 'DELETE', '/api/suppressions/leaver@example.com')).statusCode, 404);
    const nul = await inject(p, 'DELETE', '/api/suppressions/leaver%00@example.com');
    assert.equal(nul.statusCode, 400, "an address PostgreSQL cannot store is the caller's to fix");
    assert.match(nul.json().message, /^params\.\w+ holds a NUL character/);
    assert.equal((await inject(p, 'POST', '/api/suppressions', { addresses: [] })).statusCode, 400);
  });

  it('when delivery events name messages never sent (a draft, a suppressed or a cancelled recipient), then they are unknown and count nothing', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const post = async (events: { type: string; messageId: string }[]) => {
      const res = await deliver(p, JSON.stringify({ events }));
      assert.equal(res.statusCode, 200, res.body);
      return res.json();
    };
    const draft = (
      await inject(p, 'POST', '/api/batches', {
        channel: 'mock',
        draft: true,
        template,
        recipients: [{ address: 'early@example.com' }, { address: 'fine@example.com' }],
      })
    ).json().id;
    // Before: both recorded, and the draft showed a delivery and a bounce (suppressing early@).
    const onDraft = await post([
      { type: 'bounced', messageId: `${draft}:1` },
      { type: 'delivered', messageId: `${draft}:2` },
    ]);
    assert.deepEqual([onDraft.recorded, onDraft.unknown], [0, [`${draft}:1`, `${draft}:2`]]);
    assert.deepEqual((await inject(p, 'GET', '/api/suppressions')).json().suppressions, []);
    // A cancelled draft's recipients were never sent either.
    assert.equal((await inject(p, 'POST', `/api/batches/${draft}/cancel`)).statusCode, 200);
    await waitFor(
      async () => (await inject(p, 'GET', `/api/batches/${draft}`)).json().progress.cancelled === 2,
      { what: 'the draft recipients cancelled' },
    );
    assert.equal((await post([{ type: 'delivered', messageId: `${draft}:1` }])).recorded, 0);
    // One cancelled while waiting for a retry had an attempt, which a provider that timed out may
    // still have delivered: its events count.
    await p.kit.pool.query(`UPDATE sender_recipients SET attempts = 1 WHERE batch_id = $1 AND id = 2`, [
      draft,
    ]);
    await p.kit.pool.query(`UPDATE sender_batches SET state = 'cancelled' WHERE id = $1`, [draft]);
    assert.equal((await post([{ type: 'bounced', messageId: `${draft}:2` }])).recorded, 1);
    // A suppressed recipient is skipped at send time; an event for it names no message.
    await inject(p, 'POST', '/api/suppressions', { addresses: ['gone@example.com'] });
    const sent = (
      await inject(p, 'POST', '/api/batches', {
        channel: 'mock',
        template,
        recipients: [{ address: 'gone@example.com' }, { address: 'here@example.com' }],
      })
    ).json().id;
    await finished(p, sent);
    const onSent = await post([
      { type: 'delivered', messageId: `${sent}:1` },
      { type: 'delivered', messageId: `${sent}:2` },
    ]);
    assert.deepEqual([onSent.recorded, onSent.unknown], [1, [`${sent}:1`]]);
    const b = (await inject(p, 'GET', `/api/batches/${sent}`)).json().progress;
    assert.deepEqual([b.sent, b.suppressed, b.delivered], [1, 1, 1]);
    const d = (await inject(p, 'GET', `/api/batches/${draft}`)).json().progress;
    assert.deepEqual(
      [d.delivered, d.bounced],
      [0, 1],
      'only the bounce of the recipient that had an attempt',
    );
  });

  it('when a provider posts signed delivery events, then each kind is counted once per recipient and a bounce suppresses the address', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      template,
      recipients: [{ address: 'a@example.com' }, { address: 'b@example.com' }],
    });
    const id = res.json().id;
    await finished(p, id);
    const body = JSON.stringify({
      events: [
        { type: 'delivered', messageId: `${id}:1` },
        { type: 'opened', messageId: `${id}:1` },
        { type: 'bounced', messageId: `${id}:2` },
        { type: 'bounced', messageId: `${id}:2` },
        { type: 'delivered', messageId: '00000000-0000-0000-0000-000000000000:1' },
        // Ids that name nothing of ours are listed as unknown, and the good events beside them count.
        { type: 'delivered', messageId: '------------------------------------:1' },
        { type: 'delivered', messageId: `${id}:99999999999` },
        { type: 'delivered', messageId: 'not-one-of-ours' },
      ],
    });
    const ok = await deliver(p, body);
    assert.equal(ok.statusCode, 200, ok.body);
    assert.equal(ok.json().recorded, 3);
    assert.equal(ok.json().duplicate, 1);
    assert.equal(ok.json().unknown.length, 4);
    // A provider repeating "delivered" after "opened" (delivered → opened → delivered) is one delivery.
    const again = JSON.stringify({ type: 'delivered', messageId: `${id}:1` });
    const repeat = await deliver(p, again);
    assert.deepEqual([repeat.json().recorded, repeat.json().duplicate], [0, 1]);
    const b = (await inject(p, 'GET', `/api/batches/${id}`)).json();
    assert.deepEqual([b.progress.delivered, b.progress.opened, b.progress.bounced], [1, 1, 1]);
    const r1 = (await inject(p, 'GET', `/api/batches/${id}/recipients?limit=1`)).json().recipients[0];
    assert.equal(r1.event, 'opened', 'the latest new kind');
    const sup = (await inject(p, 'GET', '/api/suppressions')).json().suppressions;
    assert.deepEqual(
      sup.map((s: { address: string; reason: string }) => [s.address, s.reason]),
      [['b@example.com', 'bounce']],
    );
    // Unsigned, tampered and replayed deliveries are refused; a bad body after a good signature is a 400.
    const unsigned = await deliver(p, body, { 'content-type': 'application/json' });
    assert.equal(unsigned.statusCode, 401);
    const headers = sign(p, body, 'evt_fixed');
    const tampered = await deliver(p, body.replace('opened', 'bounced'), headers);
    assert.equal(tampered.statusCode, 401);
    assert.equal((await deliver(p, body, headers)).statusCode, 200);
    const replay = await deliver(p, body, headers);
    assert.equal(replay.statusCode, 401);
    assert.match(replay.json().message, /already used/);
    // A bad body after a good signature: a 400 that says what to fix (the unknown type listed both
    // forms' complaints and "must match a schema in anyOf").
    const refused = async (payload: unknown) => {
      const text = JSON.stringify(payload);
      const res = await deliver(p, text);
      assert.equal(res.statusCode, 400, text);
      return res.json().message;
    };
    assert.match(
      await refused({ type: 'exploded', messageId: `${id}:1` }),
      /^body\/type must be one of "delivered", /,
    );
    assert.match(
      await refused({ events: [{ type: 'exploded', messageId: 'm' }] }),
      /^body\/events\/0\/type must be one of /,
    );
    assert.equal(
      await refused({ type: 'delivered' }),
      'body must have messageId: send {type, messageId} or {events: [...]}',
    );
    assert.equal(await refused({}), 'body must have type: send {type, messageId} or {events: [...]}');
    assert.match(
      await refused({ type: 'delivered', messageId: 'm', events: [{ type: 'opened', messageId: 'm' }] }),
      /not both in one body/,
    );
  });

  it('when a client follows /events, then it gets progress events and an end event', async () => {
    const p = await startPlatform({ modules: [senderModule], listen: true });
    const res = await inject(p, 'POST', '/api/batches', {
      channel: 'mock',
      ratePerSecond: 500,
      template,
      recipients: Array.from({ length: 1500 }, (_, i) => ({ address: `s${i}` })),
    });
    const id = res.json().id;
    const stream = await fetch(`${p.address()}/api/batches/${id}/events`, { headers: p.auth });
    assert.equal(stream.status, 200);
    assert.match(stream.headers.get('content-type') ?? '', /text\/event-stream/);
    const text = await stream.text(); // the server ends the stream when the batch is finished
    const progress = [...text.matchAll(/event: progress\ndata: (.*)\n/g)].map((m) => JSON.parse(m[1]!));
    assert.ok(progress.length >= 2, `several progress events (${progress.length})`);
    assert.equal(progress.at(-1).progress.sent, 1500);
    assert.match(text, /event: end\ndata: \{"state":"completed"\}/);
  });
});
