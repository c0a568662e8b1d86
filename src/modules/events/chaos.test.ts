import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startPlatform } from '../../../test/helpers.ts';
import { createApiKey } from '../../kit/auth.ts';
import { eventsModule } from './index.ts';
import { countBacklog } from './metrics.ts';

describe('events API failure modes', async () => {
  const p = await startPlatform({
    modules: [eventsModule],
    role: 'api',
    env: { API_FAILURE_MODE: 'random_500' },
  });
  const post = (i: number) =>
    p.app.inject({
      method: 'POST',
      url: '/api/events',
      headers: p.auth,
      payload: { userId: `t${i}`, action: 'test' },
    });
  const chaos = (payload: object, headers: Record<string, string> = p.auth) =>
    p.app.inject({ method: 'POST', url: '/api/admin/chaos', headers, payload });

  it('when API_FAILURE_MODE=random_500, then about 30% answer 500, the rest 201, and only the 201s are stored', async () => {
    assert.equal((await chaos({ module: 'events', api: 'random_500' })).statusCode, 200);
    const codes: number[] = [];
    for (let i = 0; i < 300; i++) codes.push((await post(i)).statusCode);
    const failed = codes.filter((c) => c === 500).length;
    assert.equal(codes.filter((c) => c === 201).length + failed, 300, 'only 201 and 500');
    // Binomial(300, 0.3): mean 90, sd 7.9; 55..125 is beyond 4 sd either side.
    assert.ok(failed >= 55 && failed <= 125, `${failed} of 300 failed`);
    assert.equal(p.logs.events('API_FAILURE_INJECTED').length, failed);
    assert.equal(await countBacklog(p.kit.pool), 300 - failed);
  });

  it('when the mode is switched to db at run time, then 503 and API_FAILURE_INJECTED; back to none, then 201', async () => {
    const set = await chaos({ module: 'events', api: 'db' });
    assert.equal(set.statusCode, 200);
    assert.equal(set.json().overrides.events.api, 'db');
    const res = await post(1);
    assert.equal(res.statusCode, 503);
    // Set at run time: the message says so and how to clear it, not the environment variable.
    const runTime =
      'api=db set at run time for module "events" by POST /api/admin/chaos; DELETE /api/admin/chaos clears it';
    assert.equal(res.json().message, `database unavailable (failure injected: ${runTime})`);
    assert.equal(p.logs.events('API_FAILURE_INJECTED').at(-1)!.mode, 'db');
    assert.equal(p.logs.events('API_FAILURE_INJECTED').at(-1)!.origin, runTime);
    assert.equal((await chaos({ module: '*', api: 'db' })).statusCode, 200);
    assert.equal((await chaos({ module: 'events', api: 'none' })).statusCode, 200);
    assert.equal((await chaos({ module: '*', api: 'none' })).statusCode, 200);
    assert.equal((await chaos({ module: 'events', api: 'none' })).statusCode, 200);
    assert.equal((await post(2)).statusCode, 201);
  });

  it('when a non-admin key or an unknown mode is sent to /api/admin/chaos, then 403 and 400', async () => {
    const { key } = await createApiKey(p.kit.pool, 'events', ['events']);
    assert.equal((await chaos({ module: 'events', api: 'db' }, { 'x-api-key': key })).statusCode, 403);
    const bad = await chaos({ module: 'events', api: 'explode' });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().message, /api/);
  });

  it('when API_FAILURE_MODE=db comes from the environment, then every events call answers 503', async () => {
    const env = await startPlatform({
      modules: [eventsModule],
      role: 'api',
      env: { API_FAILURE_MODE: 'db' },
    });
    const res = await env.app.inject({
      method: 'POST',
      url: '/api/events',
      headers: env.auth,
      payload: { userId: 'u', action: 'a' },
    });
    assert.equal(res.statusCode, 503);
    assert.equal(
      res.json().message,
      'database unavailable (failure injected: API_FAILURE_MODE=db in the environment)',
    );
    assert.equal(env.logs.events('API_FAILURE_INJECTED').length, 1);
    assert.equal(
      env.logs.events('API_FAILURE_INJECTED')[0]!.origin,
      'API_FAILURE_MODE=db in the environment',
    );
  });

  it('when API_FAILURE_MODE=db comes from the config file, then the 503 names that file', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tessera-chaos-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'tessera.config.json');
    writeFileSync(file, JSON.stringify({ API_FAILURE_MODE: 'db' }));
    const fromFile = await startPlatform({
      modules: [eventsModule],
      role: 'api',
      env: { TESSERA_CONFIG: file },
    });
    const res = await fromFile.app.inject({ url: '/api/analytics', headers: fromFile.auth });
    assert.equal(res.statusCode, 503);
    assert.equal(
      res.json().message,
      `database unavailable (failure injected: API_FAILURE_MODE=db in the config file ${file})`,
    );
  });
});
