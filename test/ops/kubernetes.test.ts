// deploy/kubernetes, validated offline: every manifest parses, every object validates against the
// Kubernetes OpenAPI schemas (and KEDA's and the Prometheus Operator's CRD schemas) stored in the
// kubernetes-models npm packages, `kubectl kustomize` renders it (when kubectl is installed), and
// the objects say what the issue and seed 004 ask for. No cluster and no download at test time;
// listed in docs/OPERATIONS.md.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../../src/kit/config.ts';
import { routeTable } from '../../src/kit/http.ts';
import { freshDatabase, startPlatform } from '../helpers.ts';
import { DEPLOY, filesIn, needsBinary, read, yamlDocs, yamlFile } from './lib.ts';

const kustomization = yamlFile('deploy/kubernetes/kustomization.yaml');
const objects: any[] = kustomization.resources.flatMap((f: string) =>
  yamlDocs(read(`deploy/kubernetes/${f}`)),
);
const find = (kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata?.name === name);
  assert.ok(o, `${kind}/${name} missing`);
  return o;
};
const ROLES = ['api', 'worker', 'scheduler'] as const;

/**
 * The kubernetes-models class for an apiVersion and kind: Kubernetes' own groups from
 * kubernetes-models, KEDA and the Prometheus Operator from their CRD packages. An object of any
 * other API fails the test, so nothing goes unvalidated.
 */
async function schemaModel(
  apiVersion: string,
  kind: string,
): Promise<new (o: unknown) => { validate(): void }> {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const pkg =
    group === 'keda.sh'
      ? `@kubernetes-models/keda/keda.sh/${version}`
      : group === 'monitoring.coreos.com'
        ? `@kubernetes-models/prometheus-operator/monitoring.coreos.com/${version}`
        : `kubernetes-models/${group ? `${group}/` : ''}${version}`;
  const mod = await import(pkg).catch(() => ({}));
  const Model = (mod as Record<string, unknown>)[kind];
  assert.ok(typeof Model === 'function', `no schema for ${apiVersion} ${kind} (${pkg})`);
  return Model as new (
    o: unknown,
  ) => { validate(): void };
}
const container = (d: any) => d.spec.template.spec.containers[0];
const labelsMatch = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

describe('kubernetes manifests', () => {
  test('when every YAML file in deploy/kubernetes is parsed, then each document has apiVersion, kind and name', () => {
    for (const f of [
      ...filesIn('deploy/kubernetes', '.yaml'),
      ...filesIn('deploy/kubernetes/monitoring', '.yaml'),
    ]) {
      for (const doc of yamlDocs(read(f))) {
        assert.ok(doc.apiVersion && doc.kind, `${f}: apiVersion/kind`);
        if (doc.kind !== 'Kustomization') assert.ok(doc.metadata?.name, `${f}: ${doc.kind} without a name`);
      }
    }
  });

  test('when every object is checked against the Kubernetes and CRD schemas (kubernetes-models), then all are valid, and a broken one is caught', async () => {
    const monitoring = yamlDocs(read('deploy/kubernetes/monitoring/podmonitor.yaml'));
    const all = [...objects, ...monitoring];
    assert.ok(all.length >= 15);
    for (const o of all) {
      const Model = await schemaModel(o.apiVersion, o.kind);
      assert.doesNotThrow(() => new Model(o).validate(), `${o.kind}/${o.metadata.name}`);
    }
    // The validator has teeth: a probe timeout as text and a Deployment without a selector fail.
    const broken = structuredClone(find('Deployment', 'tessera-api'));
    container(broken).readinessProbe.timeoutSeconds = 'five';
    const Deployment = await schemaModel('apps/v1', 'Deployment');
    assert.throws(() => new Deployment(broken).validate(), /timeoutSeconds must be integer/);
    delete broken.spec.selector;
    assert.throws(() => new Deployment(broken).validate(), /selector/);
  });

  test(
    'when kubectl kustomize renders the base, then every resource comes out in the tessera namespace',
    needsBinary('kubectl', 'kubectl (kustomize)'),
    () => {
      const r = spawnSync('kubectl', ['kustomize', `${DEPLOY}/kubernetes`], {
        encoding: 'utf8',
        timeout: 60000,
      });
      assert.equal(r.status, 0, r.stderr);
      const rendered = yamlDocs(r.stdout);
      assert.equal(rendered.length, objects.length);
      for (const o of rendered.filter((x) => x.kind !== 'Namespace'))
        assert.equal(o.metadata.namespace, 'tessera', `${o.kind}/${o.metadata.name}`);
      const images = rendered.filter((o) => o.spec?.template?.spec).map((o) => container(o).image);
      assert.ok(
        images.length === 4 && images.every((i) => i === 'ghcr.io/tessera/tessera:latest'),
        images.join(),
      );
    },
  );

  for (const role of ROLES) {
    test(`when the ${role} Deployment is read, then it runs that role with seed 004's probes, resources and a locked-down container`, () => {
      const d = find('Deployment', `tessera-${role}`);
      const c = container(d);
      assert.deepEqual(c.args, ['start', '--role', role]);
      assert.ok(labelsMatch(d.spec.selector.matchLabels, d.spec.template.metadata.labels));
      assert.equal(d.spec.template.metadata.labels['app.kubernetes.io/component'], role);
      const port = c.ports.find((p: any) => p.name === 'http');
      assert.equal(port.containerPort, 3000);
      const probe = (p: any, path: string) => {
        assert.equal(p.httpGet.path, path);
        assert.equal(p.httpGet.port, 'http');
        assert.equal(p.timeoutSeconds, 5);
        assert.equal(p.periodSeconds, 10);
        assert.equal(p.failureThreshold, 3);
        assert.equal(p.successThreshold, 1);
      };
      probe(c.livenessProbe, '/heartbeat');
      probe(c.readinessProbe, '/health');
      for (const k of ['requests', 'limits'])
        for (const r of ['cpu', 'memory']) assert.ok(c.resources[k][r], `${k}.${r}`);
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      assert.equal(c.securityContext.readOnlyRootFilesystem, true);
      assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
      assert.equal(d.spec.template.spec.securityContext.runAsNonRoot, true);
      assert.ok(
        c.volumeMounts.some((m: any) => m.mountPath === '/tmp'),
        'tsx needs a writable /tmp',
      );
      assert.deepEqual(
        c.envFrom.map((e: any) => e.configMapRef?.name ?? e.secretRef?.name),
        ['tessera-config', 'tessera-secrets'],
      );
      // Drain fits: SHUTDOWN_TIMEOUT_MS plus the preStop sleep end before the kubelet's SIGKILL.
      const cm = find('ConfigMap', 'tessera-config');
      const preStop = Number(c.lifecycle?.preStop?.exec?.command?.[1] ?? 0);
      assert.ok(
        d.spec.template.spec.terminationGracePeriodSeconds >
          preStop + Number(cm.data.SHUTDOWN_TIMEOUT_MS) / 1000,
      );
      assert.equal(d.spec.template.metadata.annotations['prometheus.io/path'], '/metrics');
    });
  }

  test('when the api autoscaler is read, then it scales 3..12 on 25% CPU', () => {
    const h = find('HorizontalPodAutoscaler', 'tessera-api');
    assert.equal(h.spec.scaleTargetRef.name, 'tessera-api');
    assert.equal(h.spec.minReplicas, 3);
    assert.equal(h.spec.maxReplicas, 12);
    assert.deepEqual(h.spec.metrics[0].resource, {
      name: 'cpu',
      target: { type: 'Utilization', averageUtilization: 25 },
    });
    assert.ok(
      !objects.some(
        (o) => o.kind === 'HorizontalPodAutoscaler' && o.spec.scaleTargetRef.name === 'tessera-worker',
      ),
      'KEDA owns the worker HPA',
    );
  });

  test('when KEDA scales the workers, then its PostgreSQL query counts ready jobs in a real migrated database', async () => {
    const so = find('ScaledObject', 'tessera-worker');
    assert.equal(so.spec.scaleTargetRef.name, 'tessera-worker');
    const trigger = so.spec.triggers[0];
    assert.equal(trigger.type, 'postgresql');
    const auth = find('TriggerAuthentication', trigger.authenticationRef.name);
    assert.deepEqual(auth.spec.secretTargetRef[0], {
      parameter: 'connection',
      name: 'tessera-secrets',
      key: 'DATABASE_URL',
    });
    const client = new pg.Client({ connectionString: await freshDatabase() });
    await client.connect();
    try {
      const count = async () => Number((await client.query(trigger.metadata.query)).rows[0].count);
      const before = await count();
      await client.query(`SELECT graphile_worker.add_job('ops:probe', '{}'::json)`);
      await client.query(
        `SELECT graphile_worker.add_job('ops:later', '{}'::json, run_at => now() + interval '1 hour')`,
      );
      assert.equal(await count(), before + 1, 'a ready job counts, a future one does not');
    } finally {
      await client.end();
    }
  });

  /** The fewest replicas a role runs: its autoscaler's minimum, or the Deployment's fixed count. */
  const floorReplicas = (role: string) => {
    const hpa = objects.find(
      (o) => o.kind === 'HorizontalPodAutoscaler' && o.spec.scaleTargetRef.name === `tessera-${role}`,
    );
    const keda = objects.find(
      (o) => o.kind === 'ScaledObject' && o.spec.scaleTargetRef.name === `tessera-${role}`,
    );
    return (
      hpa?.spec.minReplicas ??
      keda?.spec.minReplicaCount ??
      find('Deployment', `tessera-${role}`).spec.replicas
    );
  };

  test('when autoscalers own a Deployment, then it sets no replicas, so `kubectl apply -k` never resets their count', () => {
    for (const role of ROLES) {
      const d = find('Deployment', `tessera-${role}`);
      const scaled = objects.some(
        (o) =>
          (o.kind === 'HorizontalPodAutoscaler' || o.kind === 'ScaledObject') &&
          o.spec.scaleTargetRef.name === d.metadata.name,
      );
      if (scaled) assert.equal(d.spec.replicas, undefined, `${d.metadata.name} is autoscaled`);
      else assert.ok(d.spec.replicas >= 2, `${d.metadata.name} has fixed replicas`);
    }
  });

  test('when a node drains, then every role has a PodDisruptionBudget that selects its pods', () => {
    for (const role of ROLES) {
      const pdb = find('PodDisruptionBudget', `tessera-${role}`);
      const d = find('Deployment', `tessera-${role}`);
      assert.ok(labelsMatch(pdb.spec.selector.matchLabels, d.spec.template.metadata.labels));
      if (pdb.spec.minAvailable !== undefined) assert.ok(pdb.spec.minAvailable < floorReplicas(role));
    }
  });

  test('when the migration Job runs, then it runs `tessera migrate` with the same config and secret', () => {
    const j = find('Job', 'tessera-migrate');
    const c = container(j);
    assert.deepEqual(c.args, ['migrate']);
    assert.equal(j.spec.template.spec.restartPolicy, 'Never');
    assert.equal(c.image, container(find('Deployment', 'tessera-api')).image);
  });

  test('when the ConfigMap and example Secret are loaded as Tessera config, then they validate', () => {
    const cm = find('ConfigMap', 'tessera-config');
    const secret = yamlDocs(read('deploy/kubernetes/secret.example.yaml'))[0];
    assert.ok(!kustomization.resources.includes('secret.example.yaml'), 'never apply placeholder secrets');
    // The README's settings table (generated from config.ts), plus TESSERA_CONFIG (the file path).
    const documented = new Set([...read('README.md').matchAll(/^\| `([A-Z_]+)`/gm)].map((m) => m[1]));
    documented.add('TESSERA_CONFIG');
    for (const key of [...Object.keys(cm.data), ...Object.keys(secret.stringData)])
      assert.ok(documented.has(key), `${key} is not a Tessera setting`);
    // Placeholders fail on purpose; real-looking values pass.
    assert.throws(
      () => loadConfig({ ...cm.data, ...secret.stringData }),
      /JWT_SECRET: required in production[\s\S]*WEBHOOK_SECRET: must be whsec_/,
    );
    const config = loadConfig({
      ...cm.data,
      ...secret.stringData,
      JWT_SECRET: 'x'.repeat(40),
      WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    });
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.nodeEnv, 'production');
  });

  test('when the Ingresses are read against the routes Tessera registers, then every API and dashboard route is public and /metrics, admin and probes are not', async () => {
    const ingresses = objects.filter((o) => o.kind === 'Ingress');
    const svc = find('Service', 'tessera-api');
    const paths = ingresses.flatMap((ing) => ing.spec.rules.flatMap((r: any) => r.http.paths));
    for (const p of paths) {
      assert.equal(p.backend.service.name, svc.metadata.name);
      assert.ok(svc.spec.ports.some((sp: any) => sp.name === p.backend.service.port.name));
    }
    const seen = new Set<string>();
    for (const p of paths) {
      assert.ok(!seen.has(p.path), `${p.path} is routed twice (two Ingresses on one host fight over it)`);
      seen.add(p.path);
    }
    // Kubernetes Ingress semantics: Exact matches the path; Prefix matches whole path segments.
    const routedBy = (url: string) =>
      paths.find((p: any) =>
        p.pathType === 'Exact'
          ? url === p.path
          : url === p.path || url.startsWith(`${p.path.replace(/\/$/, '')}/`),
      );
    const routed = (url: string) => routedBy(url) !== undefined;

    // What must stay off the internet: scrapes, probes (the kubelet calls pods directly), admin.
    const privateRoute = (url: string) =>
      ['/metrics', '/api/metrics', '/health', '/api/health', '/heartbeat'].includes(url) ||
      /^\/api\/(admin|keys)(\/|$)/.test(url);
    const p = await startPlatform({ role: 'api' });
    const routes = routeTable(p.app).filter((r) => r.method !== 'HEAD' && r.method !== 'OPTIONS');
    assert.ok(routes.length > 50, `routes registered (${routes.length})`);
    for (const r of routes) {
      const url = r.url.replace(/:[^/]+/g, 'x').replace(/\*/g, 'x') || '/';
      if (privateRoute(r.url))
        assert.ok(!routed(url), `${r.method} ${r.url} must not be reachable from the internet`);
      else assert.ok(routed(url), `${r.method} ${r.url} is registered but the Ingress does not route it`);
    }
    for (const url of ['/api/eventsx', '/metrics/', '/api/keysx', '/api/admin'])
      assert.ok(!routed(url), `${url} must not be routed`);

    // The CSV upload goes through the Ingress without a body limit or request buffering; the rest
    // keeps the 20m limit.
    const upload = routedBy('/api/batches/x/recipients');
    const uploadIngress = ingresses.find((ing) =>
      ing.spec.rules.some((r: any) => r.http.paths.includes(upload)),
    );
    const a = uploadIngress.metadata.annotations;
    assert.equal(a['nginx.ingress.kubernetes.io/proxy-body-size'], '0');
    assert.equal(a['nginx.ingress.kubernetes.io/proxy-request-buffering'], 'off');
    const main = find('Ingress', 'tessera');
    assert.notEqual(uploadIngress, main);
    assert.equal(main.metadata.annotations['nginx.ingress.kubernetes.io/proxy-body-size'], '20m');

    // Unsubscribe links point at the Ingress host, and that host routes them.
    const cm = find('ConfigMap', 'tessera-config');
    const publicUrl = new URL(cm.data.SENDER_PUBLIC_URL);
    for (const ing of ingresses)
      assert.ok(
        ing.spec.rules.some((r: any) => r.host === publicUrl.hostname),
        ing.metadata.name,
      );
    assert.ok(routed('/api/unsubscribe/token'));
  });

  test('when the Prometheus Operator is used, then the PodMonitor selects the pods on the http port', () => {
    const pm = yamlDocs(read('deploy/kubernetes/monitoring/podmonitor.yaml'))[0];
    const d = find('Deployment', 'tessera-api');
    assert.ok(labelsMatch(pm.spec.selector.matchLabels, d.spec.template.metadata.labels));
    assert.equal(pm.spec.podMetricsEndpoints[0].port, 'http');
  });
});
