import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { parse } from 'csv-parse/sync';
import { startPlatform, waitFor, waitForLockWait } from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';
import { codesModule } from './index.ts';
import { CodePermutation } from './permutation.ts';

describe('codes: campaigns, generation, lookup, import and export', async () => {
  const p = await startPlatform({ modules: [codesModule] });
  const call = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown, headers = {}) =>
    p.app.inject({
      method,
      url,
      headers: { ...p.auth, ...headers },
      ...(payload === undefined ? {} : { payload: payload as string | object }),
    });
  const create = (id: string, format: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    call('POST', '/api/campaigns', { id, name: `campaign ${id}`, format, ...extra });
  const importJson = (id: string, body: string) =>
    call('POST', `/api/campaigns/${id}/codes/import`, body, { 'content-type': 'application/json' });

  it('when a campaign is created, then it shows its format, capacity, density and empty inventory', async () => {
    const res = await create('spring', { length: 8, alphabet: 'safe', prefix: 'SP-' });
    assert.equal(res.statusCode, 201, res.body);
    const c = res.json();
    assert.equal(c.format.alphabet, 'ABCDEFGHJKMNPQRSTUVWXYZ23456789');
    assert.equal(c.format.preset, 'safe');
    assert.equal(c.capacity, 31 ** 8);
    assert.equal(c.density, 0);
    assert.deepEqual(c.inventory, { available: 0, reserved: 0, assigned: 0, total: 0 });
    const again = await create('spring', { length: 8, alphabet: 'safe' });
    assert.equal(again.statusCode, 409);
    const list = (await call('GET', '/api/campaigns')).json();
    assert.deepEqual(
      list.campaigns.map((x: { id: string }) => x.id),
      ['spring'],
    );
  });

  it('when campaigns are listed a page at a time, then next is the after of the next page, null on the last', async () => {
    for (const id of ['page-a', 'page-b'])
      assert.equal((await create(id, { length: 6, alphabet: 'numeric' })).statusCode, 201);
    const first = (await call('GET', '/api/campaigns?limit=2')).json();
    assert.deepEqual(
      [first.campaigns.map((x: { id: string }) => x.id), first.next],
      [['page-a', 'page-b'], 'page-b'],
    );
    const last = (await call('GET', `/api/campaigns?limit=2&after=${first.next}`)).json();
    assert.deepEqual([last.campaigns.map((x: { id: string }) => x.id), last.next], [['spring'], null]);
  });

  it('when the format is bad, then 422 or 400 says what to fix', async () => {
    const cases: [Record<string, unknown>, number, RegExp][] = [
      [{ length: 3, alphabet: 'numeric' }, 422, /length must be a whole number from 4 to 32/],
      [{ length: 33, alphabet: 'numeric' }, 422, /from 4 to 32/],
      [{ length: 8, alphabet: '' }, 422, /at least 2 distinct characters/],
      [{ length: 8, alphabet: 'ABCA' }, 422, /"A" twice/],
      [{ length: 8, alphabet: 'AB C' }, 422, /may only use/],
      [{ length: 8, alphabet: 'numeric', prefix: 'a b' }, 422, /prefix/],
      [{ length: 'eight', alphabet: 'numeric' }, 400, /length/],
    ];
    for (const [format, status, message] of cases) {
      const res = await create(`bad-${Math.random().toString(36).slice(2, 8)}`, format);
      assert.equal(res.statusCode, status, `${JSON.stringify(format)}: ${res.body}`);
      assert.match(res.json().message, message);
    }
    // Past a PostgreSQL integer: the schema's 400, not the database's 500.
    const huge = await create('bad-huge', { length: 8, alphabet: 'numeric' }, { maxPerUser: 2 ** 53 });
    assert.equal(huge.statusCode, 400, huge.body);
    assert.match(huge.json().message, /maxPerUser must be <= 2147483647/);
  });

  it('when codes are generated, then they are unique, fit the format and count in the inventory', async () => {
    await create('gen', { length: 6, alphabet: 'numeric', prefix: 'G' });
    const res = await call('POST', '/api/campaigns/gen/codes', { count: 5000 });
    assert.equal(res.statusCode, 201, res.body);
    const { codes, generated } = res.json();
    assert.equal(generated, 5000);
    assert.equal(new Set(codes).size, 5000);
    for (const c of codes) assert.match(c, /^G[0-9]{6}$/);
    const more = (await call('POST', '/api/campaigns/gen/codes', { count: 3000 })).json().codes;
    assert.equal(new Set([...codes, ...more]).size, 8000);
    const c = (await call('GET', '/api/campaigns/gen')).json();
    assert.deepEqual(c.inventory, { available: 8000, reserved: 0, assigned: 0, total: 8000 });
    assert.equal(c.density, 8000 / 1e6);
  });

  it('when a generation would pass 1% density, then 422 explains and nothing is generated', async () => {
    const res = await call('POST', '/api/campaigns/gen/codes', { count: 5000 });
    assert.equal(res.statusCode, 422);
    assert.match(res.json().message, /past 1% of its 1000000 possible codes.*at most 2000 more fit/);
    assert.equal((await call('GET', '/api/campaigns/gen')).json().inventory.total, 8000);
  });

  it('when imports have already put a campaign past 1%, then the 422 says so rather than blaming the request', async () => {
    assert.equal((await create('tiny', { length: 4, alphabet: 'numeric' })).statusCode, 201);
    const codes = Array.from({ length: 200 }, (_, i) => String(i).padStart(4, '0'));
    assert.equal((await call('POST', '/api/campaigns/tiny/codes/import', codes)).json().inserted, 200);
    const res = await call('POST', '/api/campaigns/tiny/codes', { count: 1 });
    assert.equal(res.statusCode, 422);
    assert.match(
      res.json().message,
      /it already holds 200 generated or imported codes, at or past that limit of 100 \(an import may pass the limit; a generation may not\)/,
    );
  });

  it('when counts are negative, zero, huge or not whole, then 400 names the field', async () => {
    // A JSON body's types are its own: true, "5", [2] and null are not counts (coerced, they were 1, 5
    // and 2 codes, and null read as 0, "must be >= 1").
    for (const count of [-1, 0, 50_000_001, 1.5, 'many', true, '5', [2], null]) {
      const res = await call('POST', '/api/campaigns/gen/codes', { count });
      assert.equal(res.statusCode, 400, `count ${count}: ${res.body}`);
      assert.match(res.json().message, /count/);
      const r2 = await call('POST', '/api/campaigns/gen/reservations', { count });
      assert.equal(r2.statusCode, 400, `reserve count ${count}: ${r2.body}`);
      assert.match(r2.json().message, /count/);
      if (typeof count !== 'number' && count !== 'many')
        assert.equal(
          r2.json().message,
          'body/count must be integer',
          `reserve count ${JSON.stringify(count)}`,
        );
    }
    const typo = await call('POST', '/api/campaigns/gen/reservations', { count: 1, reserveID: 'x' });
    assert.equal(typo.statusCode, 400);
    assert.equal(
      typo.json().message,
      'body must NOT have the property "reserveID": it is not one of this request\'s fields',
    );
  });

  it('when the API is read at /openapi.json, then a route lists every error it can answer', async () => {
    const spec = (await p.app.inject({ url: '/openapi.json' })).json();
    const reserve = spec.paths['/api/campaigns/{id}/reservations'].post.responses;
    for (const status of ['400', '401', '403', '404', '409', '413', '415', '422', '503'])
      assert.ok(reserve[status], `reserve documents ${status}`);
    // A parameter with a default may be left out, so it is not listed as required.
    const listParams = spec.paths['/api/campaigns'].get.parameters;
    const limit = listParams.find((x: { name: string }) => x.name === 'limit');
    assert.deepEqual([limit.required, limit.schema.default], [false, 100]);
  });

  it('when the campaign is unknown, then 404 says how to create it', async () => {
    for (const [m, url, body] of [
      ['GET', '/api/campaigns/nope', undefined],
      ['POST', '/api/campaigns/nope/codes', { count: 1 }],
      ['POST', '/api/campaigns/nope/reservations', { count: 1 }],
      ['GET', '/api/campaigns/nope/codes/ABC', undefined],
      ['GET', '/api/campaigns/nope/codes.csv', undefined],
    ] as const) {
      const res = await call(m, url, body);
      assert.equal(res.statusCode, 404, `${m} ${url}`);
      assert.match(res.json().message, /campaign nope not found.*POST \/api\/campaigns/);
    }
  });

  it('when the content type is wrong, then 415 says which one to send', async () => {
    const res = await call('POST', '/api/campaigns/gen/codes', 'count=5', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    assert.equal(res.statusCode, 415);
    assert.match(res.json().message, /send application\/json/);
    const csv = await call('POST', '/api/campaigns/gen/reservations', 'a,b', { 'content-type': 'text/csv' });
    assert.equal(csv.statusCode, 415);
    // Before: "send Content-Type: application/json to …", not naming the type it got.
    assert.equal(
      csv.json().message,
      'Content-Type text/csv is not accepted by POST /api/campaigns/:id/reservations: send Content-Type: application/json',
    );
    const form = await call('POST', '/api/campaigns/gen/codes/import', 'x', {
      'content-type': 'multipart/form-data',
    });
    assert.equal(form.statusCode, 415);
    assert.match(form.json().message, /send text\/csv, text\/plain or application\/json$/);
    // JSON sent as a CSV: no code starts with [ or {, so it is said as JSON, not as a quoting error.
    for (const body of ['["TXT001","TXT002"]', '\uFEFF  \n {"codes": ["TXT001"]}']) {
      const asCsv = await call('POST', '/api/campaigns/gen/codes/import', body, {
        'content-type': 'text/csv',
      });
      assert.equal(asCsv.statusCode, 400, asCsv.body);
      assert.match(
        asCsv.json().message,
        /^the body starts with [[{], so it looks like JSON: send a JSON import with Content-Type: application\/json/,
      );
      assert.doesNotMatch(asCsv.json().message, /Imported before the error/, 'nothing was read to count');
    }
  });

  it('when a code is looked up, then its state and dates show; a code off-format is 404 saying the format', async () => {
    await create('look', { length: 5, alphabet: 'alphanumeric' });
    const [code] = (await call('POST', '/api/campaigns/look/codes', { count: 3 })).json().codes;
    const res = await call('GET', `/api/campaigns/look/codes/${code.toLowerCase()}`);
    assert.equal(res.statusCode, 200, res.body);
    const v = res.json();
    assert.equal(v.code, code);
    assert.equal(v.state, 'available');
    assert.equal(v.reserveId, null);
    assert.ok(Date.parse(v.createdAt));
    const off = await call('GET', '/api/campaigns/look/codes/TOO-LONG-1');
    assert.equal(off.statusCode, 404);
    assert.match(off.json().message, /its codes are 5 characters of ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$/);
  });

  it('when a one-case alphabet has a prefix of the other case, then a code typed in any case still matches', async () => {
    await create('win', { length: 6, alphabet: 'abcdefghjkmnpqrstuvwxyz', prefix: 'WIN-' });
    const [code] = (await call('POST', '/api/campaigns/win/codes', { count: 1 })).json().codes;
    assert.match(code, /^WIN-[a-z]{6}$/);
    for (const typed of [code, code.toUpperCase(), code.toLowerCase()]) {
      const res = await call('GET', `/api/campaigns/win/codes/${typed}`);
      assert.equal(res.statusCode, 200, `${typed}: ${res.body}`);
      assert.equal(res.json().code, code);
    }
    const imported = await call('POST', '/api/campaigns/win/codes/import', ['win-ABCDEF', 'WIN-abcdeF']);
    assert.deepEqual(imported.json(), { inserted: 1, duplicate: 1, invalid: 0, invalidSamples: [] });
    const off = await call('GET', '/api/campaigns/win/codes/WIN-1');
    assert.match(
      off.json().message,
      /its codes are "WIN-" followed by 6 characters of abcdefghjkmnpqrstuvwxyz$/,
    );
  });

  it('when the alphabet is digits only, then the prefix folds too: win-1234 is WIN-1234', async () => {
    await create('digits', { length: 4, alphabet: 'numeric', prefix: 'WIN-' });
    const imported = await call('POST', '/api/campaigns/digits/codes/import', ['win-1234', 'WIN-1234']);
    assert.deepEqual(imported.json(), { inserted: 1, duplicate: 1, invalid: 0, invalidSamples: [] });
    const res = await call('GET', '/api/campaigns/digits/codes/win-1234');
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json().code, 'WIN-1234');
  });

  it('when CSV and JSON lists are imported, then inserted, duplicate and invalid are counted and export streams them', async () => {
    await create('imp', { length: 6, alphabet: 'numeric' });
    const csv = ['code', '123456,first', '123456,again', '654321', 'xx', '', '"111111",quoted'].join('\n');
    const res = await call('POST', '/api/campaigns/imp/codes/import', csv, { 'content-type': 'text/csv' });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), { inserted: 3, duplicate: 1, invalid: 1, invalidSamples: ['xx'] });
    const js = await call('POST', '/api/campaigns/imp/codes/import', ['654321', '222222', 42]);
    // 42 is a JSON number, not the code "42" (numeric codes keep their leading zeros only as strings).
    assert.deepEqual(js.json(), { inserted: 1, duplicate: 1, invalid: 1, invalidSamples: ['42'] });
    const bad = await call('POST', '/api/campaigns/imp/codes/import', { nothing: true });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().message, /text\/csv.*a list such as .*\{"codes": \[/);
    // generation on top of imports never duplicates them
    const gen = await call('POST', '/api/campaigns/imp/codes', { count: 2000 });
    assert.equal(gen.statusCode, 201);
    const out = await call('GET', '/api/campaigns/imp/codes.csv');
    assert.equal(out.statusCode, 200);
    assert.match(out.headers['content-type'] as string, /text\/csv/);
    const lines = out.body.trim().split('\n');
    assert.equal(lines[0], 'code,state,reserveId,userId,createdAt,reservedAt,expiresAt,assignedAt');
    assert.equal(lines.length, 1 + 2004);
    assert.equal(new Set(lines.slice(1).map((l) => l.split(',')[0])).size, 2004);
    assert.ok(lines.some((l) => l.startsWith('123456,available,')));
    const states = new Set(lines.slice(1).map((l) => l.split(',')[1]));
    assert.deepEqual([...states], ['available'], 'imported and generated (unused) codes export as available');
    assert.equal((await call('GET', '/api/campaigns/imp')).json().inventory.total, 2004);
  });

  it('when a campaign is exported, then its dates are ISO 8601 UTC with milliseconds, as GET of a code shows them', async () => {
    await create('dates', { length: 6, alphabet: 'numeric' });
    await call('POST', '/api/campaigns/dates/codes/import', ['123456', '234567']);
    const reserved = await call('POST', '/api/campaigns/dates/reservations', { count: 1, reserveId: 'r1' });
    assert.equal(reserved.statusCode, 201, reserved.body);
    const [code] = reserved.json().codes;
    const assigned = await call('POST', '/api/campaigns/dates/reservations/r1/assign', { userId: 'u1' });
    assert.equal(assigned.statusCode, 200, assigned.body);
    // The other code stays reserved, so it has an expiry (an assigned code has none).
    const held = (await call('POST', '/api/campaigns/dates/reservations', { count: 1 })).json().codes[0];
    const [header, ...rows] = (await call('GET', '/api/campaigns/dates/codes.csv')).body.trim().split('\n');
    const fields = header!.split(',');
    const checks: [string, string[]][] = [
      [code, ['createdAt', 'reservedAt', 'assignedAt']],
      [held, ['createdAt', 'reservedAt', 'expiresAt']],
    ];
    for (const [c, names] of checks) {
      const shown = (await call('GET', `/api/campaigns/dates/codes/${c}`)).json();
      const row = rows.map((r) => r.split(',')).find((r) => r[0] === c)!;
      for (const name of names) {
        assert.match(shown[name], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, name);
        assert.equal(row[fields.indexOf(name)], shown[name], name);
      }
    }
    const assignedRow = rows.map((r) => r.split(',')).find((r) => r[0] === code)!;
    assert.equal(assignedRow[fields.indexOf('expiresAt')], '', 'an assigned code exports no expiry');
  });

  it("when a userId or reserveId starts with = + - @, a tab or a carriage return, then the export writes it after a ' so a spreadsheet does not run it", async () => {
    await create('formula', { length: 6, alphabet: 'numeric' });
    const users = ['=HYPERLINK("http://x")', '+1+1', '-2+3', '@SUM(1)', '\tx', '\rx', 'a=b', "'quoted", 'u1'];
    const codes = users.map((_, i) => String(100000 + i));
    await call('POST', '/api/campaigns/formula/codes/import', [...codes, '200000']);
    for (const [i, userId] of users.entries()) {
      const reserved = await call('POST', '/api/campaigns/formula/reservations', {
        count: 1,
        reserveId: `f${i}`,
      });
      assert.equal(reserved.statusCode, 201, reserved.body);
      const assigned = await call('POST', `/api/campaigns/formula/reservations/f${i}/assign`, { userId });
      assert.equal(assigned.statusCode, 200, assigned.body);
    }
    // The API takes reserveIds that start with a letter or digit; one stored otherwise is written
    // inert all the same (the rule is in the export, not only in what is accepted today).
    await call('POST', '/api/campaigns/formula/reservations', { count: 1, reserveId: 'held' });
    await p.kit.pool.query(`UPDATE codes SET reserve_id = '=1+1' WHERE reserve_id = 'held'`);
    const exported = (await call('GET', '/api/campaigns/formula/codes.csv')).body;
    const rows: Record<string, string>[] = parse(exported, { columns: true });
    // Each as a spreadsheet should show it: those starting with a formula character after a '.
    const written = [
      `'=HYPERLINK("http://x")`,
      "'+1+1",
      "'-2+3",
      "'@SUM(1)",
      "'\tx",
      "'\rx",
      'a=b',
      "'quoted",
      'u1',
    ];
    assert.deepEqual(
      rows.map((r) => [r.code, r.reserveId, r.userId]),
      [...codes.map((code, i) => [code, `f${i}`, written[i]]), ['200000', "'=1+1", '']],
    );
    // Codes are written as they are, so the export still re-imports.
    await create('formula-copy', { length: 6, alphabet: 'numeric' });
    const copy = await call('POST', '/api/campaigns/formula-copy/codes/import', exported, {
      'content-type': 'text/csv',
    });
    assert.deepEqual(copy.json(), { inserted: 10, duplicate: 0, invalid: 0, invalidSamples: [] });
  });

  it('when the campaign could hold the code CODE, then an export still re-imports without its header, and JSON non-strings are invalid', async () => {
    await create('four', { length: 4, alphabet: 'alphanumeric' });
    const csv = { 'content-type': 'text/csv' };
    const first = await call('POST', '/api/campaigns/four/codes/import', 'code\nAB12\nCD34', csv);
    assert.deepEqual(first.json(), { inserted: 2, duplicate: 0, invalid: 0, invalidSamples: [] });
    // JSON has no header: a list's "code" is a code, while null and numbers are not strings at all.
    const js = await call('POST', '/api/campaigns/four/codes/import', ['code', null, 1234, 'EF56']);
    assert.deepEqual(js.json(), { inserted: 2, duplicate: 0, invalid: 2, invalidSamples: ['null', '1234'] });
    await create('four-copy', { length: 4, alphabet: 'alphanumeric' });
    const exported = (await call('GET', '/api/campaigns/four/codes.csv')).body;
    const copy = await call('POST', '/api/campaigns/four-copy/codes/import', exported, csv);
    assert.deepEqual(copy.json(), { inserted: 4, duplicate: 0, invalid: 0, invalidSamples: [] });
  });

  it('when JSON items are blank, out of range or hold a NUL, then each counts as invalid with a sample that shows it', async () => {
    await create('odd', { length: 4, alphabet: 'numeric' });
    const body = '["", "  ", "\\t", 1e400, "12\\u000034", "1234"]';
    const res = await importJson('odd', body);
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), {
      inserted: 1,
      duplicate: 0,
      invalid: 5,
      invalidSamples: ['""', '"  "', '"\\t"', 'a number out of range (not a string)', '12\u000034'],
    });
  });

  it('when a JSON item is nested thousands deep after a batch of codes, then it is one invalid item and every code is imported', async () => {
    await create('deep-item', { length: 6, alphabet: 'numeric' });
    const codes = Array.from({ length: 12_000 }, (_, i) => `"${String(i).padStart(6, '0')}"`);
    const body = `[${codes.join(',')},${'['.repeat(20_000)}${']'.repeat(20_000)}]`;
    const res = await importJson('deep-item', body);
    // It was a 400 "nested too deeply" (showing the item as a sample overflowed the stack) after
    // the first 10,000 codes had been committed.
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), {
      inserted: 12_000,
      duplicate: 0,
      invalid: 1,
      invalidSamples: ['an array nested too deeply to show (not a string)'],
    });
  });

  it('when imports end, then none leaves a listener on the signal that stops them at shutdown', async () => {
    await create('listeners', { length: 6, alphabet: 'numeric' });
    for (let i = 0; i < 12; i++) {
      const res = await call('POST', '/api/campaigns/listeners/codes/import', `${100000 + i}\n`, {
        'content-type': 'text/csv',
      });
      assert.equal(res.statusCode, 200, res.body);
    }
    assert.equal(getEventListeners(p.kit.stopping, 'abort').length, 0);
  });

  it('when a CSV breaks off part-way, then 400 names the line and what was imported before it, and the fixed file then imports', async () => {
    await create('broken', { length: 6, alphabet: 'numeric' });
    const csv = { 'content-type': 'text/csv' };
    const lines = ['333333', '444444', 'xx', '"555555'];
    const res = await call('POST', '/api/campaigns/broken/codes/import', lines.join('\n'), csv);
    assert.equal(res.statusCode, 400, res.body);
    assert.match(
      res.json().message,
      /^the CSV could not be read: the row starting on line 4 opens a quote that is never closed: close the quote or remove it\. Imported before the error \(every row above it\): 2 inserted, 0 duplicate, 1 invalid\. Fix the file/,
    );
    // What the reply says was imported is held, and the fixed file counts it as duplicates.
    assert.equal((await call('GET', '/api/campaigns/broken')).json().inventory.total, 2);
    lines[3] = '"555555"';
    const fixed = await call('POST', '/api/campaigns/broken/codes/import', lines.join('\n'), csv);
    assert.equal(fixed.statusCode, 200, fixed.body);
    assert.deepEqual(fixed.json(), { inserted: 1, duplicate: 2, invalid: 1, invalidSamples: ['xx'] });
  });

  it('when a quoted field goes on after its closing quote, then the 400 starts with the line to fix and how', async () => {
    await create('after-quote', { length: 6, alphabet: 'numeric' });
    const csv = { 'content-type': 'text/csv' };
    // A JSON list sent as text/csv: csv-parse said "found non trimable byte after quote at line 2".
    const body = '111111\n["222222","333333"]\n444444';
    const res = await call('POST', '/api/campaigns/after-quote/codes/import', body, csv);
    assert.equal(res.statusCode, 400, res.body);
    assert.match(
      res.json().message,
      /^the CSV could not be read: fix line 2: a quoted field goes on after its closing quote \("AB"C\): quote the whole field and write each quote in it twice \("AB""C"\), or remove the quotes\. Imported before the error \(every row above it\): 1 inserted, 0 duplicate, 0 invalid/,
    );
  });

  it('when a quote is never closed, then the 400 names the line it opened on, not the last line of the file', async () => {
    await create('quote', { length: 6, alphabet: 'numeric' });
    const csv = { 'content-type': 'text/csv' };
    const codes = (from: number, n: number) => Array.from({ length: n }, (_, i) => String(from + i));
    // 12,004 lines, two of them empty, with the quote on line 12,001: csv-parse says "line 12004".
    const lines = [...codes(100000, 6000), '', ...codes(200000, 5998), '', '"300000', ...codes(400000, 3)];
    const res = await call('POST', '/api/campaigns/quote/codes/import', lines.join('\n'), csv);
    assert.equal(res.statusCode, 400, res.body);
    assert.match(
      res.json().message,
      /^the CSV could not be read: the row starting on line 12001 opens a quote that is never closed: close the quote or remove it\. Imported before the error \(every row above it\): 11998 inserted/,
    );
    // A quote left open before many more lines runs into the row limit, and still names its line.
    const long = ['500000', '"500001', ...codes(600000, 2000)].join('\n');
    const open = await call('POST', '/api/campaigns/quote/codes/import', long, csv);
    assert.equal(open.statusCode, 400, open.body);
    assert.match(
      open.json().message,
      /^the CSV could not be read: the row starting on line 2 opens a quote that is not closed within 8,192 characters \(it is still open on line \d+\): close the quote or remove it\. Imported before the error \(every row above it\): 1 inserted/,
    );
  });

  it('when a CSV breaks off after thousands of good rows, then every row above the error is imported however the upload is chunked', async () => {
    // 7,000 good rows then a bad quote mid-file: in one chunk, the rows parsed with the error were
    // once dropped with it (0 inserted), while split into small chunks most of them were kept.
    const rows = Array.from({ length: 7000 }, (_, i) => String(100000 + i));
    const text = `${rows.join('\n')}\n"999999"x\n200000\n200001\n`;
    const chunked = (size: number) =>
      Readable.from(
        Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, (i + 1) * size)),
      );
    for (const [id, payload] of [
      ['whole', text],
      ['chunks', chunked(1000)],
    ] as const) {
      await create(id, { length: 6, alphabet: 'numeric' });
      const res = await call('POST', `/api/campaigns/${id}/codes/import`, payload, {
        'content-type': 'text/csv',
      });
      assert.equal(res.statusCode, 400, res.body);
      assert.match(
        res.json().message,
        /Imported before the error \(every row above it\): 7000 inserted, 0 duplicate, 0 invalid\./,
      );
      assert.equal((await call('GET', `/api/campaigns/${id}`)).json().inventory.total, 7000, id);
    }
  });

  it('when a job is cancelled, then a running one stops for good at its next report and a queued one never runs', async () => {
    await create('halt', { length: 8, alphabet: 'alphanumeric' });
    const started = (await call('POST', '/api/campaigns/halt/codes', { count: 2_000_000 })).json();
    await waitFor(async () => (await call('GET', started.statusUrl)).json().done > 0, { what: 'progress' });
    const cancelled = await call('DELETE', started.statusUrl);
    assert.equal(cancelled.statusCode, 200, cancelled.body);
    assert.equal(cancelled.json().state, 'cancelled');
    await waitFor(async () => !(await p.kit.jobs.trackedIsRunning(started.jobId)), {
      what: 'the job to stop',
    });
    const count = async () => (await call('GET', '/api/campaigns/halt')).json().inventory.total as number;
    const made = await count();
    assert.ok(made < 2_000_000, `${made}`);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await count(), made, 'nothing more is written, and no retry runs');
    const ended = (await call('GET', started.statusUrl)).json();
    assert.equal(ended.state, 'cancelled');
    // Its result says what stayed (the parts it committed), as the CLI's Ctrl-C does.
    assert.deepEqual(ended.result, { generated: made });
    const again = await call('DELETE', started.statusUrl);
    assert.equal(again.statusCode, 409);
    assert.match(again.json().message, /has already ended \(cancelled\): there is nothing to cancel/);

    // Queued for later: cancelled before any runner takes it, it leaves the queue.
    const later = await p.kit.jobs.startTracked(
      p.kit.pool,
      'codes:generate',
      { campaignId: 'halt', count: 20_000 },
      20_000,
      {
        runAt: new Date(Date.now() + 60_000),
      },
    );
    const dropped = (await call('DELETE', `/api/jobs/${later}`)).json();
    assert.deepEqual([dropped.state, dropped.result], ['cancelled', { generated: 0 }]);
    const queued = await p.kit.pool.query(
      `SELECT 1 FROM graphile_worker._private_jobs WHERE payload->>'__trackedId' = $1`,
      [later],
    );
    assert.equal(queued.rows.length, 0);
  });

  it('when a large count is asked, then 202 gives a job whose progress reaches completed with every code stored', async () => {
    await create('big', { length: 8, alphabet: 'alphanumeric' });
    const res = await call('POST', '/api/campaigns/big/codes', { count: 60_000 });
    assert.equal(res.statusCode, 202, res.body);
    const { jobId, statusUrl, state } = res.json();
    assert.deepEqual(
      [statusUrl, state],
      [`/api/jobs/${jobId}`, 'queued'],
      'named state, as the job resource names it',
    );
    // A job is read with its module's scope, as the route that started it was called.
    const { key: eventsOnly } = await createApiKey(p.kit.pool, 'events only', ['events']);
    const foreign = await p.app.inject({
      method: 'GET',
      url: statusUrl,
      headers: { authorization: `Bearer ${eventsOnly}` },
    });
    assert.equal(foreign.statusCode, 403);
    assert.match(foreign.json().message, /job .* is a codes job: this API key lacks the "codes" scope/);
    const job = await waitFor(
      async () => {
        const j = (await call('GET', statusUrl)).json();
        return j.state === 'completed' || j.state === 'failed' ? j : undefined;
      },
      { timeoutMs: 60_000, what: 'generation job' },
    );
    assert.equal(job.state, 'completed', JSON.stringify(job));
    assert.equal(job.done, 60_000);
    const c = (await call('GET', '/api/campaigns/big')).json();
    assert.equal(c.inventory.available, 60_000);
    const { rows } = await p.kit.pool.query(
      `SELECT count(*)::int AS n, count(DISTINCT code)::int AS d FROM codes c JOIN codes_campaigns k ON k.no = c.campaign_no WHERE k.id = 'big'`,
    );
    assert.deepEqual(rows[0], { n: 60_000, d: 60_000 });
  });

  it('when a file is imported while a release changes one of its codes, then the import waits for it and neither fails (no deadlock)', async () => {
    await create('race', { length: 6, alphabet: 'numeric' });
    await call('POST', '/api/campaigns/race/codes/import', ['100001', '100002']);
    const no = (await p.kit.pool.query(`SELECT no FROM codes_campaigns WHERE id = 'race'`)).rows[0].no;
    // A transaction shaped like release: a code row first, the campaign's counters last.
    const release = await p.kit.pool.connect();
    try {
      await release.query('BEGIN');
      await release.query(`UPDATE codes SET state = 0 WHERE campaign_no = $1 AND code = '100001'`, [no]);
      // The same file again, as the docs say to after a 400: its INSERT waits on that row.
      const resent = call('POST', '/api/campaigns/race/codes/import', '100001\n100002\n100003', {
        'content-type': 'text/csv',
      });
      await waitForLockWait(p.kit.pool, 'INSERT INTO codes', 'the import to wait on the row');
      // Before: the import held the campaign row here, and this update deadlocked with it.
      await release.query('UPDATE codes_campaigns SET available = available WHERE no = $1', [no]);
      await release.query('COMMIT');
      const res = await resent;
      assert.equal(res.statusCode, 200, res.body);
      assert.deepEqual(
        { inserted: res.json().inserted, duplicate: res.json().duplicate },
        { inserted: 1, duplicate: 2 },
      );
    } finally {
      release.release();
    }
    assert.equal((await call('GET', '/api/campaigns/race')).json().inventory.available, 3);
  });

  it('when an import and a small generation deadlock on one code, then the import runs its batch again and answers its counts', async () => {
    await create('race-imp', { length: 6, alphabet: 'numeric' });
    const no = (await p.kit.pool.query(`SELECT no FROM codes_campaigns WHERE id = 'race-imp'`)).rows[0].no;
    const [holder, gen] = [await p.kit.pool.connect(), await p.kit.pool.connect()];
    const blockedBy = (pid: number, what: string) =>
      waitFor(
        async () =>
          (
            await p.kit.pool.query(
              `SELECT 1 FROM pg_stat_activity a WHERE strpos(a.query, 'INSERT INTO codes (campaign_no, code, seq)') > 0
                 AND $1 = ANY(pg_blocking_pids(a.pid))`,
              [pid],
            )
          ).rowCount,
        { what },
      );
    try {
      // Holds the import's INSERT (after its seq claim) until the "generation" below has the campaign row.
      await holder.query('BEGIN');
      await holder.query(`INSERT INTO codes (campaign_no, code, seq) VALUES ($1, '200001', 999998)`, [no]);
      const holderPid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      const imported = importJson('race-imp', '["200001", "200002", "200003"]');
      await blockedBy(holderPid, 'the import to wait on the held code');
      // A transaction shaped like a small generation: the campaign row from its claim on ...
      await gen.query('BEGIN');
      // Only the import may be the one PostgreSQL fails. Each waiter checks for a deadlock once,
      // deadlock_timeout after it starts waiting; on a loaded machine the import's check can run
      // late, after this transaction's own check, which then fails this side instead (seen in CI).
      await gen.query(`SET LOCAL deadlock_timeout = '60s'`);
      await gen.query('UPDATE codes_campaigns SET next_index = next_index WHERE no = $1', [no]);
      const genPid = (await gen.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      await holder.query('ROLLBACK');
      // ... while the import, its rows in, waits for that row to update its counters ...
      await blockedBy(genPid, 'the import to wait for the campaign row');
      // ... and then an INSERT of a code the import holds uncommitted. PostgreSQL fails the import's
      // statement once its deadlock_timeout passes; this INSERT then goes through.
      await gen.query(`INSERT INTO codes (campaign_no, code, seq) VALUES ($1, '200002', 999999)`, [no]);
      await gen.query('COMMIT');
      const res = await imported;
      assert.equal(res.statusCode, 200, res.body);
      assert.deepEqual(
        { inserted: res.json().inserted, duplicate: res.json().duplicate },
        { inserted: 2, duplicate: 1 },
      );
    } finally {
      for (const c of [holder, gen]) {
        await c.query('ROLLBACK').catch(() => undefined);
        c.release();
      }
    }
  });

  it('when a generation meets an imported code a release is changing, then it goes around it and neither waits (no deadlock)', async () => {
    await create('race-gen', { length: 6, alphabet: 'numeric' });
    const row = (await p.kit.pool.query(`SELECT no, fpe_key FROM codes_campaigns WHERE id = 'race-gen'`))
      .rows[0];
    // The codes the next generation will make, imported first, so it meets every one of them.
    const next = new CodePermutation(row.fpe_key, '0123456789', 6).codes(0, 5);
    assert.equal((await importJson('race-gen', JSON.stringify(next))).json().inserted, 5);
    const release = await p.kit.pool.connect();
    try {
      await release.query('BEGIN');
      await release.query('UPDATE codes SET state = 0 WHERE campaign_no = $1 AND code = $2', [
        row.no,
        next[0],
      ]);
      // The generation holds the campaign row from its claim; its INSERT used to wait here on the
      // code row, and the release's counter update below on it: a deadlock, and a 500 for one side.
      let answered = false;
      const generated = call('POST', '/api/campaigns/race-gen/codes', { count: 5 }).finally(() => {
        answered = true;
      });
      while (!answered) {
        const waiting = await p.kit.pool.query(
          `SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
             AND wait_event_type = 'Lock' AND strpos(query, 'INSERT INTO codes') > 0`,
        );
        assert.equal(
          waiting.rowCount,
          0,
          'the generation waited on a code row another transaction was changing',
        );
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const res = await generated;
      assert.equal(res.statusCode, 201, res.body);
      assert.equal(
        res.json().codes.filter((c: string) => next.includes(c)).length,
        0,
        'imported codes are not new',
      );
      await release.query('UPDATE codes_campaigns SET available = available WHERE no = $1', [row.no]);
      await release.query('COMMIT');
    } finally {
      await release.query('ROLLBACK').catch(() => undefined); // a no-op once committed
      release.release();
    }
    assert.equal((await call('GET', '/api/campaigns/race-gen')).json().inventory.total, 10);
  });

  it('when metrics are scraped, then the codes business metrics are there by campaign', async () => {
    // A userId PostgreSQL cannot store is answered 400 by the error handler, and counted as a 400.
    const { reserveId } = (await call('POST', '/api/campaigns/gen/reservations', { count: 1 })).json();
    const nul = await call('POST', `/api/campaigns/gen/reservations/${reserveId}/assign`, {
      userId: 'x\u0000',
    });
    assert.equal(nul.statusCode, 400, nul.body);
    const text = (await p.app.inject('/metrics')).body;
    assert.match(
      text,
      /codes_operation_duration_seconds_count\{[^}]*operation="assign",outcome="400"[^}]*\} 1/,
    );
    assert.match(text, /codes_generated_total\{campaign="gen"[^}]*\} 8000/);
    assert.match(text, /codes_available\{campaign="big"[^}]*\} 60000/);
    assert.match(text, /codes_operation_duration_seconds_count\{[^}]*operation="generate"/);
  });
});
