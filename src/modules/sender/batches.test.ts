// Batches on the mock channel: create (inline, Idempotency-Key), progress, lifecycle, retries, dry run.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform, type TestPlatform, waitFor } from '../../../test/helpers.ts';
import { mockProvider } from './channels.ts';
import { senderModule } from './index.ts';
import { batchFinished } from './test-peers.ts';

const template = { subject: 'Hi {{name}}', html: '<p>Hello {{name}}</p>', text: 'Hello {{name}}' };
const people = (n: number, prefix = 'p') =>
  Array.from({ length: n }, (_, i) => ({
    address: `${prefix}${i}@example.com`,
    variables: { name: `N${i}` },
  }));

async function post(p: TestPlatform, url: string, payload?: unknown, headers: Record<string, string> = {}) {
  return p.app.inject({
    method: 'POST',
    url,
    headers: { ...p.auth, ...headers },
    payload: payload as object,
  });
}
const finished = (p: TestPlatform, id: string, timeoutMs = 30000) => batchFinished(p, id, timeoutMs);
async function get(p: TestPlatform, url: string) {
  return p.app.inject({ method: 'GET', url, headers: p.auth });
}

/** Lets in-flight chunk jobs finish before the platform stops (graphile completes jobs lazily). */
async function quiet(p: TestPlatform, id: string) {
  await waitFor(async () => {
    const { rows } = await p.kit.pool.query(
      `SELECT count(*)::int AS n FROM sender_chunks WHERE batch_id = $1 AND state = 'running'`,
      [id],
    );
    return rows[0].n === 0;
  });
  await new Promise((r) => setTimeout(r, 300));
}

describe('sender batches (mock channel)', () => {
  it('when a batch of inline recipients is created, then every recipient is sent once and progress adds up', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    mockProvider.record = true;
    const res = await post(p, '/api/batches', { channel: 'mock', template, recipients: people(1200, 'a') });
    assert.equal(res.statusCode, 201, res.body);
    const created = res.json();
    assert.equal(created.progress.total, 1200);
    const b = await finished(p, created.id);
    assert.equal(b.state, 'completed');
    assert.deepEqual(
      {
        total: b.progress.total,
        sent: b.progress.sent,
        pending: b.progress.pending,
        failed: b.progress.failed,
      },
      { total: 1200, sent: 1200, pending: 0, failed: 0 },
    );
    const keys = [...mockProvider.accepted.entries()].filter(([k]) => k.startsWith(created.id));
    assert.equal(keys.length, 1200);
    assert.ok(
      keys.every(([, n]) => n === 1),
      'no recipient sent twice',
    );
    const r = (await get(p, `/api/batches/${created.id}/recipients?limit=2`)).json();
    assert.equal(r.recipients[0].state, 'sent');
    assert.equal(r.next, 2);
    const metrics = await (await p.app.inject({ method: 'GET', url: '/metrics' })).body;
    assert.match(metrics, /messages_sent_total\{channel="mock",status="sent"[^}]*\} 1200/);
  });

  it('when the same Idempotency-Key is sent twice, then the same batch comes back; a different body is 422', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const body = { channel: 'mock', template, recipients: people(3) };
    const a = await post(p, '/api/batches', body, { 'idempotency-key': 'k1' });
    const b = await post(p, '/api/batches', body, { 'idempotency-key': 'k1' });
    assert.equal(a.statusCode, 201);
    assert.equal(b.statusCode, 200);
    assert.equal(a.json().id, b.json().id);
    const c = await post(p, '/api/batches', { ...body, name: 'other' }, { 'idempotency-key': 'k1' });
    assert.equal(c.statusCode, 422);
    assert.match(c.json().message, /Idempotency-Key "k1" was already used/);
    const list = (await get(p, '/api/batches')).json();
    assert.equal(list.batches.length, 1);
    await finished(p, a.json().id);
  });

  it('when 30% of attempts fail transiently, then all are delivered in the end and none twice', async () => {
    // A 20 ms first retry: at 500 ms, one of 600 recipients failing 7 times in a row (p ≈ 0.13)
    // waits about a minute for its next try, longer than the test waits.
    const p = await startPlatform({ modules: [senderModule], env: { SENDER_RETRY_BASE_MS: '20' } });
    mockProvider.record = true;
    const res = await post(p, '/api/batches', {
      channel: 'mock',
      mock: { transientFailureRate: 0.3 },
      maxAttempts: 20,
      template,
      recipients: people(600, 't'),
    });
    const id = res.json().id;
    const b = await finished(p, id, 60000);
    assert.equal(b.progress.sent, 600);
    assert.equal(b.progress.failed, 0);
    const keys = [...mockProvider.accepted.entries()].filter(([k]) => k.startsWith(id));
    assert.equal(keys.length, 600);
    assert.ok(keys.every(([, n]) => n === 1));
    const { rows } = await p.kit.pool.query(
      'SELECT count(*)::int AS n FROM sender_recipients WHERE batch_id = $1 AND attempts > 1',
      [id],
    );
    assert.ok(rows[0].n > 0, 'some recipients needed a retry');
  });

  it('when a provider fails permanently, then the recipient fails with the reason and the rest are sent', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const res = await post(p, '/api/batches', {
      channel: 'mock',
      mock: { failureRate: 1 },
      template,
      recipients: people(5),
    });
    const b = await finished(p, res.json().id);
    assert.equal(b.state, 'failed');
    assert.equal(b.progress.failed, 5);
    assert.equal(b.error, 'every recipient failed');
    const r = (await get(p, `/api/batches/${b.id}/recipients?state=failed`)).json();
    assert.match(r.recipients[0].error, /permanent failure/);
    // Nothing sent, but not every recipient failed: the error says what became of them.
    assert.equal(
      (await post(p, '/api/suppressions', { addresses: ['p0@example.com', 'p1@example.com'] })).statusCode,
      201,
    );
    const mixed = await post(p, '/api/batches', {
      channel: 'mock',
      mock: { failureRate: 1 },
      template,
      recipients: people(3),
    });
    const m = await finished(p, mixed.json().id);
    assert.deepEqual([m.state, m.error], ['failed', 'nothing was sent: 1 failed, 2 suppressed']);
  });

  it('when a batch is paused, then sending stops; when resumed, then it completes; cancel stops the rest', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const res = await post(p, '/api/batches', {
      channel: 'mock',
      ratePerSecond: 200,
      template,
      recipients: people(3000, 'z'),
    });
    const id = res.json().id;
    await waitFor(async () => (await get(p, `/api/batches/${id}`)).json().progress.sent > 0);
    const paused = await post(p, `/api/batches/${id}/pause`);
    assert.equal(paused.statusCode, 200);
    assert.equal(paused.json().state, 'paused');
    await quiet(p, id); // the chunks that were running have seen the pause and let go
    const s1 = (await get(p, `/api/batches/${id}`)).json().progress.sent;
    await new Promise((r) => setTimeout(r, 1000));
    const s2 = (await get(p, `/api/batches/${id}`)).json().progress.sent;
    assert.equal(s2, s1, 'nothing sent while paused');
    assert.equal((await post(p, `/api/batches/${id}/pause`)).statusCode, 409);
    const resumed = await post(p, `/api/batches/${id}/resume`);
    assert.equal(resumed.json().state, 'sending');
    await waitFor(async () => (await get(p, `/api/batches/${id}`)).json().progress.sent > s2);
    const cancelled = await post(p, `/api/batches/${id}/cancel`);
    assert.equal(cancelled.json().state, 'cancelled');
    const b = await waitFor(async () => {
      const v = (await get(p, `/api/batches/${id}`)).json();
      return v.progress.pending === 0 ? v : undefined;
    });
    assert.equal(b.state, 'cancelled');
    assert.ok(b.progress.cancelled > 0);
    assert.equal(b.progress.sent + b.progress.cancelled, 3000);
    assert.equal((await post(p, `/api/batches/${id}/cancel`)).statusCode, 409);
    assert.equal((await post(p, `/api/batches/${id}/resume`)).statusCode, 409);
    await quiet(p, id);
  });

  it('when dryRun is set, then messages are rendered with HTML escaping and nothing is stored', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const res = await post(p, '/api/batches', {
      channel: 'mock',
      dryRun: true,
      template,
      recipients: [{ address: 'x@example.com', variables: { name: '<script>alert(1)</script>' } }],
    });
    assert.equal(res.statusCode, 200);
    const body = res.json();
    assert.equal(body.preview[0].html, '<p>Hello &lt;script&gt;alert(1)&lt;&#x2F;script&gt;</p>');
    assert.equal(body.preview[0].text, 'Hello <script>alert(1)</script>');
    assert.equal(body.preview[0].subject, 'Hi <script>alert(1)</script>');
    assert.equal((await get(p, '/api/batches')).json().batches.length, 0);
  });

  it('when batches are listed a page at a time, then each shows once, newest first, even those made in the same microsecond', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const made: string[] = [];
    for (let i = 0; i < 5; i++)
      made.push((await post(p, '/api/batches', { channel: 'mock', draft: true, template })).json().id);
    // Ties on created_at: a cursor of the time alone would skip or repeat batches at a page edge.
    await p.kit.pool.query(
      `UPDATE sender_batches SET created_at = '2026-12-04 10:00:00.123456+00' WHERE id = ANY($1)`,
      [made.slice(1, 4)],
    );
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 5; page++) {
      const res = await get(p, `/api/batches?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(res.statusCode, 200, res.body);
      const body: { batches: { id: string }[]; next: string | null } = res.json();
      seen.push(...body.batches.map((b) => b.id));
      cursor = body.next;
      if (!cursor) break;
    }
    assert.equal(seen.length, 5);
    assert.deepEqual(new Set(seen), new Set(made));
    assert.equal(seen[0], made[4], 'newest first');
    for (const bad of ['nope', Buffer.from('2026-12-04T10:00:00.000000Z|x').toString('base64url')]) {
      const res = await get(p, `/api/batches?cursor=${bad}`);
      assert.equal(res.statusCode, 400);
      assert.match(res.json().message, /^cursor is not one GET \/api\/batches gave/);
    }
  });

  it('when a dry run renders {{unsubscribeUrl}}, then it shows the link the send puts there, not a variable of that name', async () => {
    const p = await startPlatform({ modules: [senderModule] });
    const res = await post(p, '/api/batches', {
      channel: 'mock',
      dryRun: true,
      template: { subject: 's', text: 'Leave: {{unsubscribeUrl}}' },
      recipients: [{ address: 'x@example.com', variables: { unsubscribeUrl: 'https://evil.example' } }],
    });
    assert.equal(res.statusCode, 200, res.body);
    // Before: "Leave: https://evil.example", which no sent message would say.
    assert.equal(res.json().preview[0].text, 'Leave: (unsubscribe link)');
  });
});
