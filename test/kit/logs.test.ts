import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createRootLogger, formatPrettyLine, moduleLogger } from '../../src/kit/log.ts';
import { fixtureModule } from '../fixtures/fixture-module.ts';
import { startPlatform, waitFor } from '../helpers.ts';

function capture(format: 'json' | 'logstash' | 'pretty', debug = '') {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => {
    text += d;
  });
  const root = createRootLogger({ level: 'info', format, debug, role: 'api', destination: out });
  return { root, text: () => text };
}

describe('logs', () => {
  it('when LOG_FORMAT=logstash, then lines carry @timestamp, @version, message, level, module and role', () => {
    const { root, text } = capture('logstash');
    moduleLogger(root, 'events').info({ userId: 'user_001' }, 'EVENT_INSERTED');
    const line = JSON.parse(text());
    assert.equal(line.message, 'EVENT_INSERTED');
    assert.equal(line['@version'], '1');
    assert.ok(!Number.isNaN(Date.parse(line['@timestamp'])));
    assert.equal(line.level, 'INFO');
    assert.equal(line.module, 'events');
    assert.equal(line.role, 'api');
    assert.equal(line.userId, 'user_001');
  });

  it('when LOG_FORMAT=pretty, then the line is seed 003s plain form', () => {
    const { root, text } = capture('pretty');
    moduleLogger(root, 'events').info({ userId: 'user_001' }, 'EVENT_INSERTED');
    assert.match(
      text(),
      /^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] INFO \[api:events\] EVENT_INSERTED \| userId="user_001"\n$/,
    );
    assert.equal(
      formatPrettyLine({ level: 50, time: 0, msg: 'X', role: 'r', module: 'm' }),
      '[1970-01-01T00:00:00.000Z] ERROR [r:m] X\n',
    );
  });

  it('when DEBUG=tessera:codes*, then only the codes module logs at debug', () => {
    const { root, text } = capture('json', 'tessera:codes*');
    moduleLogger(root, 'codes').debug('CODES_DEBUG');
    moduleLogger(root, 'events').debug('EVENTS_DEBUG');
    assert.match(text(), /CODES_DEBUG/);
    assert.doesNotMatch(text(), /EVENTS_DEBUG/);
  });

  it('when a module route fails, then VALIDATION_ERROR, DB_CONNECTION_FAILED and REQUEST_FAILED name that module and the role', async () => {
    const p = await startPlatform({ modules: [fixtureModule], env: { DEBUG: 'tessera:fixture*' } });
    const bad = await p.app.inject({
      method: 'POST',
      url: '/api/fixture/body',
      headers: p.auth,
      payload: {},
    });
    assert.equal(bad.statusCode, 400);
    const down = await p.app.inject({ url: '/api/fixture/db-down', headers: p.auth });
    assert.equal(down.statusCode, 503);
    assert.equal(down.json().message, 'database unavailable; retry shortly');
    const boom = await p.app.inject({ url: '/api/fixture/boom', headers: p.auth });
    assert.equal(boom.statusCode, 500);
    for (const [event, reqId] of [
      ['VALIDATION_ERROR', bad.headers['x-request-id']],
      ['DB_CONNECTION_FAILED', down.headers['x-request-id']],
      ['REQUEST_FAILED', boom.headers['x-request-id']],
    ]) {
      const line = p.logs.events(event as string).find((l) => l.reqId === reqId);
      assert.ok(line, `${event} logged for its request`);
      assert.equal(line.module, 'fixture', `${event} names the module`);
      assert.equal(line.role, 'all', `${event} names the role`);
    }
    // A route outside any module (the ops and admin routes) is http's.
    const outside = await p.app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 1 } });
    assert.equal(outside.statusCode, 400);
    const line = p.logs.events('VALIDATION_ERROR').find((l) => l.reqId === outside.headers['x-request-id']);
    assert.equal(line, undefined, 'http is not raised by DEBUG=tessera:fixture*, so no debug line');
  });

  it("when DEBUG=tessera*, then the kit's own loggers (http, jobs, health) log at debug too", async () => {
    const p = await startPlatform({
      modules: [fixtureModule],
      env: { DEBUG: 'tessera*', LOG_LEVEL: 'info' },
    });
    assert.equal(p.app.log.level, 'debug', 'the Fastify (http) logger');
    const health = await p.app.inject('/health');
    assert.equal(health.statusCode, 200);
    await p.app.inject('/metrics');
    const bad = await p.app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 1 } });
    assert.equal(bad.statusCode, 400);
    const invalid = p.logs.events('VALIDATION_ERROR').find((l) => l.reqId === bad.headers['x-request-id']);
    assert.equal(invalid?.module, 'http', 'a route outside any module fails as http');
    // Seed 003's "request received", before the answer's API_REQUEST; not for scrapes.
    const started = p.logs.events('API_REQUEST_START');
    assert.deepEqual(
      started.map((l) => [l.reqId, l.method, l.url, l.module]),
      [
        [health.headers['x-request-id'], 'GET', '/health', 'http'],
        [bad.headers['x-request-id'], 'POST', '/api/auth/login', 'http'],
      ],
    );
    await waitFor(() => p.logs.lines.some((l) => l.module === 'jobs' && l.level === 20), {
      what: 'graphile-worker chatter at debug under module jobs',
    });
    const debugModules = new Set(p.logs.lines.filter((l) => l.level === 20).map((l) => l.module));
    for (const m of ['jobs', 'health', 'http'])
      assert.ok(debugModules.has(m), `${m} logs at debug (saw ${[...debugModules].join(', ')})`);
    const quiet = await startPlatform({ modules: [fixtureModule], env: { LOG_LEVEL: 'info' } });
    await quiet.app.inject('/health');
    assert.deepEqual(
      quiet.logs.lines.filter((l) => l.level === 20),
      [],
      'without DEBUG nothing logs at debug',
    );
  });

  it('when any platform logs, then every line names its module and role', async () => {
    const p = await startPlatform({ modules: [fixtureModule], env: { DEBUG: 'tessera*' } });
    await p.app.inject({ url: '/api/fixture/boom', headers: p.auth });
    await p.app.inject('/health');
    const nameless = p.logs.lines.filter((l) => typeof l.module !== 'string' || typeof l.role !== 'string');
    assert.deepEqual(nameless, [], 'lines without module or role');
  });
});
