// Sender (seed 001): batches with live progress bars and a send-rate chart; a new batch from a CSV
// with a server-rendered template preview for a sample recipient; pause, resume, cancel.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api, post } from '../api.js';
import {
  Alert,
  Chart,
  Field,
  fmt,
  html,
  Notice,
  Pager,
  Progress,
  refocus,
  useAction,
  useIdempotencyKey,
  usePages,
  usePoll,
  when,
} from '../ui.js';

const POLL_MS = 1000;
const WINDOW = 120;
const STATE_BADGE = {
  draft: 'idle',
  queued: 'idle',
  sending: 'ok',
  paused: 'warn',
  completed: 'ok',
  cancelled: 'idle',
  failed: 'bad',
};

export function SenderPage() {
  const last = useRef(null);
  const history = useRef({ t: [], rate: [] });
  const pages = usePages();
  const list = usePoll(
    () => api(`/api/batches?limit=50${pages.cursor ? `&cursor=${pages.cursor}` : ''}`),
    POLL_MS,
    [pages.cursor],
  );
  // From the answers usePoll kept (not those it dropped as overtaken), on the first page only.
  useEffect(() => {
    if (list.data && pages.cursor === undefined) recordRate(list.data);
  }, [list.at]);
  /** Send rate = growth of sent + failed across the newest batches between two polls. */
  function recordRate(r) {
    const now = Date.now() / 1000;
    const done = r.batches.reduce((s, b) => s + b.progress.sent + b.progress.failed, 0);
    if (last.current) {
      const h = history.current;
      h.t.push(now);
      h.rate.push(Math.max(0, (done - last.current.done) / Math.max(0.001, now - last.current.at)));
      if (h.t.length > WINDOW) {
        h.t.shift();
        h.rate.shift();
      }
    }
    last.current = { at: now, done };
  }
  const batches = list.data?.batches ?? [];
  const h = history.current;

  return html`<h1>Sender</h1>
    <${Alert} error=${list.error} />
    <${Chart} title="Messages sent per second (all your batches)" yLabel="msg/s"
      series=${[{ label: 'messages/s' }]} data=${[h.t.slice(), h.rate.slice()]} />
    <section aria-labelledby="batches-h">
      <h2 id="batches-h">Batches</h2>
      ${list.data && batches.length === 0 && html`<p class="muted">No batches yet: create one below.</p>`}
      <div class="scroll"><table>
        <thead><tr><th scope="col">Batch</th><th scope="col">State</th><th scope="col">Progress</th>
          <th scope="col" class="num">Sent</th><th scope="col" class="num">Failed</th><th scope="col" class="num">Rate</th>
          <th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
        <tbody>${batches.map((b) => html`<${BatchRow} key=${b.id} b=${b} onChange=${list.refresh} />`)}</tbody>
      </table></div>
      <${Pager} pages=${pages} next=${list.data?.next} what="batches" />
    </section>
    <${NewBatch} onCreated=${list.refresh} />`;
}

function BatchRow({ b, onChange }) {
  const act = useAction();
  const name = b.name || b.id.slice(0, 8);
  const p = b.progress;
  const actions = useRef(null);
  // The list is read again after a refusal too: the 409 usually means another tab or user moved
  // the batch on, and the row should show where it is now.
  const call = (verb) =>
    act
      .run(async () => {
        try {
          await post(`/api/batches/${b.id}/${verb}`);
        } finally {
          await onChange();
        }
      })
      .then(() => refocus(actions.current));
  // An error stays while the row shows the state it was about, and is dropped once the batch moves
  // on (only hidden, it came back when the batch returned to that state).
  const errorState = useRef(undefined);
  useEffect(() => {
    errorState.current = act.error ? b.state : undefined;
  }, [act.error]);
  useEffect(() => {
    if (act.error && errorState.current !== undefined && errorState.current !== b.state)
      act.setError(undefined);
  }, [b.state]);
  const live = ['draft', 'queued', 'sending', 'paused'].includes(b.state);
  // Done is what was sent, failed or suppressed: cancelled recipients were never tried, so a batch
  // cancelled early does not read as 100%.
  const done = p.total - p.pending - p.cancelled;
  return html`<tr data-testid="batch-row" tabindex="-1">
    <td><strong>${name}</strong><br /><small class="muted">${b.channel} · ${when(b.createdAt)}</small></td>
    <td><span class=${`badge ${STATE_BADGE[b.state] ?? 'idle'}`}>${b.state}</span>
      ${b.error && html`<br /><small class="bad-text">${b.error}</small>`}</td>
    <td><${Progress} label=${`Progress of ${name}`} done=${done} total=${p.total} /></td>
    <td class="num">${fmt(p.sent)}</td><td class="num">${fmt(p.failed)}</td><td class="num">${fmt(p.rate, 1)}/s</td>
    <td><div class="actions" ref=${actions}>
      ${
        b.state === 'draft'
          ? html`<button type="button" aria-label=${`Send ${name}`} disabled=${act.busy || p.total === 0}
              title=${p.total === 0 ? 'Add recipients before sending' : undefined} onClick=${() => call('send')}>Send</button>`
          : null
      }
      ${
        b.state === 'sending' || b.state === 'queued'
          ? html`<button type="button" class="secondary" aria-label=${`Pause ${name}`} disabled=${act.busy} onClick=${() => call('pause')}>Pause</button>`
          : null
      }
      ${
        b.state === 'paused'
          ? html`<button type="button" aria-label=${`Resume ${name}`} disabled=${act.busy} onClick=${() => call('resume')}>Resume</button>`
          : null
      }
      ${
        live
          ? html`<button type="button" class="danger" aria-label=${`Cancel ${name}`} disabled=${act.busy} onClick=${() => {
              if (confirm(`Cancel “${name}”? Messages not yet sent will not be sent.`)) call('cancel');
            }}>Cancel</button>`
          : null
      }
    </div><${Alert} error=${act.error} /></td>
  </tr>`;
}

/** RFC 4180-ish: quoted fields with "" escapes; enough to show one sample row. */
export function parseCsv(text, maxRows = 2) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length && rows.length < maxRows; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      if (row.some((f) => f !== '')) rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if ((field !== '' || row.length) && rows.length < maxRows) rows.push([...row, field]);
  return rows;
}

function sampleRecipient(csv) {
  const [header, first] = parseCsv(csv, 2);
  if (!header || !first) return null;
  const cols = header.map((h) => h.trim());
  const rec = Object.fromEntries(cols.map((c, i) => [c, first[i] ?? '']));
  const address = rec.address ?? rec.email;
  if (!address) return null;
  const { address: _a, ...variables } = rec;
  return { address, variables };
}

const SAMPLE_CSV = 'email,name\nada@example.com,Ada\ngrace@example.com,Grace\n';

function NewBatch({ onCreated }) {
  const configs = usePoll(() => api('/api/send-configs'), 0);
  const [f, setF] = useState({
    name: '',
    via: 'mock',
    rate: '',
    subject: 'Hello {{name}}',
    text: 'Hi {{name}}, this message went to {{email}}.',
    html: '',
    csv: SAMPLE_CSV,
  });
  const [preview, setPreview] = useState(null);
  const [created, setCreated] = useState('');
  const pv = useAction();
  const create = useAction();
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.value });
  const template = () => {
    const t = { subject: f.subject };
    if (f.text) t.text = f.text;
    if (f.html) t.html = f.html;
    return t;
  };
  const channel = () => (f.via === 'mock' ? { channel: 'mock' } : { sendConfigId: f.via });

  // The alert shows the last action's error only: a preview's error stayed beside a later create's
  // success, and hid a create's own error.
  const doPreview = () =>
    pv.run(async () => {
      create.setError(undefined);
      const sample = sampleRecipient(f.csv);
      if (!sample)
        throw new Error('the CSV needs a header row with an "email" (or "address") column and one recipient');
      const r = await post('/api/batches', {
        ...channel(),
        template: template(),
        recipients: [sample],
        dryRun: true,
      });
      if (r.errors?.length) throw new Error(r.errors[0].error);
      setPreview(r.preview[0]);
    });
  const readFile = async (e) => {
    const file = e.currentTarget.files[0];
    if (file) setF({ ...f, csv: await file.text() });
  };
  // The same form clicked again after a failure reuses its key: the server answers with the batch
  // it may already have made, and the steps already done are skipped.
  const retryKey = useIdempotencyKey();
  const submit = (e) => {
    e.preventDefault();
    setCreated('');
    pv.setError(undefined);
    create.run(async () => {
      // Checked before anything is made: a header-only CSV left an empty draft no one could send.
      if (!sampleRecipient(f.csv))
        throw new Error(
          'the CSV needs a header row with an "email" (or "address") column and at least one recipient row',
        );
      const body = { ...channel(), template: template(), draft: true };
      if (f.name) body.name = f.name;
      if (f.rate) body.ratePerSecond = Number(f.rate);
      const content = JSON.stringify([body, f.csv]);
      let batch = await post('/api/batches', body, {
        headers: { 'idempotency-key': retryKey.keyFor(content) },
      });
      if (batch.state === 'draft' && batch.progress.total === 0) {
        // The upload is one transaction: a draft with recipients has had its upload.
        await api(`/api/batches/${batch.id}/recipients`, {
          method: 'POST',
          body: f.csv,
          headers: { 'content-type': 'text/csv' },
        }).catch(async (err) => {
          // A CSV the server refused (a bad line) will be fixed and sent as a new batch: this empty
          // draft would stay behind in the list, so it is discarded. A network failure keeps it for
          // the retry, which reuses it.
          if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
            await post(`/api/batches/${batch.id}/cancel`).catch(() => {});
            retryKey.settled();
            onCreated();
          }
          throw err;
        });
      }
      if (batch.state === 'draft') batch = await post(`/api/batches/${batch.id}/send`);
      retryKey.settled();
      setCreated(
        `Batch ${f.name || batch.id.slice(0, 8)} queued with ${fmt(batch.progress.total)} recipients.`,
      );
      onCreated();
    });
  };

  return html`<section class="card" aria-labelledby="new-batch-h">
    <h2 id="new-batch-h">New batch</h2>
    <form onSubmit=${submit}>
      <div class="row">
        <${Field} label="Batch name" maxlength="200" value=${f.name} onInput=${set('name')} />
        <${Field} label="Send through">
          <select value=${f.via} onChange=${set('via')}>
            <option value="mock">mock channel (nothing leaves the machine)</option>
            ${(configs.data?.sendConfigs ?? []).map(
              (c) => html`<option value=${c.id}>${c.name} (${c.channel})</option>`,
            )}
          </select>
        <//>
        <${Field} label="Rate limit (messages/s)" type="number" min="1" value=${f.rate} onInput=${set('rate')} />
      </div>
      <div class="grid">
        <div>
          <${Field} label="Subject template" required maxlength="1000" value=${f.subject} onInput=${set('subject')} />
          <${Field} label="Text template" hint="Mustache: {{name}}, {{email}} and any CSV column">
            <textarea value=${f.text} onInput=${set('text')}></textarea>
          <//>
          <${Field} label="HTML template (optional)">
            <textarea value=${f.html} onInput=${set('html')}></textarea>
          <//>
        </div>
        <div>
          <${Field} label="Recipients CSV" hint="header row with email (or address); other columns become variables">
            <textarea value=${f.csv} onInput=${set('csv')} spellcheck="false"></textarea>
          <//>
          <${Field} label="…or load a CSV file" type="file" accept=".csv,text/csv" onChange=${readFile} />
        </div>
      </div>
      <div class="actions" style="margin-top:0.75rem">
        <button type="button" class="secondary" disabled=${pv.busy} onClick=${doPreview}>Preview first recipient</button>
        <button type="submit" disabled=${create.busy}>Create and send batch</button>
      </div>
    </form>
    <${Alert} error=${pv.error || create.error} />
    ${
      preview &&
      html`<div aria-live="polite" data-testid="preview">
      <h3>Preview for ${preview.address}</h3>
      <p><strong>Subject:</strong> ${preview.subject}</p>
      ${preview.text && html`<div class="preview">${preview.text}</div>`}
      ${preview.html && html`<details><summary>HTML source</summary><div class="preview">${preview.html}</div></details>`}
    </div>`
    }
    ${created && html`<${Notice}>${created}<//>`}
  </section>`;
}
