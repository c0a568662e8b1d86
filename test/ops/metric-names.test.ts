// Every metric name that a Grafana panel or an alert rule reads exists in a live Tessera's
// /metrics: a dashboard on a misspelt or never-exported metric is an empty graph nobody notices.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { filesIn, liveMetricNames, metricNamesInPromQL, read, yamlFile } from './lib.ts';

/** Series Prometheus itself adds to every target, not served by Tessera. */
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);

function dashboardExprs(file: string): string[] {
  const d = JSON.parse(read(file));
  const exprs: string[] = [];
  for (const p of d.panels ?? []) for (const t of p.targets ?? []) if (t.expr) exprs.push(t.expr);
  for (const v of d.templating?.list ?? []) if (typeof v.query === 'string') exprs.push(v.query);
  return exprs;
}

describe('metric names', () => {
  let live: Set<string>;
  before(async () => {
    live = await liveMetricNames();
  });

  test('when PromQL is parsed, then functions, labels, strings and durations are not taken for metrics', () => {
    assert.deepEqual(
      metricNamesInPromQL(
        'histogram_quantile(0.95, sum by (route, le) (rate(http_request_duration_seconds_bucket{job=~"$job", route!~"/a|/b"}[5m]))) > 1 and on(job) up == 1',
      ).sort(),
      ['http_request_duration_seconds_bucket', 'up'],
    );
    assert.deepEqual(metricNamesInPromQL('label_values(up{job=~"tessera-.*"}, job)'), ['up', 'job']);
  });

  test('when the live /metrics is read, then the kit metrics are there', () => {
    for (const name of [
      'http_request_duration_seconds',
      'tessera_jobs_total',
      'tessera_auth_failures_total',
      'tessera_db_errors_total',
      'nodejs_eventloop_lag_p99_seconds',
      'process_resident_memory_bytes',
    ])
      assert.ok(live.has(name), `${name} missing from /metrics`);
  });

  test('when every dashboard and alert expression is checked, then each metric it reads is served', () => {
    const missing: string[] = [];
    const check = (where: string, expr: string) => {
      for (const name of metricNamesInPromQL(expr)) {
        if (SYNTHETIC.has(name) || live.has(name)) continue;
        // label_values(metric, label): the second argument is a label name.
        if (/label_values\(/.test(expr) && new RegExp(`,\\s*${name}\\s*\\)`).test(expr)) continue;
        missing.push(`${where}: ${name}`);
      }
    };
    const dashboards = filesIn('deploy/grafana/dashboards', '.json');
    assert.ok(dashboards.length >= 5, 'overview + one dashboard per module');
    for (const file of dashboards) for (const expr of dashboardExprs(file)) check(file, expr);
    const rules = yamlFile('deploy/prometheus/alerts.yml');
    for (const rule of rules.groups.flatMap((g: any) => g.rules))
      check(`alerts.yml ${rule.alert}`, rule.expr);
    assert.deepEqual(
      [...new Set(missing)],
      [],
      `metrics read but not served:\n  ${[...new Set(missing)].join('\n  ')}`,
    );
  });
});
