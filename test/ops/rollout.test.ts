// deploy/rollout.sh against a fake `kubectl` (and `curl`) on PATH that records every call and
// fails the calls a scenario names: deploy, health check, rollback, dry run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { DEPLOY, needsBinary } from './lib.ts';

const IMAGE = 'ghcr.io/acme/tessera:abc1234';

// Fails (exit 1) when its argv contains any substring listed in FAKE_FAIL (separated by |), or,
// for FAKE_FAIL_ONCE, only the first time;
// answers `get deployment` with the current image; stores the stdin of `apply -f -`.
const FAKE = `#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$FAKE_LOG"
IFS='|' read -r -a fails <<< "\${FAKE_FAIL:-}"
for f in "\${fails[@]}"; do
  if [ -n "$f" ] && [[ "$*" == *"$f"* ]]; then echo "fake failure: $f" >&2; exit 1; fi
done
if [ -n "\${FAKE_FAIL_ONCE:-}" ] && [[ "$*" == *"$FAKE_FAIL_ONCE"* ]] && [ ! -e "$FAKE_LOG.failed" ]; then
  touch "$FAKE_LOG.failed"; echo "fake failure (once): $FAKE_FAIL_ONCE" >&2; exit 1
fi
case "$*" in
  *"get deployment"*) printf 'ghcr.io/acme/tessera:old0001' ;;
  *"apply -f -"*) cat > "$FAKE_LOG.applied" ;;
esac
exit 0
`;

function run(args: string[], fail = '', failOnce = '') {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-rollout-'));
  for (const bin of ['kubectl', 'curl']) {
    writeFileSync(path.join(dir, bin), FAKE);
    chmodSync(path.join(dir, bin), 0o755);
  }
  const log = path.join(dir, 'calls.log');
  writeFileSync(log, '');
  const r = spawnSync('bash', [path.join(DEPLOY, 'rollout.sh'), ...args], {
    encoding: 'utf8',
    timeout: 30000,
    env: {
      ...process.env,
      PATH: `${dir}:${process.env.PATH}`,
      FAKE_LOG: log,
      FAKE_FAIL: fail,
      FAKE_FAIL_ONCE: failOnce,
      HEALTH_INTERVAL: '0',
      HEALTH_TRIES: '2',
    },
  });
  const calls = readFileSync(log, 'utf8').split('\n').filter(Boolean);
  let applied = '';
  try {
    applied = readFileSync(`${log}.applied`, 'utf8');
  } catch {}
  rmSync(dir, { recursive: true, force: true });
  return { status: r.status, stderr: r.stderr, calls, applied };
}

const has = (calls: string[], s: string) => calls.filter((c) => c.includes(s)).length;

describe('rollout.sh', () => {
  test('when every step succeeds, then it migrates, sets the image on each role, waits, checks /health and exits 0', () => {
    const r = run(['--image', IMAGE]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.applied, new RegExp(`image: ${IMAGE}`), 'the migration Job runs the new image');
    assert.match(r.applied, /args: \[["']migrate["']\]/);
    const order = [
      'kubectl -n tessera delete job tessera-migrate',
      'kubectl -n tessera apply -f -',
      'kubectl -n tessera wait --for=condition=complete job/tessera-migrate',
      `kubectl -n tessera set image deployment/tessera-api tessera=${IMAGE}`,
      `kubectl -n tessera set image deployment/tessera-worker tessera=${IMAGE}`,
      `kubectl -n tessera set image deployment/tessera-scheduler tessera=${IMAGE}`,
      'kubectl -n tessera rollout status deployment/tessera-api',
      'kubectl -n tessera rollout status deployment/tessera-scheduler',
      'kubectl -n tessera exec deployment/tessera-api -c tessera -- node -e',
    ];
    let at = -1;
    for (const step of order) {
      const i = r.calls.findIndex((c, idx) => idx > at && c.startsWith(step));
      assert.ok(i > at, `expected "${step}" after call ${at}:\n${r.calls.join('\n')}`);
      at = i;
    }
    assert.equal(has(r.calls, 'rollout undo'), 0);
  });

  test('when a Deployment does not become ready, then every changed role is rolled back and it exits 1', () => {
    const r = run(['--image', IMAGE], '', 'rollout status deployment/tessera-worker --timeout');
    assert.equal(r.status, 1, r.stderr);
    for (const role of ['api', 'worker', 'scheduler'])
      assert.equal(has(r.calls, `rollout undo deployment/tessera-${role}`), 1);
    assert.equal(has(r.calls, ' exec '), 0, 'no health check after a failed rollout');
    assert.equal(has(r.calls, 'rollout status deployment/tessera-worker'), 2, 'waited for the undo too');
    assert.match(r.stderr, /rolled back/);
  });

  test('when /health fails after the rollout, then it retries, rolls back and exits 1', () => {
    const r = run(['--image', IMAGE], ' exec deployment/tessera-api');
    assert.equal(r.status, 1, r.stderr);
    assert.equal(has(r.calls, ' exec deployment/tessera-api'), 2, 'HEALTH_TRIES=2');
    assert.equal(has(r.calls, 'rollout undo'), 3);
  });

  test('when --health-url is given (an in-cluster or port-forward URL), then curl checks <url>/health', () => {
    const ok = run(['--image', IMAGE, '--health-url', 'http://tessera-api.tessera.svc/']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(
      has(ok.calls, 'curl -fsS --max-time 5 http://tessera-api.tessera.svc/health'),
      1,
      ok.calls.join('\n'),
    );
    const bad = run(
      ['--image', IMAGE, '--health-url', 'http://tessera-api.tessera.svc'],
      'tessera-api.tessera.svc/health',
    );
    assert.equal(bad.status, 1);
    assert.equal(has(bad.calls, 'rollout undo'), 3);
  });

  test('when the migration fails, then no Deployment is touched and it exits 1', () => {
    const r = run(['--image', IMAGE], 'wait --for=condition=complete');
    assert.equal(r.status, 1);
    assert.equal(has(r.calls, 'set image'), 0);
    assert.equal(has(r.calls, 'rollout undo'), 0);
    assert.match(r.stderr, /migration job failed/);
  });

  test('when the rollback fails too, then it exits 3', () => {
    const r = run(
      ['--image', IMAGE],
      'rollout status deployment/tessera-api --timeout|rollout undo deployment/tessera-api',
    );
    assert.equal(r.status, 3, r.stderr);
  });

  test('when --dry-run is given, then only read-only kubectl calls run and the plan is printed', () => {
    const r = run(['--image', IMAGE, '--dry-run', '--namespace', 'staging']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(
      r.calls.length === 3 && r.calls.every((c) => c.startsWith('kubectl -n staging get deployment')),
      r.calls.join('\n'),
    );
    assert.match(
      r.stderr,
      /would run: kubectl -n staging set image deployment\/tessera-api tessera=ghcr.io\/acme\/tessera:abc1234/,
    );
    assert.match(r.stderr, /nothing was changed/);
  });

  test('when the image or an argument is wrong, then it exits 2 before calling kubectl', () => {
    for (const args of [[], ['--image', 'ghcr.io/acme/tessera'], ['--image', IMAGE, '--bogus']]) {
      const r = run(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.calls.length, 0);
    }
  });
});

test(
  'when shellcheck lints rollout.sh, then it reports nothing',
  needsBinary('shellcheck', 'shellcheck'),
  () => {
    const r = spawnSync('shellcheck', [path.join(DEPLOY, 'rollout.sh')], {
      encoding: 'utf8',
      timeout: 30000,
    });
    assert.equal(r.status, 0, r.stdout);
  },
);
