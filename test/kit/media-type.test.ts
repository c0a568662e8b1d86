// A body of a type the route does not read is a 415 that names the type received and what to send
// (Fastify's own says only "Unsupported Media Type").
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Type } from '@sinclair/typebox';
import { defineModule } from '../../src/kit/module.ts';
import { booksModule } from '../../src/modules/books/index.ts';
import { startPlatform } from '../helpers.ts';

/** A route that takes JSON or a CSV upload, and says so through its `accepts` config. */
const uploadModule = defineModule({
  name: 'upload',
  scope: 'books',
  setup() {},
  routes(app) {
    app.addContentTypeParser('text/csv', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    app.post('/api/upload/:id', { config: { accepts: ['application/json', 'text/csv'] } }, async () => ({
      ok: true,
    }));
    app.post('/api/upload-json', { schema: { body: Type.Object({ a: Type.String() }) } }, async () => ({}));
  },
});

describe('415 Unsupported Media Type', async () => {
  const p = await startPlatform({ modules: [booksModule, uploadModule], role: 'api' });
  const post = (url: string, headers: Record<string, string>, payload = '{"title":"x"}') =>
    p.app.inject({ method: 'POST', url, headers: { ...p.auth, ...headers }, payload });

  it('when a JSON route gets a form body (curl -d) or application/xml, then the 415 names the type and says to send application/json', async () => {
    const form = await post('/books', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(form.statusCode, 415, form.body);
    assert.match(String(form.headers['content-type']), /^application\/json/);
    assert.deepEqual(form.json(), {
      statusCode: 415,
      error: 'Unsupported Media Type',
      message:
        "Content-Type application/x-www-form-urlencoded is not accepted by POST /books: send Content-Type: application/json (curl -d sends application/x-www-form-urlencoded unless given -H 'Content-Type: application/json')",
    });

    const xml = await post('/books', { 'content-type': 'application/xml' }, '<book/>');
    assert.equal(xml.statusCode, 415, xml.body);
    assert.deepEqual(xml.json(), {
      statusCode: 415,
      error: 'Unsupported Media Type',
      message:
        'Content-Type application/xml is not accepted by POST /books: send Content-Type: application/json',
    });
  });

  it('when the body has no Content-Type, then the 415 says so and what to send', async () => {
    const res = await p.app.inject({
      method: 'POST',
      url: '/api/upload-json',
      headers: { ...p.auth, 'content-length': '3' },
      payload: Buffer.from('a=b'),
    });
    // inject adds no Content-Type to a Buffer payload: Fastify reads the body as of no type.
    assert.equal(res.statusCode, 415, res.body);
    assert.equal(
      res.json().message,
      'the request has a body but no Content-Type: send Content-Type: application/json to POST /api/upload-json',
    );
  });

  it('when a route lists what it accepts, then its 415 names every type, on the route pattern rather than the URL', async () => {
    const res = await post('/api/upload/42?x=1', { 'content-type': 'application/xml' }, '<a/>');
    assert.equal(res.statusCode, 415, res.body);
    assert.equal(
      res.json().message,
      'Content-Type application/xml is not accepted by POST /api/upload/:id: send Content-Type: application/json or text/csv',
    );
    assert.equal((await post('/api/upload/42', { 'content-type': 'text/csv' }, 'a,b\n')).statusCode, 200);
  });
});
