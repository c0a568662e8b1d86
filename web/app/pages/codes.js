// Codes (seeds 000, 004): campaigns with inventory bars, create a campaign, generate codes (a large
// count runs as a job whose progress comes from GET /api/jobs/:jobId), import a file, export CSV.
import { useEffect, useState } from 'preact/hooks';
import { api, post } from '../api.js';
import {
  Alert,
  Field,
  fmt,
  html,
  Notice,
  Pager,
  Progress,
  StackBar,
  useAction,
  usePages,
  usePoll,
  when,
} from '../ui.js';

const PAGE = 50;

export function CodesPage() {
  const pages = usePages();
  const list = usePoll(
    () =>
      api(`/api/campaigns?limit=${PAGE}${pages.cursor ? `&after=${encodeURIComponent(pages.cursor)}` : ''}`),
    2000,
    [pages.cursor],
  );
  const campaigns = list.data?.campaigns ?? [];
  return html`<h1>Codes</h1>
    <${Alert} error=${list.error} />
    <section aria-labelledby="campaigns-h">
      <h2 id="campaigns-h">Campaigns</h2>
      ${list.data && campaigns.length === 0 && html`<p class="muted">No campaigns yet: create one below.</p>`}
      <div class="grid">${campaigns.map((c) => html`<${Campaign} key=${c.id} c=${c} onChange=${list.refresh} />`)}</div>
      <${Pager} pages=${pages} next=${list.data?.next} what="campaigns" />
    </section>
    <${CreateCampaign} onCreated=${list.refresh} />`;
}

function Campaign({ c, onChange }) {
  const inv = c.inventory;
  return html`<article class="card" aria-labelledby=${`c-${c.id}`} data-testid=${`campaign-${c.id}`}>
    <h3 id=${`c-${c.id}`}>${c.name} <small class="muted">${c.id}</small></h3>
    <p class="muted">${c.format.prefix}${'•'.repeat(Math.min(c.format.length, 12))} · ${c.format.preset} alphabet ·
      ${fmt(inv.total)} codes · created ${when(c.createdAt)}</p>
    <${StackBar} label=${`Inventory of ${c.name}`} parts=${[
      { label: 'available', value: inv.available, cls: 'available' },
      { label: 'reserved', value: inv.reserved, cls: 'reserved' },
      { label: 'assigned', value: inv.assigned, cls: 'assigned' },
    ]} />
    <${Generate} c=${c} onChange=${onChange} />
    <${Import} c=${c} onChange=${onChange} />
    <p><a href=${`/api/campaigns/${encodeURIComponent(c.id)}/codes.csv`} download>Export ${c.name} codes as CSV</a></p>
  </article>`;
}

function Generate({ c, onChange }) {
  const [count, setCount] = useState('1000');
  // {jobId, total} while a job runs, kept for the tab's session: leaving the page and coming back
  // (or a reload) lost the bar and offered Generate again, and a second click doubled the codes.
  const [job, setJobState] = useState(() => runningJob.get(c.id));
  const setJob = (j) => {
    runningJob.set(c.id, j);
    setJobState(j);
  };
  const [result, setResult] = useState('');
  const gen = useAction();
  const submit = (e) => {
    e.preventDefault();
    setResult('');
    gen.run(async () => {
      const r = await post(`/api/campaigns/${encodeURIComponent(c.id)}/codes`, { count: Number(count) });
      if (r.jobId) setJob({ jobId: r.jobId, total: r.total });
      else {
        setResult(`Generated ${fmt(r.generated)} codes.`);
        onChange();
      }
    });
  };
  return html`<form class="row" onSubmit=${submit} aria-label=${`Generate codes for ${c.name}`}>
      <${Field} label="Codes to generate" type="number" min="1" step="1" required value=${count}
        onInput=${(e) => setCount(e.currentTarget.value)} />
      <button type="submit" disabled=${gen.busy || Boolean(job)}>Generate</button>
    </form>
    ${
      job &&
      html`<${JobProgress} job=${job} label=${`Generating codes for ${c.name}`} onDone=${(j) => {
        setJob(null);
        if (j.state === 'unknown') return;
        setResult(
          j.state === 'completed'
            ? `Generated ${fmt(j.total)} codes.`
            : j.state === 'cancelled'
              ? 'Generation cancelled: the parts it had committed stay in the campaign.'
              : `Generation ${j.state}: ${j.error ?? ''}`,
        );
        onChange();
      }} />`
    }
    ${result && html`<${Notice}>${result}<//>`}
    <${Alert} error=${gen.error} />`;
}

/** The generation job a campaign has running, per browser tab (sessionStorage). */
const runningJob = {
  key: (campaignId) => `tessera.generating.${campaignId}`,
  get(campaignId) {
    try {
      return JSON.parse(sessionStorage.getItem(this.key(campaignId)) ?? 'null');
    } catch {
      return null;
    }
  },
  set(campaignId, job) {
    try {
      if (job) sessionStorage.setItem(this.key(campaignId), JSON.stringify(job));
      else sessionStorage.removeItem(this.key(campaignId));
    } catch {
      // Storage refused (a private window's quota): the page still works, it only forgets sooner.
    }
  },
};

/** Polls a tracked job until it completes, fails or is cancelled (DELETE /api/jobs/:jobId, the CLI's Ctrl-C). */
export function JobProgress({ job, label, onDone }) {
  const st = usePoll(() => api(`/api/jobs/${job.jobId}`), 500, [job.jobId]);
  const d = st.data;
  useEffect(() => {
    if (d && ['completed', 'failed', 'cancelled'].includes(d.state)) onDone(d);
  }, [d?.state]);
  // A job remembered from earlier that the server no longer knows (another database): forget it.
  useEffect(() => {
    if (st.error?.status === 404) onDone({ state: 'unknown' });
  }, [st.error]);
  return html`<div data-testid="job-progress">
    <${Progress} label=${label} done=${d?.done ?? 0} total=${d?.total ?? job.total} />
    <small class="muted">${d?.state ?? 'queued'}</small>
    <${Alert} error=${st.error} />
  </div>`;
}

function Import({ c, onChange }) {
  const [result, setResult] = useState(null);
  const imp = useAction();
  const submit = (e) => {
    e.preventDefault();
    const file = e.currentTarget.elements.file.files[0];
    if (!file) return imp.setError(new Error('choose a file first'));
    imp.run(async () => {
      const isJson = file.name.endsWith('.json') || file.type === 'application/json';
      setResult(
        await api(`/api/campaigns/${encodeURIComponent(c.id)}/codes/import`, {
          method: 'POST',
          body: file,
          headers: { 'content-type': isJson ? 'application/json' : 'text/csv' },
        }),
      );
      e.target.reset();
      onChange();
    });
  };
  return html`<form class="row" onSubmit=${submit} aria-label=${`Import codes into ${c.name}`}>
      <${Field} label="Import codes (CSV first column, or a JSON list)" type="file" name="file" accept=".csv,.txt,.json,text/csv,application/json"
        onChange=${() => imp.setError(undefined)} />
      <button type="submit" class="secondary" disabled=${imp.busy}>Import</button>
    </form>
    ${
      result &&
      html`<${Notice}>Imported: ${fmt(result.inserted)} new, ${fmt(result.duplicate)} duplicate, ${fmt(result.invalid)} invalid${
        result.invalidSamples?.length ? ` (e.g. ${result.invalidSamples.slice(0, 3).join(', ')})` : ''
      }.<//>`
    }
    <${Alert} error=${imp.error} />`;
}

function CreateCampaign({ onCreated }) {
  const [f, setF] = useState({ id: '', name: '', length: '8', alphabet: 'safe', prefix: '', ttl: '' });
  const [made, setMade] = useState('');
  const create = useAction();
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.value });
  const submit = (e) => {
    e.preventDefault();
    setMade('');
    create.run(async () => {
      const body = { id: f.id, name: f.name, format: { length: Number(f.length), alphabet: f.alphabet } };
      if (f.prefix) body.format.prefix = f.prefix;
      if (f.ttl) body.reservationTtlSeconds = Number(f.ttl);
      const c = await post('/api/campaigns', body);
      // Campaigns are listed by id, so the new one may be on another page: say it was made.
      setMade(`Campaign ${c.name} (${c.id}) created: ${fmt(c.capacity)} possible codes.`);
      setF({ ...f, id: '', name: '' });
      onCreated();
    });
  };
  return html`<section class="card" aria-labelledby="new-campaign-h">
    <h2 id="new-campaign-h">Create a campaign</h2>
    <form class="row" onSubmit=${submit}>
      <${Field} label="Campaign id" required pattern="[A-Za-z0-9][A-Za-z0-9_.:\\-]*" maxlength="200"
        hint="letters, digits and _ . : -" value=${f.id} onInput=${set('id')} />
      <${Field} label="Campaign name" required maxlength="200" value=${f.name} onInput=${set('name')} />
      <${Field} label="Code length" type="number" min="4" max="32" required value=${f.length} onInput=${set('length')} />
      <${Field} label="Alphabet" hint="alphanumeric, safe, numeric, or the characters" required value=${f.alphabet}
        list="alphabets" onInput=${set('alphabet')} />
      <datalist id="alphabets"><option value="safe" /><option value="alphanumeric" /><option value="numeric" /></datalist>
      <${Field} label="Prefix" maxlength="32" value=${f.prefix} onInput=${set('prefix')} />
      <${Field} label="Reservation TTL (s)" type="number" min="1" value=${f.ttl} onInput=${set('ttl')} />
      <button type="submit" disabled=${create.busy}>Create campaign</button>
    </form>
    ${made && html`<${Notice}>${made}<//>`}
    <${Alert} error=${create.error} />
  </section>`;
}
