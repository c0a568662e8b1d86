// .github/workflows/ci.yml, offline: its structure, and its branch-tagging script run for real
// with the variables GitHub would set.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ROOT, yamlFile } from './lib.ts';

const wf = yamlFile('.github/workflows/ci.yml');
const steps = (job: string) => wf.jobs[job].steps as any[];
const runs = (job: string) =>
  steps(job)
    .map((s) => s.run ?? '')
    .join('\n');

describe('ci workflow', () => {
  test('when a branch is pushed or a pull request opened, then the workflow runs', () => {
    assert.deepEqual(wf.on.push.branches, ['**']);
    assert.deepEqual(wf.on.pull_request.branches, ['main', 'dev']);
  });

  test('when it runs, then lint and typecheck use the npm scripts on Node 20', () => {
    const node = steps('lint').find((s) => s.uses?.startsWith('actions/setup-node'));
    assert.equal(String(node.with['node-version']), '20');
    assert.match(runs('lint'), /npm ci/);
    assert.match(runs('lint'), /npm run lint/);
    assert.match(runs('lint'), /npm run typecheck/);
  });

  test('when tests run, then they run on Node 20, 22 and 24 with PostgreSQL and NATS service containers that npm test sees', () => {
    const t = wf.jobs.test;
    assert.match(t.services.postgres.image, /^postgres:/);
    assert.match(t.services.nats.image, /^nats:/);
    assert.match(t.env.DATABASE_URL, /@postgres:5432\//);
    assert.equal(t.env.NATS_URL, 'nats://nats:4222');
    assert.equal(t.container.image, 'node:$' + '{{ matrix.node }}-bookworm');
    assert.deepEqual(t.strategy.matrix.node, [20, 22, 24], 'every supported Node major');
    assert.equal(t.strategy['fail-fast'], false, 'one major failing does not hide the others');
    assert.match(runs('test'), /apt-get install .*chromium.*prometheus.*iproute2.*nats-server/);
    assert.match(runs('test'), /^npm test$/m);
  });

  test('when tests end, pass or fail, then the browser screenshots are uploaded as an artifact', () => {
    const all = steps('test');
    const upload = all.find((s) => s.uses?.startsWith('actions/upload-artifact'));
    assert.ok(upload, 'an upload-artifact step');
    assert.equal(upload.if, 'always()');
    assert.equal(upload.with.path.replace(/\/$/, ''), 'test-artifacts');
    assert.ok(
      all.indexOf(upload) > all.findIndex((s) => /^npm test$/m.test(s.run ?? '')),
      'after the test step',
    );
    // The folder the browser suites write to.
    assert.match(readFileSync(path.join(ROOT, 'test/browser/harness.ts'), 'utf8'), /'test-artifacts'/);
  });

  test('when the image job runs, then it follows lint and test, builds amd64 and arm64, and pushes to GHCR', () => {
    const j = wf.jobs.image;
    assert.deepEqual(j.needs, ['lint', 'test']);
    assert.equal(j.if, "github.event_name == 'push'");
    assert.equal(j.permissions.packages, 'write');
    const build = j.steps.find((s: any) => s.uses?.startsWith('docker/build-push-action'));
    assert.deepEqual(build.with.platforms.split(','), ['linux/amd64', 'linux/arm64']);
    assert.equal(build.with.push, true);
    assert.equal(build.with.tags, '$' + '{{ steps.tags.outputs.tags }}'); // the GitHub expression, literally
    assert.ok(j.steps.some((s: any) => s.uses?.startsWith('docker/setup-qemu-action')));
    const login = j.steps.find((s: any) => s.uses?.startsWith('docker/login-action'));
    assert.equal(login.with.registry, 'ghcr.io');
  });

  test("when the tagging step runs on main, dev and another branch, then the tags are seed 002's", (t) => {
    const step = wf.jobs.image.steps.find((s: any) => s.id === 'tags');
    assert.equal(step.shell, 'bash');
    const dir = mkdtempSync(path.join(tmpdir(), 'tessera-ci-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const tags = (branch: string) => {
      const out = path.join(dir, `out-${branch.replace(/\W/g, '_')}`);
      writeFileSync(out, '');
      const r = spawnSync('bash', ['-e', '-c', step.run], {
        encoding: 'utf8',
        env: {
          PATH: process.env.PATH,
          GITHUB_REF_NAME: branch,
          GITHUB_SHA: '3f9c2e1d0b8a7c6e5f4a3b2c1d0e9f8a7b6c5d4e',
          GITHUB_REPOSITORY: 'Acme/Tessera',
          GITHUB_OUTPUT: out,
        },
      });
      assert.equal(r.status, 0, r.stderr);
      return readFileSync(out, 'utf8')
        .trim()
        .replace(/^tags=/, '')
        .split(',');
    };
    const img = 'ghcr.io/acme/tessera';
    assert.deepEqual(tags('main'), [`${img}:latest`, `${img}:3f9c2e1`]);
    assert.deepEqual(tags('dev'), [`${img}:development`, `${img}:dev-3f9c2e1`]);
    assert.deepEqual(tags('feature/login'), [`${img}:alpha-3f9c2e1`]);
  });
});
