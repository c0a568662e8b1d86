import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { eventsUrl, seedSummary } from './seed.ts';

const BIN = path.join(import.meta.dirname, '../../../bin/tessera.js');

/** `tessera seed events …` in a child process: its exit code, stdout and stderr. */
function seedCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, 'seed', 'events', ...args],
      { env: { ...process.env, TESSERA_CONFIG: 'none', ...env }, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err.code as number) ?? -1) : 0, stdout, stderr }),
    );
  });
}

describe('tessera seed events', () => {
  it('when --url is a base URL or the events URL, then events go to /api/events', () => {
    for (const url of ['http://h:1', 'http://h:1/', 'http://h:1/api/events', 'http://h:1/api/events/'])
      assert.equal(eventsUrl(url), 'http://h:1/api/events', url);
    assert.equal(eventsUrl('https://h'), 'https://h/api/events');
  });

  it('when --url has no scheme, then it is refused saying to include http://', () => {
    for (const url of ['localhost:3251', '127.0.0.1:3000', 'example.com'])
      assert.throws(
        () => eventsUrl(url),
        new Error(`--url ${url} is not an http(s) URL: include the scheme, e.g. --url http://${url}`),
      );
  });

  it('when --url has another path, then it is refused naming the base URL to give', () => {
    assert.throws(
      () => eventsUrl('http://h:1/api'),
      new Error(
        "--url http://h:1/api has the path /api: give the server's base URL (--url http://h:1) or its events URL (--url http://h:1/api/events)",
      ),
    );
  });

  it('when some or all requests failed, then the summary says how many were accepted, not "sent N"', () => {
    const url = 'http://h:1/api/events';
    assert.equal(
      seedSummary(3, url, new Map([[404, 3]])),
      '0 of 3 events accepted by http://h:1/api/events, 3 failed (3× 404)',
    );
    assert.equal(
      seedSummary(
        4,
        url,
        new Map<number | string, number>([
          [201, 2],
          [500, 1],
          ['ECONNRESET', 1],
        ]),
      ),
      '2 of 4 events accepted by http://h:1/api/events, 2 failed (1× 500, 1× ECONNRESET)',
    );
    assert.equal(
      seedSummary(2, url, new Map([[201, 2]])),
      'sent 2 events to http://h:1/api/events: all 2 accepted (201)',
    );
  });

  it('when the server answers 404 to every event, then the CLI says none was accepted and exits 1', async () => {
    const server = createServer((_req, res) => res.writeHead(404).end('{}'));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    after(() => server.close());
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const run = await seedCli(['--count', '3', '--url', base]);
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stdout, `0 of 3 events accepted by ${base}/api/events, 3 failed (3× 404)\n`);
    const noScheme = await seedCli(['--url', base.replace('http://', '')]);
    assert.equal(noScheme.code, 1);
    assert.match(
      noScheme.stderr,
      /is not an http\(s\) URL: include the scheme, e.g. --url http:\/\/127\.0\.0\.1:/,
    );
  });

  it('when no --url is given, then the events go to this machine at the PORT `tessera start` reads', async () => {
    let received = 0;
    const server = createServer((req, res) => {
      if (req.url === '/api/events') received++;
      req.resume();
      res.writeHead(201, { 'content-type': 'application/json' }).end('{}');
    });
    // Every address, so "localhost" reaches it whether it resolves to ::1 or 127.0.0.1.
    await new Promise<void>((ok) => server.listen(0, ok));
    after(() => server.close());
    const port = (server.address() as AddressInfo).port;
    // Before: always http://localhost:3000, whatever PORT the server was started with.
    const run = await seedCli(['--count', '2'], { PORT: String(port) });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `sent 2 events to http://localhost:${port}/api/events: all 2 accepted (201)\n`);
    assert.equal(received, 2);
  });
});
