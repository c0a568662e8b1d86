import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createApiKey, createUser } from '../../src/kit/auth.ts';
import { fixtureModule } from '../fixtures/fixture-module.ts';
import { startPlatform } from '../helpers.ts';

describe('HTTP, auth and ops endpoints', async () => {
  const p = await startPlatform({ modules: [fixtureModule], listen: true });

  it('when /heartbeat is called without credentials, then it answers 200', async () => {
    const res = await p.app.inject('/heartbeat');
    assert.equal(res.statusCode, 200);
  });

  it('when /health and /api/health are called, then both report the database connected', async () => {
    for (const url of ['/health', '/api/health']) {
      const res = await p.app.inject(url);
      assert.equal(res.statusCode, 200);
      const body = res.json();
      assert.equal(body.status, 'healthy');
      assert.equal(body.database, 'connected');
      assert.equal(body.checks.database.status, 'ok');
      assert.equal(typeof body.uptime, 'number');
      assert.equal(typeof body.version, 'string');
    }
  });

  it('when a request was just made, then /metrics counts it in Prometheus text without auth', async () => {
    await p.app.inject({ url: '/api/fixture/echo?text=hi', headers: p.auth });
    const res = await p.app.inject('/metrics');
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, /text\/plain/);
    const lines = res.body.split('\n').filter((l) => l && !l.startsWith('#'));
    for (const line of lines)
      assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eENaInf]+$/, line);
    const count = lines.find(
      (l) =>
        l.startsWith('http_request_duration_seconds_count{') &&
        l.includes('route="/api/fixture/echo"') &&
        l.includes('status_code="200"'),
    );
    assert.ok(count, 'request counted by route and status');
    assert.ok(
      lines.some((l) => l.startsWith('nodejs_eventloop_lag_seconds')),
      'event-loop lag exported',
    );
    assert.ok(
      lines.some((l) => /^tessera_db_query_duration_seconds_count\{[^}]*outcome="ok"[^}]*\} [1-9]/.test(l)),
      'queries timed',
    );
    assert.ok(
      lines.some((l) => /^tessera_jobs_queue_depth\{[^}]*\} \d+$/.test(l)),
      'queue depth exported',
    );
    assert.equal((await p.app.inject('/api/metrics')).statusCode, 200);
  });

  it('when a query takes over 1 s, then it is counted as slow and logged as DB_SLOW_QUERY', async () => {
    const slowCount = async () =>
      Number(
        (await p.app.inject('/metrics')).body.match(/^tessera_db_slow_queries_total\{[^}]*\} (\d+)/m)?.[1] ??
          0,
      );
    const before = await slowCount();
    await p.kit.pool.query('SELECT pg_sleep(1.1)');
    // At least one: on a loaded machine a background query (the job runner's, the chaos refresh)
    // may pass 1 s too, and be counted and logged beside this one.
    assert.ok((await slowCount()) >= before + 1, 'the slow query counted');
    assert.ok(
      p.logs.events('DB_SLOW_QUERY').some((l) => /pg_sleep/.test(String(l.sql))),
      'the slow query logged with its SQL',
    );
  });

  it('when no key, a wrong key, or a key without the scope is sent, then 401, 401 and 403', async () => {
    assert.equal((await p.app.inject('/api/fixture/echo?text=a')).statusCode, 401);
    const wrong = await p.app.inject({
      url: '/api/fixture/echo?text=a',
      headers: { authorization: 'Bearer nope' },
    });
    assert.equal(wrong.statusCode, 401);
    assert.match(wrong.json().message, /credentials/);
    const { key } = await createApiKey(p.kit.pool, 'events only', ['events']);
    const scoped = await p.app.inject({ url: '/api/fixture/echo?text=a', headers: { 'x-api-key': key } });
    assert.equal(scoped.statusCode, 403);
    assert.match(scoped.json().message, /"books" scope/);
    const ok = await p.app.inject({ url: '/api/fixture/echo?text=a', headers: p.auth });
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.json().text, 'a');
  });

  it('when 50 requests bring a key not yet cached, then one lookup serves them all', async () => {
    const { key } = await createApiKey(p.kit.pool, 'stampede', ['books']);
    const pool = p.kit.pool as unknown as { query: (...a: unknown[]) => unknown };
    const original = pool.query;
    let lookups = 0;
    pool.query = function (this: unknown, ...args: unknown[]) {
      if (String(args[0]).includes('UPDATE api_keys')) lookups++;
      return original.apply(this, args);
    };
    try {
      const answers = await Promise.all(
        Array.from({ length: 50 }, () =>
          p.app.inject({ url: '/api/fixture/echo?text=s', headers: { 'x-api-key': key } }),
        ),
      );
      assert.ok(answers.every((a) => a.statusCode === 200));
      assert.equal(lookups, 1);
    } finally {
      pool.query = original;
    }
  });

  it('when a path holds a bad %-escape, then 400 in the error envelope says how to encode it', async () => {
    const res = await p.app.inject({ url: '/api/fixture/missing/%ZZ', headers: p.auth });
    assert.equal(res.statusCode, 400);
    assert.deepEqual(Object.keys(res.json()), ['statusCode', 'error', 'message']);
    assert.match(
      res.json().message,
      /%XX escape, and the escapes must spell UTF-8 text \(encode the path part with encodeURIComponent\)$/,
    );
    // Escapes that are well-formed but not UTF-8: the hint said only "must start a %XX escape".
    const latin1 = await p.app.inject({ url: '/api/fixture/missing/%ff%fe', headers: p.auth });
    assert.equal(latin1.statusCode, 400);
    assert.match(latin1.json().message, /must spell UTF-8 text/);
  });

  it('when a query parameter is given twice, then 400 says to send it once (not that it must be a string)', async () => {
    const res = await p.app.inject({ url: '/api/fixture/echo?text=a&text=b', headers: p.auth });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().message, 'querystring/text is given 2 times: send it once');
    const slow = await p.app.inject({ url: '/api/fixture/slow?ms=1&ms=2', headers: p.auth });
    assert.equal(slow.json().message, 'querystring/ms is given 2 times: send it once');
    assert.equal((await p.app.inject({ url: '/api/fixture/echo?text=a', headers: p.auth })).statusCode, 200);
  });

  it('when an integer in a query is not decimal digits, then 400 (it was read as JavaScript reads it: " " as 0, "0x10" as 16)', async () => {
    for (const [raw, shown] of [
      ['0x10', '"0x10"'],
      ['%20', '" "'],
      ['1e3', '"1e3"'],
    ]) {
      const res = await p.app.inject({ url: `/api/fixture/slow?ms=${raw}`, headers: p.auth });
      assert.equal(res.statusCode, 400, raw);
      assert.equal(
        res.json().message,
        `querystring/ms must be a whole number in decimal digits, such as 42; got ${shown}`,
      );
    }
    assert.equal((await p.app.inject({ url: '/api/fixture/slow?ms=1', headers: p.auth })).statusCode, 200);
  });

  it('when an RPC handler throws a 404, then the HTTP answer is a 404 in the error envelope', async () => {
    const res = await p.app.inject({ url: '/api/fixture/missing/42', headers: p.auth });
    assert.equal(res.statusCode, 404);
    assert.deepEqual(res.json(), { statusCode: 404, error: 'Not Found', message: 'fixture 42 not found' });
  });

  it('when a query fails on a NUL character from the request, then 400 says to remove it, not 500', async () => {
    const ok = await p.app.inject({ url: '/api/fixture/stored?text=ab', headers: p.auth });
    assert.deepEqual(ok.json(), { text: 'ab' });
    const res = await p.app.inject({ url: '/api/fixture/stored?text=a%00b', headers: p.auth });
    assert.equal(res.statusCode, 400, res.body);
    assert.deepEqual(res.json(), {
      statusCode: 400,
      error: 'Bad Request',
      message:
        'querystring.text holds a NUL character (\\u0000), which PostgreSQL cannot store in text: remove it',
    });
  });

  it('when the body is over 1 MB, then 413; when it is not JSON, then 400 saying so', async () => {
    const big = await p.app.inject({
      method: 'POST',
      url: '/api/fixture/body',
      headers: { ...p.auth, 'content-type': 'application/json' },
      payload: JSON.stringify({ data: 'x'.repeat(1_100_000) }),
    });
    assert.equal(big.statusCode, 413);
    assert.equal(big.json().statusCode, 413);
    const bad = await p.app.inject({
      method: 'POST',
      url: '/api/fixture/body',
      headers: { ...p.auth, 'content-type': 'application/json' },
      payload: '{"data":',
    });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().message, /not valid JSON/);
    const invalid = await p.app.inject({
      method: 'POST',
      url: '/api/fixture/body',
      headers: p.auth,
      payload: { data: { nested: true } },
    });
    assert.equal(invalid.statusCode, 400);
    assert.match(invalid.json().message, /data/);
  });

  it('when a download fails before its first byte, then its error is the JSON envelope with its status, not a 500', async () => {
    const res = await p.app.inject({ method: 'GET', url: '/api/fixture/download-fails', headers: p.auth });
    assert.equal(res.statusCode, 503, res.body);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    assert.equal(res.headers['content-disposition'], undefined);
    assert.equal(res.json().message, 'database unavailable; retry shortly');
  });

  it('when a route that takes an object gets no body, null, an array or a number, then 400 says to send a JSON object', async () => {
    for (const payload of [undefined, 'null', '[1]', '5']) {
      const res = await p.app.inject({
        method: 'POST',
        url: '/api/fixture/body',
        headers: { ...p.auth, 'content-type': 'application/json' },
        ...(payload === undefined ? {} : { payload }),
      });
      assert.equal(res.statusCode, 400, `${payload}: ${res.body}`);
      assert.equal(
        res.json().message,
        "body must be a JSON object of this route's fields (sent with Content-Type: application/json; the fields are listed at /docs)",
        String(payload),
      );
    }
  });

  it('when a JSON body spells half of a UTF-16 pair on its own, then 400 names where; a whole pair spelled as escapes passes', async () => {
    const send = (payload: string) =>
      p.app.inject({
        method: 'POST',
        url: '/api/fixture/body',
        headers: { ...p.auth, 'content-type': 'application/json' },
        payload,
      });
    const cut = await send('{"data":"launch \\ud83d"}');
    assert.equal(cut.statusCode, 400, cut.body);
    assert.match(cut.json().message, /^body\.data holds a lone surrogate .* send whole characters$/);
    const low = await send('[{"a":1},{"\\uDE80":2}]');
    assert.equal(low.statusCode, 400);
    assert.match(low.json().message, /^a key of body\[1\] holds a lone surrogate/);
    const deep = await send(`{"data":${'['.repeat(100_000)}"\\ud83d"${']'.repeat(100_000)}}`);
    assert.equal(deep.statusCode, 400, "a walk too deep for the stack is the caller's 400, not a 500");
    assert.match(deep.json().message, /^the request body is nested too deeply/);
    const whole = await send('{"data":"launch \\ud83d\\ude80"}');
    assert.equal(whole.statusCode, 200, whole.body);
    assert.deepEqual(whole.json(), { length: 9 });
  });

  it('when a JSON body holds bytes that are not UTF-8, then 400 names the value; UTF-8 passes as sent', async () => {
    const send = (payload: Buffer) =>
      p.app.inject({
        method: 'POST',
        url: '/api/fixture/body',
        headers: { ...p.auth, 'content-type': 'application/json' },
        payload,
      });
    // "Müller" in Latin-1: ü is the one byte 0xFC. Before, a 200 with "M\ufffdller" stored.
    const latin1 = await send(Buffer.from('{"data":"M\xfcller"}', 'latin1'));
    assert.equal(latin1.statusCode, 400, latin1.body);
    assert.match(
      latin1.json().message,
      /^body\.data holds bytes that are not UTF-8 .*: send JSON encoded as UTF-8$/,
    );
    const notJson = await send(Buffer.from([0x7b, 0xff, 0xfe]));
    assert.equal(notJson.statusCode, 400);
    assert.match(notJson.json().message, /^request body holds bytes that are not UTF-8/);
    const utf8 = await send(Buffer.from('{"data":"Müller 🚀"}', 'utf8'));
    assert.equal(utf8.statusCode, 200, utf8.body);
    assert.deepEqual(utf8.json(), { length: 9 });
  });

  /** A new dashboard user of `role`, signed in: the session cookie to send. */
  const signedIn = async (email: string, role: 'admin' | 'user') => {
    await createUser(p.kit.pool, email, 'secret-1', role);
    const login = await p.app.inject({
      method: 'POST',
      url: '/api/auth/login',
      payload: { email, password: 'secret-1' },
    });
    assert.equal(login.statusCode, 200, login.body);
    return String(login.headers['set-cookie']).split(';')[0]!;
  };

  it('when a signed-in user lacks a scope, then the 403 speaks of their sign-in, and a key of its scopes', async () => {
    const cookie = await signedIn('plain@example.com', 'user');
    const asUser = await p.app.inject({ url: '/api/admin/jobs', headers: { cookie } });
    assert.equal(asUser.statusCode, 403);
    // Before: "this API key lacks …" to someone who never used a key.
    assert.equal(
      asUser.json().message,
      'your sign-in lacks the "admin" scope: ask an admin for an account with role admin',
    );
    const { key } = await createApiKey(p.kit.pool, 'events-only', ['events']);
    const asKey = await p.app.inject({ url: '/api/admin/jobs', headers: { authorization: `Bearer ${key}` } });
    assert.equal(asKey.json().message, 'this API key lacks the "admin" scope');
  });

  it('when a signed-in change comes from another site, then 403; from our own origin, or with an API key, it passes', async () => {
    const cookie = await signedIn('csrf@example.com', 'admin');
    const post = (headers: Record<string, string>) =>
      p.app.inject({
        method: 'POST',
        url: '/api/fixture/body',
        headers: { 'content-type': 'application/json', host: 'tessera.example:8080', ...headers },
        payload: '{"data":"x"}',
      });
    // Before: each of these was a 200, the change made in the signed-in user's name.
    for (const foreign of <Record<string, string>[]>[
      { origin: 'https://evil.example' },
      { origin: 'http://tessera.example:9090' },
      { origin: 'null' },
      { 'sec-fetch-site': 'same-site' },
      { 'sec-fetch-site': 'cross-site', origin: 'http://tessera.example:8080' },
    ]) {
      const res = await post({ cookie, ...foreign });
      assert.equal(res.statusCode, 403, JSON.stringify(foreign));
      assert.match(res.json().message, /must come from Tessera's own pages.*scripts send an API key/);
    }
    for (const own of <Record<string, string>[]>[
      {},
      { origin: 'http://tessera.example:8080' },
      { 'sec-fetch-site': 'same-origin', origin: 'http://tessera.example:8080' },
      // Behind a proxy that rewrites Host: the browser's Sec-Fetch-Site is believed.
      { 'sec-fetch-site': 'same-origin', origin: 'https://public.example' },
    ]) {
      assert.equal((await post({ cookie, ...own })).statusCode, 200, JSON.stringify(own));
    }
    const read = await p.app.inject({
      url: '/api/fixture/echo?text=hi',
      headers: { cookie, 'sec-fetch-site': 'cross-site' },
    });
    assert.equal(read.statusCode, 200, 'a read changes nothing');
    assert.equal((await post({ ...p.auth, origin: 'https://evil.example' })).statusCode, 200);
    const logout = (headers: Record<string, string>) =>
      p.app.inject({ method: 'POST', url: '/api/auth/logout', headers: { cookie, ...headers } });
    assert.equal(
      (await logout({ 'sec-fetch-site': 'same-site' })).statusCode,
      403,
      'a sibling page signs no one out',
    );
    assert.equal((await logout({ 'sec-fetch-site': 'same-origin' })).statusCode, 200);
  });

  it('when responding, then every answer carries a request id, and a given x-request-id is kept when it looks like an id', async () => {
    const res = await p.app.inject({ url: '/heartbeat', headers: { 'x-request-id': 'abc-123' } });
    assert.equal(res.headers['x-request-id'], 'abc-123');
    assert.match(String((await p.app.inject('/heartbeat')).headers['x-request-id']), /^[0-9a-f-]{36}$/);
    for (const odd of ['x'.repeat(129), 'has space', '<script>', '']) {
      const r = await p.app.inject({ url: '/heartbeat', headers: { 'x-request-id': odd } });
      assert.match(String(r.headers['x-request-id']), /^[0-9a-f-]{36}$/, `${odd.slice(0, 20)} replaced`);
    }
    const traceLike = 'Root=1-67891233-abcdef012345678912345678';
    const kept = await p.app.inject({ url: '/heartbeat', headers: { 'x-request-id': traceLike } });
    assert.equal(kept.headers['x-request-id'], traceLike);
  });

  it('when the access log is written, then probes and scrapes are left out and requests are in', async () => {
    await p.app.inject('/heartbeat');
    await p.app.inject('/metrics');
    await p.app.inject({
      url: '/api/fixture/echo?text=logged',
      headers: { ...p.auth, 'x-forwarded-for': '203.0.113.9' },
      remoteAddress: '10.1.2.3',
    });
    const urls = p.logs.events('API_REQUEST').map((l) => l.url);
    assert.ok(urls.includes('/api/fixture/echo?text=logged'));
    assert.ok(!urls.includes('/heartbeat') && !urls.includes('/metrics'));
    const line = p.logs.events('API_REQUEST').at(-1)!;
    assert.equal(line.module, 'http');
    assert.equal(line.role, 'all');
    // The runbook finds a credential-stuffing source here: the client's address, as a proxy on the
    // private network (the Ingress) reports it.
    assert.equal(line.ip, '203.0.113.9');
  });

  it('when webhooks are signed with standardwebhooks, then valid passes and wrong secret, stale, replayed and unsigned fail with 401', async () => {
    const body = JSON.stringify({ hello: 'world' });
    const send = (headers: Record<string, string>) =>
      p.app.inject({
        method: 'POST',
        url: '/api/fixture/webhook',
        headers: { 'content-type': 'application/json', ...headers },
        payload: body,
      });
    const signer = new Webhook(p.kit.webhookSecret);
    const sign = (id: string, at: Date, wh = signer) => ({
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': wh.sign(id, at, body),
    });
    assert.equal((await send(sign('msg_1', new Date()))).statusCode, 201);
    const replay = await send(sign('msg_1', new Date()));
    assert.equal(replay.statusCode, 401);
    assert.match(replay.json().message, /already used/);
    const wrong = await send(
      sign('msg_2', new Date(), new Webhook(Buffer.from('another-secret-entirely').toString('base64'))),
    );
    assert.equal(wrong.statusCode, 401);
    const stale = await send(sign('msg_3', new Date(Date.now() - 10 * 60 * 1000)));
    assert.equal(stale.statusCode, 401);
    assert.match(stale.json().message, /timestamp/i);
    const unsigned = await send({});
    assert.equal(unsigned.statusCode, 401);
    assert.match(unsigned.json().message, /webhook-signature/);
  });

  it('when an unsigned request reaches a signed route, then tessera_auth_failures_total{kind="webhook"} grows by exactly one', async () => {
    const webhookFailures = async () => {
      const text = (await p.app.inject('/metrics')).body;
      return Number(text.match(/^tessera_auth_failures_total\{[^}]*kind="webhook"[^}]*\} (\d+)/m)?.[1] ?? 0);
    };
    const before = await webhookFailures();
    const unsigned = await p.app.inject({
      method: 'POST',
      url: '/api/fixture/webhook',
      headers: { 'content-type': 'application/json' },
      payload: '{}',
    });
    assert.equal(unsigned.statusCode, 401);
    assert.equal(await webhookFailures(), before + 1);
  });

  it('when the OpenAPI document is fetched, then it lists module routes and /docs serves the UI', async () => {
    const doc = (await p.app.inject('/openapi.json')).json();
    assert.ok(doc.paths['/api/fixture/echo']);
    assert.equal((await p.app.inject('/docs')).statusCode < 400, true);
  });

  it('when reached on a non-loopback address of this machine, then the server answers', async (t) => {
    const addr = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    if (!addr) return t.skip('this machine has no non-loopback IPv4 address');
    // This platform listens on 127.0.0.1 for isolation; the default HOST is checked separately.
    const wide = await startPlatform({ modules: [], env: { HOST: '0.0.0.0' } });
    await wide.app.listen({ host: wide.kit.config.host, port: 0 });
    const port = (wide.app.server.address() as { port: number }).port;
    const res = await fetch(`http://${addr}:${port}/heartbeat`);
    assert.equal(res.status, 200);
  });
});
