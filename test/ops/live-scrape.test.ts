// A real Prometheus (Debian package) scrapes a real Tessera on loopback; its HTTP API must report
// the target up and return Tessera's series. Bounded: 60 s at most for the whole suite.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort } from '../../src/kit/embedded-postgres.ts';
import { freshDatabase, json, spawnTessera, waitFor } from '../helpers.ts';
import { needsBinary } from './lib.ts';

describe('live scrape', () => {
  test('when Prometheus scrapes a running Tessera, then the target is up and Tessera metrics are stored', {
    ...needsBinary('prometheus', 'prometheus'),
    timeout: 60000,
  }, async () => {
    const tessera = await spawnTessera('all', { DATABASE_URL: await freshDatabase() });
    await tessera.waitHealthy(30000);
    // Traffic, so the request histogram has a series for /heartbeat.
    for (let i = 0; i < 3; i++) await fetch(`${tessera.url}/heartbeat`);

    const dir = mkdtempSync(path.join(tmpdir(), 'tessera-prom-'));
    const config = path.join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'scrape_configs:',
        '  - job_name: tessera-api',
        '    metrics_path: /metrics',
        `    static_configs: [{ targets: ['127.0.0.1:${tessera.port}'] }]`,
        '',
      ].join('\n'),
    );
    const port = await freePort();
    let out = '';
    const prom = spawn(
      'prometheus',
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prom.stdout.on('data', (d) => (out += d));
    prom.stderr.on('data', (d) => (out += d));
    after(async () => {
      prom.kill('SIGKILL');
      if (prom.exitCode === null && prom.signalCode === null) await new Promise((r) => prom.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    });
    const api = `http://127.0.0.1:${port}/api/v1`;

    const target = await waitFor(
      async () => {
        if (prom.exitCode !== null) throw new Error(`prometheus exited: ${out.slice(-1000)}`);
        const body = await json(await fetch(`${api}/targets`));
        const t = body.data.activeTargets.find((x: any) => x.labels.job === 'tessera-api');
        return t?.health === 'up' ? t : undefined;
      },
      { timeoutMs: 30000, intervalMs: 250, what: 'the Tessera target to be up' },
    );
    assert.equal(target.scrapeUrl, `http://127.0.0.1:${tessera.port}/metrics`);

    const query = async (q: string) =>
      (await json(await fetch(`${api}/query?query=${encodeURIComponent(q)}`))).data.result;
    const series = await waitFor(
      async () => {
        const r = await query('http_request_duration_seconds_count{job="tessera-api", route="/heartbeat"}');
        return r.length > 0 ? r : undefined;
      },
      { timeoutMs: 15000, intervalMs: 250, what: 'the request histogram in Prometheus' },
    );
    assert.equal(series[0].metric.role, 'all');
    assert.ok(Number(series[0].value[1]) >= 3);
    const up = await query('up{job="tessera-api"}');
    assert.equal(up[0].value[1], '1');
    const lag = await query('nodejs_eventloop_lag_p99_seconds{job="tessera-api"}');
    assert.equal(lag.length, 1);
  });
});
