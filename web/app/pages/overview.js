// Live system view from GET /api/dashboard/overview every 2 s: dependency health, request and
// error rates, job queue depth for everyone; recent failed jobs and every metric series for admins.
// The server gathers /health and /metrics itself: the Ingress does not route those to browsers.
import { useRef } from 'preact/hooks';
import { api } from '../api.js';
import { Alert, ago, Chart, fmt, html, usePoll, when } from '../ui.js';

const POLL_MS = 2000;
const WINDOW = 90; // samples kept for the chart: 3 minutes at 2 s

export function OverviewPage() {
  const history = useRef({ t: [], rps: [], eps: [] });

  const live = usePoll(async () => {
    const o = await api('/api/dashboard/overview');
    const r = o.traffic.rates;
    if (r) {
      const h = history.current;
      h.t.push(Date.parse(o.at) / 1000);
      h.rps.push(r.requests);
      h.eps.push(r.errors);
      if (h.t.length > WINDOW) for (const k of ['t', 'rps', 'eps']) h[k].shift();
    }
    return o;
  }, POLL_MS);

  const d = live.data;
  const rates = d?.traffic.rates;
  const h = history.current;
  return html`<h1>Overview</h1>
    <p class="muted" aria-live="off">Live: refreshed every ${POLL_MS / 1000} s${d ? `, last at ${new Date(live.at).toLocaleTimeString('en-GB')}` : ''}.</p>
    <${Alert} error=${live.error} />
    ${
      d &&
      html`
      <section aria-labelledby="health-h">
        <h2 id="health-h">Health: <span class=${`badge ${d.health.healthy ? 'ok' : 'bad'}`}>${d.health.status}</span></h2>
        <ul class="tiles" data-testid="health-checks">
          ${Object.entries(d.health.checks ?? {}).map(
            ([name, c]) => html`<li class=${`tile ${c.status === 'ok' ? 'ok' : 'bad'}`}>
              <strong>${name}</strong>
              <span>${c.status === 'ok' ? 'ok' : 'failing'} · ${c.latencyMs} ms</span>
              ${c.error && html`<small>${c.error}</small>`}
            </li>`,
          )}
        </ul>
        <p class="muted">Version ${d.health.version} · up ${fmt(d.health.uptime)} s</p>
      </section>
      <section aria-labelledby="traffic-h">
        <h2 id="traffic-h">Traffic</h2>
        <dl class="stats">
          <div><dt>Requests / s</dt><dd data-testid="rps">${rates ? fmt(rates.requests, 1) : '…'}</dd></div>
          <div><dt>5xx errors / s</dt><dd data-testid="eps">${rates ? fmt(rates.errors, 2) : '…'}</dd></div>
          <div><dt>4xx / s</dt><dd>${rates ? fmt(rates.clientErrors, 2) : '…'}</dd></div>
          <div><dt>Requests served</dt><dd>${fmt(d.traffic.requests)}</dd></div>
          <div><dt>Job queue depth</dt><dd data-testid="queue-depth">${fmt(d.queue.depth)}</dd></div>
          <div><dt>Failed jobs</dt><dd data-testid="failed-jobs">${fmt(d.queue.failed)}</dd></div>
        </dl>
        <p class="muted">Rates over the last ${d.traffic.windowSeconds} s of the API process that answered.</p>
        <${Chart} title="Requests and 5xx errors per second (API routes)" yLabel="per s"
          series=${[{ label: 'requests/s' }, { label: '5xx/s' }]}
          data=${[h.t.slice(), h.rps.slice(), h.eps.slice()]} />
      </section>
      ${
        d.failedJobs &&
        html`<section aria-labelledby="failed-h">
        <h2 id="failed-h">Recent failed jobs</h2>
        ${
          d.failedJobs.length === 0
            ? html`<p class="muted">No failed jobs.</p>`
            : html`<div class="scroll"><table>
              <thead><tr><th scope="col">Job</th><th scope="col">Task</th><th scope="col">Attempts</th><th scope="col">Error</th><th scope="col">Created</th></tr></thead>
              <tbody>${d.failedJobs.map(
                (j) => html`<tr><td>${j.id}</td><td>${j.task}</td><td>${j.attempts}/${j.maxAttempts}</td>
                  <td class="wrap">${j.lastError}</td><td title=${when(j.createdAt)}>${ago(j.createdAt)}</td></tr>`,
              )}</tbody></table></div>`
        }
      </section>`
      }
      ${d.metrics && html`<${ModuleMetrics} rows=${d.metrics} />`}
    `
    }`;
}

function ModuleMetrics({ rows }) {
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
