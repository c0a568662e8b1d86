// GET /api/dashboard/overview: what the dashboard's Overview page shows, in one authenticated call.
// The page cannot read /health or /metrics itself: the Ingress keeps those off the internet
// (deploy/kubernetes/ingress.yaml), so this route gathers them on the server.
//   health    every dependency check, as /health answers it
//   traffic   requests, 5xx and 4xx per second over the last ~10 s of this process (each api
//             replica counts its own requests; behind a load balancer they see similar shares)
//   queue     jobs waiting or running (graphile-worker), and how many failed for good
//   failedJobs, metrics   admins only: the last failed jobs with their errors, and every business
//             and kit metric series (the non-admin view leaves out failure details)
import { hasScope } from '../kit/auth.ts';
import { unauthorized } from '../kit/errors.ts';
import { runHealth } from '../kit/health.ts';
import { type App, authenticate } from '../kit/http.ts';
import type { Kit } from '../kit/kit.ts';
import type { HealthCheck } from '../kit/module.ts';

export const OVERVIEW_PATH = '/api/dashboard/overview';
/** Probes, scrapes and this route: left out of the request rate so the dashboard does not count itself. */
const NOT_TRAFFIC = new Set([
  '/metrics',
  '/api/metrics',
  '/heartbeat',
  '/health',
  '/api/health',
  OVERVIEW_PATH,
]);
const WINDOW_MS = 10_000;

interface Totals {
  requests: number;
  errors: number;
  clientErrors: number;
}

/** Request totals of this process from the HTTP histogram's _count series. */
async function trafficTotals(kit: Kit): Promise<Totals> {
  const t: Totals = { requests: 0, errors: 0, clientErrors: 0 };
  for (const v of (await kit.metrics.httpDuration.get()).values) {
    if (!v.metricName?.endsWith('_count') || NOT_TRAFFIC.has(String(v.labels.route))) continue;
    t.requests += v.value;
    const code = Number(v.labels.status_code);
    if (code >= 500) t.errors += v.value;
    else if (code >= 400) t.clientErrors += v.value;
  }
  return t;
}

/**
 * Rates from snapshots taken when the page asks: the oldest snapshot kept is the newest one at
 * least WINDOW_MS old, so a rate covers about the last 10 s whatever the polling rhythm. Snapshots
 * older than two windows are dropped first: after the page was closed an hour, the first rates
 * shown averaged that hour (near zero under load) until the old snapshot aged out.
 */
export class TrafficRates {
  private samples: { at: number; t: Totals }[] = [];

  async sample(kit: Kit, now = Date.now()) {
    const t = await trafficTotals(kit);
    this.samples = this.samples.filter((s) => s.at > now - 2 * WINDOW_MS);
    this.samples.push({ at: now, t });
    while (this.samples.length > 2 && this.samples[1]!.at <= now - WINDOW_MS) this.samples.shift();
    const base = this.samples[0]!;
    const seconds = (now - base.at) / 1000;
    const rate = (k: keyof Totals) => Math.max(0, (t[k] - base.t[k]) / seconds);
    return {
      totals: t,
      rates:
        seconds >= 0.5
          ? { requests: rate('requests'), errors: rate('errors'), clientErrors: rate('clientErrors') }
          : null,
      // Two decimals: the rates are per this window, so a client can turn them back into counts.
      windowSeconds: Math.round(seconds * 100) / 100,
    };
  }
}

/** Business and kit metric series (not process, runtime or the HTTP histogram), one row each. */
async function businessSeries(kit: Kit) {
  const rows: { name: string; labels: Record<string, string | number>; value: number }[] = [];
  for (const m of await kit.metrics.registry.getMetricsAsJSON()) {
    if (/^(process_|nodejs_|http_request_duration)/.test(m.name)) continue;
    for (const v of m.values as {
      metricName?: string;
      labels: Record<string, string | number>;
      value: number;
    }[]) {
      const name = v.metricName ?? m.name;
      if (/_(bucket|sum|created)$/.test(name) || Number.isNaN(v.value)) continue;
      rows.push({ name, labels: v.labels, value: v.value });
    }
  }
  return rows;
}

export function registerOverview(app: App, kit: Kit, checks: HealthCheck[]): void {
  const traffic = new TrafficRates();
  app.register(async (scoped: App) => {
    scoped.addHook('onRequest', async (req) => {
      const principal = await authenticate(kit, req);
      if (!principal) throw unauthorized('sign in, or send Authorization: Bearer <api key>');
      req.principal = principal;
    });
    scoped.get(OVERVIEW_PATH, { schema: { tags: ['dashboard'] } }, async (req, reply) => {
      reply.header('cache-control', 'no-store');
      const admin = hasScope(req.principal!, 'admin');
      const [health, t, depth, failedCount, failedJobs, metrics] = await Promise.all([
        runHealth(kit, checks),
        traffic.sample(kit),
        kit.jobs.depth(),
        kit.jobs.failedCount(),
        admin ? kit.jobs.list('failed', 10) : undefined,
        admin ? businessSeries(kit) : undefined,
      ]);
      return {
        at: new Date().toISOString(),
        health: { healthy: health.healthy, ...health.body },
        traffic: { ...t.totals, rates: t.rates, windowSeconds: t.windowSeconds },
        queue: { depth, failed: failedCount },
        ...(admin ? { failedJobs, metrics } : {}),
      };
    });
  });
}
