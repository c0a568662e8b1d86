// Live system view: dependency health, request and error rates from /metrics (parsed here),
// queue depth and recent failed jobs (admin), every 2 s.
import { useRef } from 'preact/hooks';
import { api, parseMetrics } from '../api.js';
import { Alert, ago, Chart, fmt, html, usePoll, when } from '../ui.js';

const POLL_MS = 2000;
const WINDOW = 90; // samples kept for the chart: 3 minutes at 2 s
/** Probe and scrape routes: left out of the request rate so the dashboard does not count itself. */
const OPS_ROUTES = new Set(['/metrics', '/api/metrics', '/heartbeat', '/health', '/api/health']);

function totals(samples) {
  let requests = 0;
  let errors = 0;
  let clientErrors = 0;
  for (const s of samples) {
    if (s.name !== 'http_request_duration_seconds_count' || OPS_ROUTES.has(s.labels.route)) continue;
    requests += s.value;
    const code = Number(s.labels.status_code);
    if (code >= 500) errors += s.value;
    else if (code >= 400) clientErrors += s.value;
  }
  return { requests, errors, clientErrors };
}

/** Module business counters and gauges (tessera_* and module prefixes), one row per series. */
function businessSeries(samples) {
  return samples.filter(
    (s) =>
      !s.name.startsWith('process_') &&
      !s.name.startsWith('nodejs_') &&
      !s.name.startsWith('http_request_duration') &&
      !s.name.endsWith('_bucket') &&
      !s.name.endsWith('_sum') &&
      !s.name.endsWith('_created'),
  );
}

export function OverviewPage({ isAdmin }) {
  const prev = useRef(null);
  const history = useRef({ t: [], rps: [], eps: [] });

  const live = usePoll(async () => {
    const [healthRes, metricsText, jobs, failed] = await Promise.all([
      fetch('/health', { headers: { accept: 'application/json' } }).then(async (r) => ({
        ok: r.ok,
        body: await r.json(),
      })),
      api('/metrics', { text: true }),
      isAdmin ? api('/api/admin/jobs?limit=1') : Promise.resolve(null),
      isAdmin ? api('/api/admin/jobs?state=failed&limit=10') : Promise.resolve(null),
    ]);
    const samples = parseMetrics(metricsText);
    const now = Date.now() / 1000;
    const t = totals(samples);
    let rates = null;
    if (prev.current) {
      const dt = Math.max(0.001, now - prev.current.at);
      rates = {
        rps: Math.max(0, (t.requests - prev.current.requests) / dt),
        eps: Math.max(0, (t.errors - prev.current.errors) / dt),
        cps: Math.max(0, (t.clientErrors - prev.current.clientErrors) / dt),
      };
      const h = history.current;
      h.t.push(now);
      h.rps.push(rates.rps);
      h.eps.push(rates.eps);
      if (h.t.length > WINDOW) for (const k of ['t', 'rps', 'eps']) h[k].shift();
    }
    prev.current = { at: now, ...t };
    return { health: healthRes, samples, totals: t, rates, jobs, failed };
  }, POLL_MS);

  const d = live.data;
  const h = history.current;
  return html`<h1>Overview</h1>
    <p class="muted" aria-live="off">Live: refreshed every ${POLL_MS / 1000} s${d ? `, last at ${new Date(live.at).toLocaleTimeString('en-GB')}` : ''}.</p>
    <${Alert} error=${live.error} />
    ${
      d &&
      html`
      <section aria-labelledby="health-h">
        <h2 id="health-h">Health: <span class=${`badge ${d.health.ok ? 'ok' : 'bad'}`}>${d.health.body.status}</span></h2>
        <ul class="tiles" data-testid="health-checks">
          ${Object.entries(d.health.body.checks ?? {}).map(
            ([name, c]) => html`<li class=${`tile ${c.status === 'ok' ? 'ok' : 'bad'}`}>
              <strong>${name}</strong>
              <span>${c.status === 'ok' ? 'ok' : 'failing'} · ${c.latencyMs} ms</span>
              ${c.error && html`<small>${c.error}</small>`}
            </li>`,
          )}
        </ul>
        <p class="muted">Version ${d.health.body.version} · up ${fmt(d.health.body.uptime)} s</p>
      </section>
      <section aria-labelledby="traffic-h">
        <h2 id="traffic-h">Traffic</h2>
        <dl class="stats">
          <div><dt>Requests / s</dt><dd data-testid="rps">${d.rates ? fmt(d.rates.rps, 1) : '…'}</dd></div>
          <div><dt>5xx errors / s</dt><dd data-testid="eps">${d.rates ? fmt(d.rates.eps, 2) : '…'}</dd></div>
          <div><dt>4xx / s</dt><dd>${d.rates ? fmt(d.rates.cps, 2) : '…'}</dd></div>
          <div><dt>Requests served</dt><dd>${fmt(d.totals.requests)}</dd></div>
          ${d.jobs && html`<div><dt>Queue depth</dt><dd data-testid="queue-depth">${fmt(d.jobs.depth)}</dd></div>`}
        </dl>
        <${Chart} title="Requests and 5xx errors per second (API routes)" yLabel="per s"
          series=${[{ label: 'requests/s' }, { label: '5xx/s' }]}
          data=${[h.t.slice(), h.rps.slice(), h.eps.slice()]} />
      </section>
      ${
        d.failed &&
        html`<section aria-labelledby="failed-h">
        <h2 id="failed-h">Recent failed jobs</h2>
        ${
          d.failed.jobs.length === 0
            ? html`<p class="muted">No failed jobs.</p>`
            : html`<div class="scroll"><table>
              <thead><tr><th scope="col">Job</th><th scope="col">Task</th><th scope="col">Attempts</th><th scope="col">Error</th><th scope="col">Created</th></tr></thead>
              <tbody>${d.failed.jobs.map(
                (j) => html`<tr><td>${j.id}</td><td>${j.task}</td><td>${j.attempts}/${j.maxAttempts}</td>
                  <td class="wrap">${j.lastError}</td><td title=${when(j.createdAt)}>${ago(j.createdAt)}</td></tr>`,
              )}</tbody></table></div>`
        }
      </section>`
      }
      <${ModuleMetrics} samples=${d.samples} />
    `
    }`;
}

function ModuleMetrics({ samples }) {
  const rows = businessSeries(samples);
  if (rows.length === 0) return null;
  return html`<details class="metrics">
    <summary>All business and kit metrics (${rows.length} series)</summary>
    <div class="scroll"><table>
      <thead><tr><th scope="col">Metric</th><th scope="col">Labels</th><th scope="col" class="num">Value</th></tr></thead>
      <tbody>${rows.map(
        (s) => html`<tr><td>${s.name}</td>
          <td class="wrap">${Object.entries(s.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')}</td>
          <td class="num">${fmt(s.value, 3)}</td></tr>`,
      )}</tbody>
    </table></div>
  </details>`;
}
