// Prometheus config and alert rules: promtool's own checks and unit tests, and a runbook section
// in docs/OPERATIONS.md for every alert.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { DEPLOY, needsBinary, read, yamlFile } from './lib.ts';

const PROM_DIR = path.join(DEPLOY, 'prometheus');

function promtool(...args: string[]) {
  const r = spawnSync('promtool', args, { cwd: PROM_DIR, encoding: 'utf8', timeout: 60000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function alertNames(): string[] {
  const rules = yamlFile('deploy/prometheus/alerts.yml');
  return rules.groups.flatMap((g: any) => g.rules.map((r: any) => r.alert)).filter(Boolean);
}

describe('prometheus', () => {
  test(
    'when promtool checks the scrape config, then it is valid and loads the rule file',
    needsBinary('promtool', 'prometheus'),
    () => {
      const r = promtool('check', 'config', 'prometheus.yml');
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /SUCCESS: 1 rule files found/);
    },
  );

  test(
    'when promtool checks the alert rules, then every rule is valid',
    needsBinary('promtool', 'prometheus'),
    () => {
      const r = promtool('check', 'rules', 'alerts.yml');
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, new RegExp(`SUCCESS: ${alertNames().length} rules found`));
    },
  );

  test(
    'when promtool runs the alert unit tests, then they all pass',
    needsBinary('promtool', 'prometheus'),
    () => {
      const r = promtool('test', 'rules', 'alerts.test.yml');
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /SUCCESS/);
    },
  );

  test('when the alert rules are listed, then each one has a unit test that expects it to fire', () => {
    const tests = yamlFile('deploy/prometheus/alerts.test.yml').tests as any[];
    const firing = new Set(
      tests.flatMap((t) =>
        (t.alert_rule_test ?? []).filter((a: any) => a.exp_alerts?.length > 0).map((a: any) => a.alertname),
      ),
    );
    const untested = alertNames().filter((a) => !firing.has(a));
    assert.deepEqual(untested, [], `alerts without a firing unit test: ${untested.join(', ')}`);
  });

  test("when seed 004's runbook alerts are looked up, then each is covered by a rule", () => {
    const names = alertNames();
    const seed004 = [
      'TesseraHigh5xxRate',
      'TesseraRestartLoop',
      'TesseraAuthFailures',
      'TesseraDatabaseConnectionFailures',
      'TesseraSlowRequests',
      'EventsCronHeartbeatStale',
      'TesseraQueueBacklogGrowing',
      'CodesInventoryLow',
    ];
    assert.deepEqual(
      seed004.filter((a) => !names.includes(a)),
      [],
    );
  });

  test('when an alert fires, then its runbook link names a section of docs/OPERATIONS.md', () => {
    const doc = read('docs/OPERATIONS.md');
    const anchors = new Set(
      [...doc.matchAll(/^#{2,4} (.+)$/gm)].map((m) =>
        m[1]!
          .trim()
          .toLowerCase()
          .replace(/[^a-z0-9 -]/g, '')
          .replace(/ /g, '-'),
      ),
    );
    const rules = yamlFile('deploy/prometheus/alerts.yml');
    for (const rule of rules.groups.flatMap((g: any) => g.rules)) {
      const link = rule.annotations?.runbook as string;
      assert.ok(link?.startsWith('docs/OPERATIONS.md#'), `${rule.alert}: runbook annotation missing`);
      const anchor = link.split('#')[1]!;
      assert.ok(anchors.has(anchor), `${rule.alert}: docs/OPERATIONS.md has no section #${anchor}`);
    }
  });
});
