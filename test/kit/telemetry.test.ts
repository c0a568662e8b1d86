// Sentry and OpenTelemetry switch on only when configured, report to real HTTP endpoints, and a
// bad setting never breaks a start.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { fixtureModule } from '../fixtures/fixture-module.ts';
import { startPlatform, waitFor } from '../helpers.ts';

async function receiver() {
  const received: { path: string; body: string }[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let raw = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
      received.push({ path: req.url ?? '', body: raw.toString('utf8') });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as AddressInfo).port, received };
}

describe('telemetry', () => {
  it('when SENTRY_DSN and OTEL endpoint are set, then a 500 reaches Sentry and request spans reach the collector', async () => {
    const r = await receiver();
    const p = await startPlatform({
      modules: [fixtureModule],
      env: {
        SENTRY_DSN: `http://publickey@127.0.0.1:${r.port}/1`,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${r.port}`,
      },
    });
    const res = await p.app.inject({ url: '/api/fixture/boom', headers: p.auth });
    assert.equal(res.statusCode, 500);
    assert.equal(res.json().message, 'Internal Server Error', '5xx detail is hidden from the caller');
    await waitFor(
      () => r.received.some((m) => m.path.includes('/envelope') && m.body.includes('secret internal detail')),
      {
        what: 'Sentry envelope',
      },
    );
    await waitFor(
      () => r.received.some((m) => m.path === '/v1/traces' && m.body.includes('/api/fixture/boom')),
      {
        what: 'OTLP spans',
      },
    );
  });

  it('when SENTRY_DSN is malformed, then Tessera still starts and logs TELEMETRY_DISABLED', async () => {
    const p = await startPlatform({ modules: [], env: { SENTRY_DSN: 'not a dsn' } });
    assert.equal((await p.app.inject('/health')).statusCode, 200);
    assert.equal(p.logs.events('TELEMETRY_DISABLED').length, 1);
  });
});
