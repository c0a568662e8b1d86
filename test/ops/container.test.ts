// The Dockerfile and deploy/compose.yaml without a Docker engine: the files are checked for what
// the issue asks, and the image's file set (the build context after .dockerignore) is started the
// way the image starts it — same entrypoint, same ENV, the HEALTHCHECK command run as written,
// then SIGTERM — so "the container runs but never answers" (seed 000) is caught here.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { freePort } from '../../src/kit/embedded-postgres.ts';
import { freshDatabase, waitFor } from '../helpers.ts';
import { DEPLOY, needsBinary, ROOT, read, yamlFile } from './lib.ts';

const dockerfile = read('Dockerfile');
const lines = dockerfile
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const instr = (name: string) => lines.filter((l) => l.toUpperCase().startsWith(`${name} `));
const runtimeStage = lines.slice(lines.findLastIndex((l) => l.startsWith('FROM ')));
const execForm = (line: string) => JSON.parse(line.replace(/^\S+\s+/, '')) as string[];

/** .dockerignore as the patterns this repo uses: top-level names and `**\/*.suffix`. */
function ignored(rel: string): boolean {
  const patterns = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  return patterns.some((p) => {
    if (p.startsWith('**/*')) return rel.endsWith(p.slice(4));
    return rel === p || rel.startsWith(`${p}/`);
  });
}

function copyContext(dest: string) {
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(ROOT, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      if (ignored(r)) continue;
      if (statSync(path.join(ROOT, r)).isDirectory()) walk(r);
      else cpSync(path.join(ROOT, r), path.join(dest, r));
    }
  };
  walk('');
}

describe('Dockerfile', () => {
  test('when the Dockerfile is read, then it is multi-stage, non-root, on 0.0.0.0, with a /heartbeat HEALTHCHECK and Node as the signal receiver', () => {
    assert.ok(instr('FROM').length >= 2, 'multi-stage');
    assert.ok(
      runtimeStage.some((l) => /^COPY --from=deps /.test(l)),
      'runtime copies node_modules from the deps stage',
    );
    const user = runtimeStage.filter((l) => l.startsWith('USER '));
    assert.equal(user.length, 1);
    assert.ok(!/^USER (root|0)(:|$)/.test(user[0]!), 'non-root');
    assert.match(instr('ENV').join(' '), /HOST=0\.0\.0\.0/);
    assert.match(instr('ENV').join(' '), /NODE_ENV=production/);
    assert.match(instr('HEALTHCHECK').join(' '), /\/heartbeat/);
    const entry = execForm(instr('ENTRYPOINT')[0]!);
    assert.deepEqual(
      entry,
      ['node', 'bin/tessera.js'],
      'exec form, node directly (no npm or sh to swallow SIGTERM)',
    );
    assert.deepEqual(execForm(instr('CMD')[0]!), ['start']);
  });

  test('when .dockerignore filters the context, then what the program needs is in and the rest is out', () => {
    for (const need of [
      'package.json',
      'bin/tessera.js',
      'src/cli/main.ts',
      'src/kit/migrations/001_kit.sql',
      'web/index.html',
    ])
      assert.ok(!ignored(need), `${need} must be in the image`);
    for (const out of [
      'node_modules/x',
      '.git/HEAD',
      'data/postgres',
      'test/helpers.ts',
      'src/modules/events/ingest.test.ts',
    ])
      assert.ok(ignored(out), `${out} must stay out of the image`);
  });

  test('when the image file set starts as the image does, then /heartbeat and /health answer on 0.0.0.0, the HEALTHCHECK passes and SIGTERM exits 0', async () => {
    const ctx = mkdtempSync(path.join(tmpdir(), 'tessera-image-'));
    copyContext(ctx);
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(ctx, 'node_modules'));
    assert.ok(!existsSync(path.join(ctx, 'test')));
    const port = await freePort();
    const env: Record<string, string> = {
      PATH: process.env.PATH!,
      NODE_ENV: 'production',
      HOST: '0.0.0.0',
      PORT: String(port),
      DATA_DIR: path.join(ctx, 'data'),
      TESSERA_CONFIG: 'none',
      DATABASE_URL: await freshDatabase(),
      JWT_SECRET: 'x'.repeat(48),
      WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      SENDER_PUBLIC_URL: 'https://tessera.example.com',
    };
    const [cmd, ...args] = [...execForm(instr('ENTRYPOINT')[0]!), ...execForm(instr('CMD')[0]!)];
    const proc = spawn(cmd === 'node' ? process.execPath : cmd!, args, {
      cwd: ctx,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`)).ok, {
        timeoutMs: 30000,
        what: `image start: ${out.slice(-500)}`,
      });
      const listen = spawnSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
      if (listen.status === 0) assert.match(listen.stdout, /(0\.0\.0\.0|\*|\[::\]):\d+/, listen.stdout);
      const hc = instr('HEALTHCHECK')[0]!;
      const check = execForm(hc.slice(hc.indexOf('CMD ')));
      const r = spawnSync(process.execPath, check.slice(1), { env, encoding: 'utf8', timeout: 10000 });
      assert.equal(r.status, 0, `HEALTHCHECK failed: ${r.stderr}`);
      proc.kill('SIGTERM');
      assert.equal(await exited, 0, out.slice(-1000));
      assert.match(out, /SIGNAL_RECEIVED/);
    } finally {
      proc.kill('SIGKILL');
      await exited;
      rmSync(ctx, { recursive: true, force: true });
    }
  });
});

describe('compose', () => {
  const compose = yamlFile('deploy/compose.yaml');
  const s = compose.services;
  /** Every service that stays up (all but the one-shot migrate). */
  const LONG_RUNNING = [
    'api',
    'worker',
    'scheduler',
    'postgres',
    'nats',
    'prometheus',
    'grafana',
    'node-exporter',
    'cadvisor',
  ];

  test('when compose.yaml is read, then it runs api ×2, worker ×2, a scheduler, PostgreSQL, NATS with JetStream and the monitoring stack', () => {
    for (const name of ['migrate', ...LONG_RUNNING]) assert.ok(s[name], `${name} missing`);
    assert.equal(s.api.deploy.replicas, 2);
    assert.equal(s.worker.deploy.replicas, 2);
    for (const role of ['api', 'worker', 'scheduler'])
      assert.deepEqual(s[role].command, ['start', '--role', role]);
    assert.deepEqual(s.migrate.command, ['migrate']);
    assert.ok(s.nats.command.includes('-js'));
    assert.equal(s.api.environment.HOST, '0.0.0.0');
    assert.match(s.api.environment.NATS_URL, /^nats:\/\/nats:4222$/);
    assert.match(s.api.environment.DATABASE_URL, /@postgres:5432\//);
    // Required, never defaulted: a default would be localhost, which production refuses.
    assert.match(s.api.environment.SENDER_PUBLIC_URL, /^\$\{SENDER_PUBLIC_URL:\?/);
  });

  test('when services start, then every dependency waits on a health or completion condition and long-running services have healthchecks', () => {
    for (const [name, svc] of Object.entries<any>(s)) {
      for (const [dep, cond] of Object.entries<any>(svc.depends_on ?? {})) {
        assert.ok(s[dep], `${name} depends on unknown ${dep}`);
        assert.match(cond.condition, /^service_(healthy|completed_successfully)$/, `${name} -> ${dep}`);
        if (cond.condition === 'service_healthy')
          assert.ok(s[dep].healthcheck && !s[dep].healthcheck.disable, `${dep} has no healthcheck`);
      }
    }
    for (const name of LONG_RUNNING) assert.ok(s[name].healthcheck?.test, `${name} healthcheck`);
    assert.match(s.api.healthcheck.test.join(' '), /\/health/);
    assert.equal(s.api.depends_on.migrate.condition, 'service_completed_successfully');
  });

  test('when Prometheus and Grafana mount their files, then the files exist and the scrape jobs name every role', () => {
    for (const svc of ['prometheus', 'grafana'])
      for (const v of s[svc].volumes.filter((x: string) => x.startsWith('./')))
        assert.ok(existsSync(path.join(DEPLOY, v.split(':')[0])), `${svc}: ${v}`);
    const prom = yamlFile('deploy/prometheus/prometheus.yml');
    const jobs = prom.scrape_configs.map((j: any) => j.job_name);
    for (const j of ['tessera-api', 'tessera-worker', 'tessera-scheduler', 'node', 'cadvisor'])
      assert.ok(jobs.includes(j), j);
    const ds = yamlFile('deploy/grafana/provisioning/datasources/prometheus.yml').datasources[0];
    assert.equal(ds.url, 'http://prometheus:9090');
    for (const f of readdirSync(path.join(DEPLOY, 'grafana/dashboards'))) {
      const d = JSON.parse(read(`deploy/grafana/dashboards/${f}`));
      assert.ok(d.uid && d.title && d.panels.length > 0, f);
      for (const p of d.panels) assert.equal(p.datasource.uid, ds.uid, `${f}: ${p.title}`);
    }
  });

  test(
    'when docker-compose validates the file, then it is accepted',
    needsBinary('docker-compose', 'docker-compose'),
    () => {
      const config = (env: Record<string, string>) => {
        const { SENDER_PUBLIC_URL: _unset, ...inherited } = process.env;
        return spawnSync(
          'docker-compose',
          ['-p', 'tessera', '-f', path.join(DEPLOY, 'compose.yaml'), 'config', '-q'],
          { encoding: 'utf8', timeout: 60000, env: { ...inherited, ...env } },
        );
      };
      const r = config({ SENDER_PUBLIC_URL: 'https://mail.example.com' });
      assert.equal(r.status, 0, r.stderr);
      const unset = config({});
      assert.notEqual(unset.status, 0, 'compose refuses to start without SENDER_PUBLIC_URL');
      assert.match(unset.stderr, /SENDER_PUBLIC_URL/);
    },
  );
});
