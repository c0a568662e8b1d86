// The books API in the single-process default (in-process RPC) on real PostgreSQL: seed 002's curl
// examples, every 4xx path, optimistic concurrency, filters and cursor pagination, racks, metrics.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startPlatform } from '../../../test/helpers.ts';
import { booksModule } from './index.ts';
import { forgetCreateKeys } from './queries.ts';

const SEED_BOOK = {
  type: 'book',
  tags: ['fiction', 'bestseller'],
  info: { name: 'Book Title', author: 'Author Name', status: 'available' },
  rack_id: 'book-rack-001',
};

describe('books API (single process)', async () => {
  const p = await startPlatform({ modules: [booksModule] });
  const call = (method: string, url: string, body?: unknown, headers: Record<string, string> = {}) =>
    p.app.inject({
      method: method as 'GET',
      url,
      headers: { ...p.auth, ...headers },
      ...(body === undefined ? {} : { payload: body as object }),
    });
  const create = async (over: Record<string, unknown> = {}, info: Record<string, unknown> = {}) => {
    const res = await call('POST', '/books', { ...SEED_BOOK, ...over, info: { ...SEED_BOOK.info, ...info } });
    assert.equal(res.statusCode, 201, res.body);
    return res.json().data;
  };
  const expect4xx = async (res: Awaited<ReturnType<typeof call>>, status: number, message: RegExp) => {
    assert.equal(res.statusCode, status, res.body);
    const body = res.json();
    assert.equal(body.statusCode, status);
    assert.equal(typeof body.error, 'string');
    assert.match(body.message, message);
  };

  describe("seed 002's curl examples", () => {
    it('when the seed creates, lists, updates, checks out, returns and deletes a book with an API key, then each answers the envelope', async () => {
      const created = await p.app.inject({
        method: 'POST',
        url: '/books',
        headers: { 'x-api-key': p.key, 'content-type': 'application/json' },
        payload: JSON.stringify(SEED_BOOK),
      });
      assert.equal(created.statusCode, 201);
      const c = created.json();
      assert.equal(c.statusCode, 201);
      assert.equal(typeof c.message, 'string');
      assert.match(c.data.id, /^[0-9a-f-]{36}$/);
      assert.deepEqual(
        {
          type: c.data.type,
          tags: c.data.tags,
          info: c.data.info,
          rack_id: c.data.rack_id,
          version: c.data.version,
        },
        { ...SEED_BOOK, version: 1 },
      );
      assert.equal(created.headers.location, `/books/${c.data.id}`);
      assert.equal(created.headers.etag, '"1"');
      const id = c.data.id;

      const list = (await call('GET', '/books')).json();
      assert.equal(list.statusCode, 200);
      assert.equal(list.message, 'Success');
      assert.ok(list.data.some((b: { id: string }) => b.id === id));

      const put = await call('PUT', `/books/${id}`, {
        ...SEED_BOOK,
        info: { ...SEED_BOOK.info, name: 'New Title' },
      });
      assert.equal(put.statusCode, 200, put.body);
      assert.equal(put.json().data.info.name, 'New Title');
      assert.equal(put.json().data.version, 2);

      const out = await call('POST', '/checkout', { id, info: { status: 'checked-out' } });
      assert.equal(out.statusCode, 200, out.body);
      assert.deepEqual(out.json().data.info, {
        name: 'New Title',
        author: 'Author Name',
        status: 'checked-out',
      });
      const back = await call('POST', '/checkout', { id, info: { status: 'available' } });
      assert.equal(back.statusCode, 200);
      assert.equal(back.json().data.info.status, 'available');

      const del = await call('DELETE', `/books/${id}`);
      assert.equal(del.statusCode, 200);
      assert.equal(del.json().data.id, id);
      assert.equal((await call('GET', `/books/${id}`)).statusCode, 404);
    });

    it('when no API key or a wrong one is sent, then 401', async () => {
      assert.equal((await p.app.inject({ url: '/books' })).statusCode, 401);
      const wrong = await p.app.inject({ url: '/racks', headers: { 'x-api-key': 'nope' } });
      assert.equal(wrong.statusCode, 401);
      assert.match(wrong.json().message, /credentials/);
    });
  });

  describe('validation (400)', () => {
    const cases: [string, unknown, RegExp][] = [
      ['info.name is missing', { ...SEED_BOOK, info: { author: 'A' } }, /body\.info\.name is required/],
      ['rack_id is missing', { type: 'book', info: { name: 'N', author: 'A' } }, /body\.rack_id is required/],
      [
        'status is unknown',
        { ...SEED_BOOK, info: { name: 'N', author: 'A', status: 'lost' } },
        /status must be one of: available, checked-out/,
      ],
      ['a field is misspelt', { ...SEED_BOOK, rackId: 'r' }, /unknown field "rackId"/],
      ['rack_id has a space', { ...SEED_BOOK, rack_id: 'rack 1' }, /rack_id may hold only letters/],
      // Before: "must be equal to constant", which did not say the value.
      ['type is not book', { ...SEED_BOOK, type: 'magazine' }, /^body\.type must be "book"$/],
      [
        'an available book has a borrower',
        { ...SEED_BOOK, info: { name: 'N', author: 'A', borrower: 'ann' } },
        /borrower is only allowed when/,
      ],
      [
        'name is empty',
        { ...SEED_BOOK, info: { name: '', author: 'A' } },
        /body\.info\.name must NOT have fewer than 1 characters/,
      ],
    ];
    for (const [what, body, message] of cases) {
      it(`when POST /books is sent with ${what}, then 400 says what to fix`, async () => {
        await expect4xx(await call('POST', '/books', body), 400, message);
      });
    }

    it('when JSON is sent as text/plain, then 415 says to send application/json', async () => {
      // Before: 400 "body must be object", on POST /books, PUT /books/:id and POST /checkout alike.
      for (const [method, url] of [
        ['POST', '/books'],
        ['PUT', '/books/00000000-0000-4000-8000-000000000000'],
        ['POST', '/checkout'],
      ] as const) {
        const res = await call(method, url, JSON.stringify(SEED_BOOK), { 'content-type': 'text/plain' });
        await expect4xx(
          res,
          415,
          /^Content-Type text\/plain is not accepted by .*: send Content-Type: application\/json$/,
        );
      }
    });

    it("when a NUL character reaches PostgreSQL, then the 400 is counted as the caller's, not as an error", async () => {
      const nul = await call('POST', '/books', { ...SEED_BOOK, info: { name: 'x\u0000', author: 'A' } });
      await expect4xx(nul, 400, /NUL character/);
      await expect4xx(await call('GET', '/books?q=%00'), 400, /NUL character/);
      const text = (await p.app.inject('/metrics')).body;
      // Before: outcome="error" on both, and on the RPC calls the TesseraRpcErrors alert watches.
      assert.doesNotMatch(text, /^books_operations_total\{operation="(create|list)",outcome="error"/m);
      assert.match(text, /^books_operations_total\{operation="create",outcome="invalid",role="all"\} [1-9]/m);
      assert.doesNotMatch(
        text,
        /^tessera_rpc_duration_seconds_count\{[^}]*service="books"[^}]*outcome="error"/m,
      );
      assert.match(
        text,
        /^tessera_rpc_duration_seconds_count\{[^}]*service="books",method="create",transport="local",outcome="400"\} [1-9]/m,
      );
    });

    it('when POST /books is sent malformed JSON, then 400', async () => {
      const res = await p.app.inject({
        method: 'POST',
        url: '/books',
        headers: { ...p.auth, 'content-type': 'application/json' },
        payload: '{"type":',
      });
      await expect4xx(res, 400, /not valid JSON/);
    });

    it('when PUT changes nothing, names another id, or If-Match is malformed or disagrees with the body, then 400', async () => {
      const b = await create();
      await expect4xx(await call('PUT', `/books/${b.id}`, {}), 400, /nothing to update/);
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { id: '00000000-0000-4000-8000-000000000000', tags: [] }),
        400,
        /does not match/,
      );
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { tags: [] }, { 'if-match': 'abc' }),
        400,
        /If-Match must be/,
      );
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { tags: [], version: 2 }, { 'if-match': '"1"' }),
        400,
        /If-Match asks for version 1 but the body's version is 2/,
      );
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { tags: [], version: 2 ** 53 }),
        400,
        /version must be <=/,
      );
      await expect4xx(
        await call('DELETE', `/books/${b.id}`, undefined, { 'if-match': 'x' }),
        400,
        /If-Match/,
      );
    });

    it('when PUT sends only a status or borrower, then a change is the 409 that points to /checkout and the same values are nothing to update', async () => {
      const b = await create();
      // Before: "nothing to update" (400) for both, which hid why the checkout asked for was not made.
      for (const info of [{ status: 'checked-out' }, { borrower: 'ann' }]) {
        await expect4xx(
          await call('PUT', `/books/${b.id}`, { info }),
          409,
          /is available: status and borrower change only through POST \/checkout/,
        );
      }
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { info: { status: 'available' } }),
        400,
        /nothing to update/,
      );
      await expect4xx(
        await call('PUT', '/books/00000000-0000-4000-8000-000000000000', { info: { status: 'available' } }),
        404,
        /no book with id/,
      );
    });

    it('when GET /books gets an unknown filter, a bad status, a limit over 200 or a forged cursor, then 400', async () => {
      await expect4xx(await call('GET', '/books?colour=red'), 400, /unknown field "colour"/);
      await expect4xx(await call('GET', '/books?status=gone'), 400, /status must be one of/);
      await expect4xx(await call('GET', '/books?limit=500'), 400, /limit must be <= 200/);
      await expect4xx(await call('GET', '/books?cursor=bm9wZQ'), 400, /pass nextCursor/);
      const b = await create();
      await expect4xx(await call('GET', `/books/${b.id}/history?cursor=bm9wZQ`), 400, /pass nextCursor/);
    });

    it('when POST /checkout has no id, a bad status, or a borrower on a return, then 400', async () => {
      const b = await create();
      await expect4xx(
        await call('POST', '/checkout', { info: { status: 'checked-out' } }),
        400,
        /body\.id is required/,
      );
      await expect4xx(
        await call('POST', '/checkout', { id: b.id, info: { status: 'borrowed' } }),
        400,
        /must be one of/,
      );
      await expect4xx(
        await call('POST', '/checkout', { id: b.id, info: { status: 'available', borrower: 'ann' } }),
        400,
        /borrower is only for a checkout/,
      );
    });
  });

  describe('unknown books (404)', () => {
    const unknown = '0b6c3d0e-9c55-4c6e-9a8e-1e9d2f0b7a11';
    for (const [method, url, body] of [
      ['GET', `/books/${unknown}`, undefined],
      ['GET', '/books/not-a-uuid', undefined],
      ['PUT', `/books/${unknown}`, { tags: ['x'] }],
      ['DELETE', `/books/${unknown}`, undefined],
      ['GET', `/books/${unknown}/history`, undefined],
      ['POST', '/checkout', { id: unknown, info: { status: 'checked-out' } }],
      ['POST', '/checkout', { id: 'nope', info: { status: 'available' } }],
    ] as const) {
      it(`when ${method} ${url} names no book, then 404`, async () => {
        await expect4xx(await call(method, url, body), 404, /no book with id/);
      });
    }
  });

  describe('optimistic concurrency and status rules (409)', () => {
    it('when a PUT carries a stale version in If-Match or the body, then 409 and the book is not overwritten', async () => {
      const b = await create();
      const first = await call('PUT', `/books/${b.id}`, { tags: ['a'] }, { 'if-match': '"1"' });
      assert.equal(first.statusCode, 200);
      assert.equal(first.headers.etag, '"2"');
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { tags: ['stale'] }, { 'if-match': '"1"' }),
        409,
        /is at version 2, not 1/,
      );
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { tags: ['stale'], version: 1 }),
        409,
        /version 2, not 1/,
      );
      const now = (await call('GET', `/books/${b.id}`)).json().data;
      assert.deepEqual(now.tags, ['a']);
      assert.equal(now.version, 2);
      assert.equal(
        (await call('PUT', `/books/${b.id}`, { tags: ['b'] }, { 'if-match': 'W/"2"' })).statusCode,
        200,
      );
    });

    it('when 10 PUTs race with the same If-Match, then exactly one wins and the others get 409', async () => {
      const b = await create();
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          call('PUT', `/books/${b.id}`, { tags: [`t${i}`] }, { 'if-match': '"1"' }),
        ),
      );
      const codes = results.map((r) => r.statusCode).sort();
      assert.deepEqual(codes, [200, ...Array(9).fill(409)]);
      assert.equal((await call('GET', `/books/${b.id}`)).json().data.version, 2);
    });

    it('when a PUT tries to change status or borrower, then 409 points to POST /checkout', async () => {
      const b = await create();
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { info: { name: 'X', status: 'checked-out' } }),
        409,
        /change only through POST \/checkout/,
      );
      // Repeating the current status is fine: a fetched book can be sent back whole.
      const whole = (await call('GET', `/books/${b.id}`)).json().data;
      const res = await call('PUT', `/books/${b.id}`, {
        ...whole,
        info: { ...whole.info, name: 'Same status' },
      });
      assert.equal(res.statusCode, 200, res.body);
      await call('POST', '/checkout', { id: b.id, info: { status: 'checked-out', borrower: 'ann' } });
      await expect4xx(
        await call('PUT', `/books/${b.id}`, { info: { name: 'X', status: 'checked-out', borrower: 'bob' } }),
        409,
        /checked-out by ann/,
      );
    });

    it('when a checked-out book or a stale version is deleted, then 409 and the book stays', async () => {
      const b = await create();
      await expect4xx(
        await call('DELETE', `/books/${b.id}`, undefined, { 'if-match': '"7"' }),
        409,
        /version 1, not 7/,
      );
      await call('POST', '/checkout', { id: b.id, info: { status: 'checked-out' } });
      await expect4xx(
        await call('DELETE', `/books/${b.id}`),
        409,
        /return it with POST \/checkout before deleting/,
      );
      assert.equal((await call('GET', `/books/${b.id}`)).statusCode, 200);
    });

    it('when a checked-out book is checked out again or an available book is returned, then 409', async () => {
      const b = await create();
      await expect4xx(
        await call('POST', '/checkout', { id: b.id, info: { status: 'available' } }),
        409,
        /not checked out/,
      );
      assert.equal(
        (await call('POST', '/checkout', { id: b.id, info: { status: 'checked-out', borrower: 'ann' } }))
          .statusCode,
        200,
      );
      await expect4xx(
        await call('POST', '/checkout', { id: b.id, info: { status: 'checked-out' } }),
        409,
        /already checked out by ann/,
      );
    });

    it('when 20 checkouts of one book race, then exactly one wins; when 20 returns race, exactly one wins', async () => {
      const b = await create();
      const race = async (status: string) =>
        (
          await Promise.all(
            Array.from({ length: 20 }, (_, i) =>
              call('POST', '/checkout', {
                id: b.id,
                info: { status, ...(status === 'checked-out' ? { borrower: `r${i}` } : {}) },
              }),
            ),
          )
        )
          .map((r) => r.statusCode)
          .sort();
      assert.deepEqual(await race('checked-out'), [200, ...Array(19).fill(409)]);
      assert.deepEqual(await race('available'), [200, ...Array(19).fill(409)]);
      const history = (await call('GET', `/books/${b.id}/history`)).json().data;
      assert.deepEqual(
        history.map((h: { action: string }) => h.action),
        ['checkout', 'return'],
      );
      assert.equal(history[0].borrower, history[1].borrower, 'the return records who had it');
      assert.equal((await call('GET', `/books/${b.id}`)).json().data.version, 3);
    });
  });

  describe('history', () => {
    it('when a book is checked out and returned three times, then history lists six entries in order, pageable', async () => {
      const b = await create();
      for (const who of ['ann', 'bob', 'cy']) {
        assert.equal(
          (await call('POST', '/checkout', { id: b.id, info: { status: 'checked-out', borrower: who } }))
            .statusCode,
          200,
        );
        assert.equal(
          (await call('POST', '/checkout', { id: b.id, info: { status: 'available' } })).statusCode,
          200,
        );
      }
      const first = (await call('GET', `/books/${b.id}/history?limit=4`)).json();
      assert.equal(first.data.length, 4);
      assert.ok(first.nextCursor);
      const second = (await call('GET', `/books/${b.id}/history?limit=4&cursor=${first.nextCursor}`)).json();
      assert.equal(second.nextCursor, null);
      const all = [...first.data, ...second.data];
      assert.deepEqual(
        all.map(
          (h: { action: string; borrower: string; version: number }) =>
            `${h.action}:${h.borrower}:${h.version}`,
        ),
        ['checkout:ann:2', 'return:ann:3', 'checkout:bob:4', 'return:bob:5', 'checkout:cy:6', 'return:cy:7'],
      );
    });

    it('when a book is created checked out, then its history starts with that checkout; an untouched book has an empty history', async () => {
      const lent = await create({}, { status: 'checked-out', borrower: 'dee' });
      assert.deepEqual(lent.info, { ...SEED_BOOK.info, status: 'checked-out', borrower: 'dee' });
      const h = (await call('GET', `/books/${lent.id}/history`)).json().data;
      assert.deepEqual(
        h.map((e: { action: string; borrower: string }) => [e.action, e.borrower]),
        [['checkout', 'dee']],
      );
      const fresh = await create();
      const empty = await call('GET', `/books/${fresh.id}/history`);
      assert.equal(empty.statusCode, 200);
      assert.deepEqual(empty.json().data, []);
    });
  });

  describe('Idempotency-Key on POST /books', () => {
    const withKey = (key: string, over: Record<string, unknown> = {}) =>
      call('POST', '/books', { ...SEED_BOOK, rack_id: 'idem-rack', ...over }, { 'idempotency-key': key });
    const booksOnRack = async () =>
      (await p.kit.pool.query(`SELECT count(*)::int AS n FROM books WHERE rack_id = 'idem-rack'`)).rows[0].n;

    it('when a create is sent again with its key, then the book is made once and the repeat answers it, marked replayed', async () => {
      const first = await withKey('retry-1');
      assert.equal(first.statusCode, 201, first.body);
      assert.equal(first.headers['idempotent-replayed'], undefined);
      const again = await withKey('"retry-1"'); // the header's quoted-string form is the same key
      assert.equal(again.statusCode, 201, again.body);
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.equal(again.json().data.id, first.json().data.id);
      assert.equal(again.headers.location, first.headers.location);
      assert.equal(await booksOnRack(), 1);
    });

    it('when 20 creates with one key race, then one book, and every answer names it', async () => {
      const before = await booksOnRack();
      const answers = await Promise.all(Array.from({ length: 20 }, () => withKey('race-1')));
      assert.deepEqual(new Set(answers.map((r) => r.statusCode)), new Set([201]));
      assert.equal(new Set(answers.map((r) => r.json().data.id)).size, 1);
      assert.equal(answers.filter((r) => r.headers['idempotent-replayed'] !== 'true').length, 1);
      assert.equal(await booksOnRack(), before + 1);
    });

    it('when a key is sent with a different book, or is malformed, or its book was deleted, then a 4xx says what to do', async () => {
      assert.equal((await withKey('reused-1')).statusCode, 201);
      await expect4xx(
        await withKey('reused-1', { tags: ['other'] }),
        422,
        /^Idempotency-Key "reused-1" was sent at .* with a different book: send a new key for each book you create$/,
      );
      for (const bad of ['', 'has space', 'x'.repeat(256), 'caf\u00e9'])
        await expect4xx(
          await withKey(bad),
          400,
          /^Idempotency-Key must be one value of 1 to 255 visible ASCII/,
        );
      const made = (await withKey('deleted-1')).json().data;
      assert.equal((await call('DELETE', `/books/${made.id}`)).statusCode, 200);
      await expect4xx(
        await withKey('deleted-1'),
        409,
        new RegExp(`^book ${made.id}, created with Idempotency-Key "deleted-1", has since been deleted`),
      );
    });

    it('when a key is older than 24 hours, then books:forget-create-keys drops it and the key makes a new book', async () => {
      const first = (await withKey('old-1')).json().data;
      await p.kit.pool.query(
        `UPDATE book_create_keys SET created_at = now() - interval '25 hours' WHERE key = 'old-1'`,
      );
      assert.equal(await forgetCreateKeys(p.kit.pool), 1);
      const later = await withKey('old-1');
      assert.equal(later.statusCode, 201);
      assert.notEqual(later.json().data.id, first.id);
    });
  });

  describe('filters, search, pagination and racks', async () => {
    const p2 = await startPlatform({ modules: [booksModule] });
    const get = async (url: string) => {
      const res = await p2.app.inject({ url, headers: p2.auth });
      assert.equal(res.statusCode, 200, res.body);
      return res.json();
    };
    const names = (body: { data: { info: { name: string } }[] }) => body.data.map((b) => b.info.name);
    const books = [
      { name: 'Dune', author: 'Frank Herbert', tags: ['sf', 'classic'], rack_id: 'r1' },
      { name: 'Emma', author: 'Jane Austen', tags: ['classic'], rack_id: 'r1' },
      { name: 'Neuromancer', author: 'William Gibson', tags: ['sf'], rack_id: 'r2' },
      { name: 'Persuasion', author: 'JANE AUSTEN', tags: [], rack_id: 'r2' },
      { name: '100% Pure', author: 'Ann Other', tags: ['sf'], rack_id: 'r3' },
    ];
    for (const b of books) {
      const res = await p2.app.inject({
        method: 'POST',
        url: '/books',
        headers: p2.auth,
        payload: { tags: b.tags, info: { name: b.name, author: b.author }, rack_id: b.rack_id },
      });
      assert.equal(res.statusCode, 201);
      if (b.name === 'Neuromancer') {
        await p2.app.inject({
          method: 'POST',
          url: '/checkout',
          headers: p2.auth,
          payload: { id: res.json().data.id, info: { status: 'checked-out' } },
        });
      }
    }

    it('when GET /books filters by tag, status, rack_id, author or several, then only matching books come back in insertion order', async () => {
      assert.deepEqual(names(await get('/books?tag=sf')), ['Dune', 'Neuromancer', '100% Pure']);
      assert.deepEqual(names(await get('/books?status=checked-out')), ['Neuromancer']);
      assert.deepEqual(names(await get('/books?rack_id=r2')), ['Neuromancer', 'Persuasion']);
      assert.deepEqual(names(await get('/books?author=jane%20austen')), ['Emma', 'Persuasion']);
      assert.deepEqual(names(await get('/books?tag=sf&status=available&rack_id=r1')), ['Dune']);
      assert.deepEqual(names(await get('/books?tag=none')), []);
    });

    it('when q searches name and author, then substrings match case-insensitively and % is literal', async () => {
      assert.deepEqual(names(await get('/books?q=AUSTEN')), ['Emma', 'Persuasion']);
      assert.deepEqual(names(await get('/books?q=mance')), ['Neuromancer']);
      assert.deepEqual(names(await get('/books?q=herbert')), ['Dune']);
      assert.deepEqual(names(await get('/books?q=0%25')), ['100% Pure']);
      assert.deepEqual(names(await get('/books?q=%25')), ['100% Pure']);
    });

    it('when q searches, then PostgreSQL can answer from the trigram index', async () => {
      const client = await p2.kit.pool.connect();
      try {
        await client.query('SET enable_seqscan = off');
        const { rows } = await client.query(
          `EXPLAIN SELECT id FROM books WHERE (name || ' ' || author) ILIKE '%austen%' ORDER BY seq LIMIT 51`,
        );
        assert.match(rows.map((r) => r['QUERY PLAN']).join('\n'), /books_search_trgm_idx/);
      } finally {
        await client.query('RESET enable_seqscan');
        client.release();
      }
    });

    it('when GET /books is paged with limit 2, then the cursors walk every book exactly once', async () => {
      const seen: string[] = [];
      let url = '/books?limit=2';
      for (let i = 0; i < 10; i++) {
        const body = await get(url);
        seen.push(...names(body));
        if (!body.nextCursor) break;
        assert.equal(body.data.length, 2);
        url = `/books?limit=2&cursor=${body.nextCursor}`;
      }
      assert.deepEqual(
        seen,
        books.map((b) => b.name),
      );
    });

    it('when GET /racks is called, then each rack lists its book counts by status', async () => {
      const body = await get('/racks');
      assert.deepEqual(body.data, [
        { rack_id: 'r1', books: 2, available: 2, checkedOut: 0 },
        { rack_id: 'r2', books: 2, available: 1, checkedOut: 1 },
        { rack_id: 'r3', books: 1, available: 1, checkedOut: 0 },
      ]);
    });

    it('when /metrics is scraped, then books_total, operations by outcome and RPC latency by method are there', async () => {
      await p2.app.inject({ url: '/books/00000000-0000-4000-8000-000000000000', headers: p2.auth });
      const text = (await p2.app.inject('/metrics')).body;
      assert.match(text, /^books_total\{role="all"\} 5$/m);
      assert.match(text, /^books_operations_total\{operation="create",outcome="ok",role="all"\} 5$/m);
      assert.match(text, /^books_operations_total\{operation="checkout",outcome="ok",role="all"\} 1$/m);
      assert.match(text, /^books_operations_total\{operation="get",outcome="not_found",role="all"\} 1$/m);
      assert.match(
        text,
        /^tessera_rpc_duration_seconds_count\{role="all",service="books",method="list",transport="local",outcome="ok"\} [1-9]\d*$/m,
      );
    });
  });
});
