import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countRows, startPlatform, type TestPlatform, waitFor } from '../../../test/helpers.ts';
import { eventsModule } from './index.ts';
import { countBacklog } from './metrics.ts';

/** A dead letter as the worker writes one, with this payload. */
async function deadLetter(p: TestPlatform, id: number, payload: object): Promise<void> {
  await p.kit.pool.query(
    `INSERT INTO events_dead_letter (id, payload, error, received_at) VALUES ($1, $2, 'test', now())`,
    [id, JSON.stringify(payload)], // stringified: pg would send an array as a PostgreSQL array
  );
}

describe('events dead letters: retry and delete', () => {
  it('when bad_schema dead-lettered valid events and is switched off, then a bulk retry counts every event once', async () => {
    const p = await startPlatform({ modules: [eventsModule], env: { WORKER_FAILURE_MODE: 'bad_schema' } });
    const events = Array.from({ length: 300 }, (_, i) => ({
      userId: `u${i % 7}`,
      action: i % 2 ? 'click' : 'view',
      messageId: `m${i}`,
      properties: { i },
    }));
    const sent = await p.app.inject({ method: 'POST', url: '/api/events', headers: p.auth, payload: events });
    assert.equal(sent.statusCode, 201, sent.body);
    await waitFor(async () => (await countBacklog(p.kit.pool)) === 0, { what: 'backlog drained' });
    const dead = await countRows(p, 'events_dead_letter');
    assert.ok(dead > 0, 'bad_schema dead-lettered some');
    const off = await p.app.inject({
      method: 'POST',
      url: '/api/admin/chaos',
      headers: p.auth,
      payload: { module: 'events', worker: 'none' },
    });
    assert.equal(off.statusCode, 200, off.body);

    // Two pages: the first call's `next` leads to the rest.
    const first = await p.app.inject({
      method: 'POST',
      url: `/api/events/dead-letters/retry?limit=${dead - 1}`,
      headers: p.auth,
    });
    assert.equal(first.statusCode, 200, first.body);
    assert.equal(first.json().retried, dead - 1);
    assert.equal(first.json().invalid, 0);
    assert.equal(typeof first.json().next, 'number');
    const rest = await p.app.inject({
      method: 'POST',
      // limit=1: the last page exactly full, and still next: null (nothing is left to ask for).
      url: `/api/events/dead-letters/retry?after=${first.json().next}&limit=1`,
      headers: p.auth,
    });
    assert.deepEqual(rest.json(), { retried: 1, invalid: 0, invalidSamples: [], next: null });
    assert.equal(p.logs.events('EVENTS_DEAD_LETTERS_RETRIED').length, 2);

    await waitFor(async () => (await countRows(p, 'events_processed')) === 300, {
      what: 'all 300 processed',
    });
    assert.equal(await countRows(p, 'events_dead_letter'), 0);
    const totals = (await p.app.inject({ url: '/api/analytics', headers: p.auth })).json();
    assert.equal(totals.totalEvents, 300);
    assert.equal(totals.eventsByAction.click, 150);
    const { rows } = await p.kit.pool.query(
      `SELECT count(DISTINCT message_id)::int AS ids, sum((properties ->> 'i')::int)::int AS sum FROM events_processed`,
    );
    assert.deepEqual(rows[0], { ids: 300, sum: (299 * 300) / 2 }, 'each event once, properties kept');
  });

  it('when a dead letter is still invalid, a whole batch or unknown, then retry says why and it stays; delete removes it', async () => {
    const p = await startPlatform({ modules: [eventsModule] });
    const future = new Date(Date.now() + 3 * 24 * 3600 * 1000).toISOString();
    await deadLetter(p, 1, { userId: 'u', action: 'a', timestamp: future, source: 'api' });
    await deadLetter(p, 2, { batch: '[{"userId":"u\\u0000"}]', source: 'api' });
    await deadLetter(p, 3, { event: null, source: 'segment' });
    await deadLetter(p, 4, { userId: 'ok', action: 'fine', source: 'segment' });
    // Written around the worker (which wraps a non-object as {event}): the payload is the array itself.
    await deadLetter(p, 5, [{ userId: 'u', action: 'a' }]);
    await deadLetter(p, 6, { event: [1, 2], source: 'api' });
    const retry = (id: number | string) =>
      p.app.inject({ method: 'POST', url: `/api/events/dead-letters/${id}/retry`, headers: p.auth });

    const stillBad = await retry(1);
    assert.equal(stillBad.statusCode, 422);
    assert.match(
      stillBad.json().message,
      /dead letter 1 cannot be retried: timestamp .*future.*POST \/api\/events/,
    );
    assert.match((await retry(2)).json().message, /whole stored batch .*runbook \(EventsDeadLettered\)/);
    assert.match((await retry(3)).json().message, /it holds null, not an event object/);
    for (const array of [5, 6]) {
      const res = await retry(array);
      assert.equal(res.statusCode, 422);
      assert.match(
        res.json().message,
        /it holds an array \[.*\], not an event object \{userId, action[^}]*\}\. Delete it/,
      );
      assert.doesNotMatch(res.json().message, /not a known field/);
    }
    assert.equal((await retry(99)).statusCode, 404);
    assert.match((await retry(99)).json().message, /dead letter 99 not found: list them/);
    assert.equal((await retry('abc')).statusCode, 400);

    const bulk = await p.app.inject({
      method: 'POST',
      url: '/api/events/dead-letters/retry',
      headers: p.auth,
    });
    assert.equal(bulk.json().retried, 1);
    assert.deepEqual(
      bulk.json().invalidSamples.map((s: { id: number }) => s.id),
      [1, 2, 3, 5, 6],
    );
    assert.equal(bulk.json().next, null);
    await waitFor(async () => (await countRows(p, 'events_processed')) === 1, {
      what: 'the valid one processed',
    });
    const { rows } = await p.kit.pool.query('SELECT user_id, source FROM events_processed');
    assert.deepEqual(rows, [{ user_id: 'ok', source: 'segment' }], 'its source kept');
    assert.equal(await countRows(p, 'events_dead_letter'), 5, 'the invalid ones stay');

    const del = await p.app.inject({ method: 'DELETE', url: '/api/events/dead-letters/1', headers: p.auth });
    assert.deepEqual(del.json(), { deleted: 1 });
    const again = await p.app.inject({
      method: 'DELETE',
      url: '/api/events/dead-letters/1',
      headers: p.auth,
    });
    assert.equal(again.statusCode, 404);
    // " " was read as 0 and "0x02" as 2 (and deleted it).
    for (const id of ['%20', '0x02']) {
      const odd = await p.app.inject({
        method: 'DELETE',
        url: `/api/events/dead-letters/${id}`,
        headers: p.auth,
      });
      assert.equal(odd.statusCode, 400, id);
      assert.match(odd.json().message, /^params\/id must be a whole number in decimal digits/);
    }
    assert.equal(await countRows(p, 'events_dead_letter'), 4);
  });

  it('when the list is read a page at a time, then every dead letter shows once, newest first, ties by id', async () => {
    const p = await startPlatform({ modules: [eventsModule] });
    // Five with one failed_at (a tie), then two later ones.
    await p.kit.pool.query(
      `INSERT INTO events_dead_letter (id, payload, error, received_at)
       SELECT i, '{}'::jsonb, 'test', now() FROM generate_series(10, 14) AS i`,
    );
    await p.kit.pool.query(
      `INSERT INTO events_dead_letter (id, payload, error, received_at, failed_at)
       VALUES (3, '{}', 'test', now(), now() + interval '1 second'), (4, '{}', 'test', now(), now() + interval '2 seconds')`,
    );
    const seen: number[] = [];
    let before: string | null = null;
    let pages = 0;
    for (let page = 0; page < 10; page++) {
      pages++;
      const url: string = `/api/events/dead-letters?limit=2${before ? `&before=${before}` : ''}`;
      const res = (await p.app.inject({ url, headers: p.auth })).json();
      assert.equal(res.total, 7);
      seen.push(...res.deadLetters.map((d: { id: number }) => d.id));
      before = res.next;
      if (!before) break;
    }
    assert.deepEqual(seen, [4, 3, 14, 13, 12, 11, 10]);
    assert.equal(pages, 4, 'the page of one is the last: no empty page after it');
    // A last page that is exactly full says so too.
    const all = (await p.app.inject({ url: '/api/events/dead-letters?limit=7', headers: p.auth })).json();
    assert.equal(all.deadLetters.length, 7);
    assert.equal(all.next, null);
    for (const cursor of [
      'yesterday',
      '2026-02-30T00:00:00.000000Z_1',
      '2026-01-01T24:00:00.000000Z_1',
      '0000-01-01T00:00:00.000000Z_1',
    ]) {
      const bad = await p.app.inject({ url: `/api/events/dead-letters?before=${cursor}`, headers: p.auth });
      assert.equal(bad.statusCode, 400, cursor);
      assert.match(bad.json().message, /before must be the `next` of the previous page/);
    }
  });

  it('when the same dead letter is retried twice at once, then one call requeues it and the other gets 404', async () => {
    const p = await startPlatform({ modules: [eventsModule] });
    await deadLetter(p, 7, { userId: 'twice', action: 'a', source: 'api' });
    const calls = await Promise.all(
      [0, 1].map(() =>
        p.app.inject({ method: 'POST', url: '/api/events/dead-letters/7/retry', headers: p.auth }),
      ),
    );
    assert.deepEqual(calls.map((c) => c.statusCode).sort(), [200, 404]);
    await waitFor(async () => (await countRows(p, 'events_processed')) === 1, { what: 'processed' });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await p.app.inject({ url: '/api/analytics', headers: p.auth })).json().totalEvents, 1);
  });
});
