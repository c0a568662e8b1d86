// Events (seed 003): events over time by action (a line per busiest action), top users, backlog, cron heartbeat age from
// GET /api/analytics every 2 s; a test-event form; the failure-mode switch for admins.
import { useState } from 'preact/hooks';
import { api, post } from '../api.js';
import { Alert, ago, Chart, Field, fmt, html, Notice, useAction, usePoll } from '../ui.js';
import { FailureModes } from './chaos.js';

const RANGES = { minute: 'last hour, per minute', hour: 'last day, per hour', day: 'last 30 days, per day' };

const CHART_ACTIONS = 5;

/**
 * A count object's entries, most first, ties by name. The API sends them ranked, but a JSON object
 * lists integer-like keys first in numeric order, so user "42" outranked "alice" with 500 events.
 */
const ranked = (counts) => Object.entries(counts).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));

/** One line per busiest action (`ranked`), the rest summed as "other". */
function chartLines(series, actions) {
  if (actions.length === 0) return [{ label: 'events', values: series.map((p) => p.count) }];
  const top = actions.slice(0, CHART_ACTIONS).map(([a]) => a);
  const lines = top.map((a) => ({ label: a, values: series.map((p) => p.byAction[a] ?? 0) }));
  if (actions.length > CHART_ACTIONS) {
    const shown = (p) => top.reduce((sum, a) => sum + (p.byAction[a] ?? 0), 0);
    lines.push({ label: 'other', values: series.map((p) => p.count - shown(p)) });
  }
  return lines;
}

export function EventsPage({ isAdmin }) {
  const [bucket, setBucket] = useState('minute');
  const stats = usePoll(() => api(`/api/analytics?bucket=${bucket}&top=10`), 2000, [bucket]);
  const d = stats.data;
  const xs = d ? d.series.map((p) => Date.parse(p.t) / 1000) : [];
  const actions = d ? ranked(d.eventsByAction) : [];
  const lines = d ? chartLines(d.series, actions) : [];
  const maxAction = Math.max(1, ...actions.map(([, n]) => n));
  const hbAge = d?.cron?.ageSeconds;

  return html`<h1>Events</h1>
    <${Alert} error=${stats.error} />
    ${
      d &&
      html`
      <dl class="stats">
        <div><dt>Total events</dt><dd data-testid="total-events">${fmt(d.totalEvents)}</dd></div>
        <div><dt>Unique users</dt><dd>${fmt(d.uniqueUsers)}</dd></div>
        <div><dt>Backlog (unprocessed)</dt><dd data-testid="backlog">${fmt(d.backlog)}</dd></div>
        <div><dt>Cron heartbeat</dt><dd data-testid="heartbeat">
          ${d.cron?.lastHeartbeat ? html`<span class=${hbAge > 180 ? 'bad-text' : ''}>${ago(d.cron.lastHeartbeat)}</span>` : 'never'}
        </dd>${
          d.cron &&
          (d.cron.status === 'failing'
            ? html`<small class="bad-text" title=${d.cron.error}>failing: last tick ${ago(d.cron.failedAt)}</small>`
            : html`<small class="muted">${d.cron.status}</small>`)
        }</div>
      </dl>
      <div class="row-inline">
        <${Field} label="Time range">
          <select value=${bucket} onChange=${(e) => setBucket(e.currentTarget.value)}>
            ${Object.entries(RANGES).map(([b, label]) => html`<option value=${b}>${label}</option>`)}
          </select>
        <//>
      </div>
      <${Chart} title=${`Events over time (${RANGES[bucket]})`} yLabel="events" totalLabel="In range"
        series=${lines.map(({ label }) => ({ label }))} data=${[xs, ...lines.map((l) => l.values)]} />
      <div class="grid">
        <section aria-labelledby="by-action-h">
          <h2 id="by-action-h">By action</h2>
          ${actions.length === 0 && html`<p class="muted">No events yet.</p>`}
          <table data-testid="by-action">
            <thead><tr><th scope="col">Action</th><th scope="col" class="num">Events</th><th scope="col"><span class="sr-only">Share</span></th></tr></thead>
            <tbody>${actions.map(
              ([a, n]) => html`<tr><td>${a}</td><td class="num">${fmt(n)}</td>
                <td style="width:40%"><div class="hbar" style=${`width:${(100 * n) / maxAction}%`}></div></td></tr>`,
            )}</tbody>
          </table>
        </section>
        <section aria-labelledby="top-users-h">
          <h2 id="top-users-h">Top users</h2>
          <table>
            <thead><tr><th scope="col">User</th><th scope="col" class="num">Events</th></tr></thead>
            <tbody>${ranked(d.eventsByUser).map(
              ([u, n]) => html`<tr><td>${u}</td><td class="num">${fmt(n)}</td></tr>`,
            )}</tbody>
          </table>
        </section>
      </div>`
    }
    <${SendEvent} onSent=${stats.refresh} />
    ${isAdmin && html`<${FailureModes} defaultModule="events" />`}`;
}

function SendEvent({ onSent }) {
  const [userId, setUserId] = useState('user_001');
  const [action, setAction] = useState('page_view');
  const [sent, setSent] = useState(0);
  const send = useAction();
  const submit = (e) => {
    e.preventDefault();
    send.run(async () => {
      await post('/api/events', { userId, action });
      setSent((n) => n + 1);
      onSent();
    });
  };
  return html`<section class="card" aria-labelledby="send-event-h">
    <h2 id="send-event-h">Send a test event</h2>
    <form class="row" onSubmit=${submit}>
      <${Field} label="User id" required value=${userId} onInput=${(e) => setUserId(e.currentTarget.value)} />
      <${Field} label="Action" required value=${action} onInput=${(e) => setAction(e.currentTarget.value)} />
      <button type="submit" disabled=${send.busy}>Send event</button>
    </form>
    ${sent > 0 && html`<${Notice}>${sent} event${sent > 1 ? 's' : ''} sent; the worker aggregates them within a second or two.<//>`}
    <${Alert} error=${send.error} />
  </section>`;
}
