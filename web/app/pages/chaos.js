// The failure-mode switch (seed 003's modes), for admins: GET/POST/DELETE /api/admin/chaos.
// Every process picks a change up within about a second.
import { useState } from 'preact/hooks';
import { api, del, post } from '../api.js';
import { Alert, Field, html, useAction, usePoll } from '../ui.js';

const MODES = {
  api: ['none', 'db', 'random_500'],
  worker: ['none', 'crash', 'slow', 'bad_schema'],
  cron: ['none', 'timeout', 'db_fail'],
};
const TARGETS = ['*', 'events', 'codes', 'sender', 'books'];

export function FailureModes({ defaultModule = '*' }) {
  const snap = usePoll(() => api('/api/admin/chaos'), 5000);
  const [module, setModule] = useState(defaultModule);
  // Only the kinds changed in the form are sent: the others keep what is set (the form sent all
  // three, so switching one mode put the module's other modes back to none).
  const [edits, setEdits] = useState({});
  const apply = useAction();
  const effective = (m, kind) =>
    snap.data?.overrides?.[m]?.[kind] ?? snap.data?.overrides?.['*']?.[kind] ?? snap.data?.defaults?.[kind];
  // What is in force for the module (its own override, else the every-module row, else the
  // environment's), so choosing "none" over an inherited mode is a change the form sends.
  const shown = (kind) => edits[kind] ?? effective(module, kind) ?? 'none';
  const changed = Object.keys(edits).length > 0;

  const submit = (e) => {
    e.preventDefault();
    apply.run(async () => {
      await post('/api/admin/chaos', { module, ...edits });
      setEdits({});
      await snap.refresh();
    });
  };
  const clear = () =>
    apply.run(async () => {
      await del('/api/admin/chaos');
      await snap.refresh();
    });
  const active = TARGETS.filter((m) => m !== '*').flatMap((m) =>
    Object.keys(MODES)
      .map((k) => [m, k, effective(m, k)])
      .filter(([, , v]) => v && v !== 'none'),
  );

  return html`<section class="card" aria-labelledby="chaos-h">
    <h2 id="chaos-h">Failure injection</h2>
    <p class="muted">Switch seed 003's failure modes at run time. Every injected failure is logged and counted in <code>tessera_failures_injected_total</code>.</p>
    <p data-testid="chaos-active">${
      active.length === 0
        ? html`<span class="badge ok">no failures injected</span>`
        : active.map(([m, k, v]) => html`<span class="badge bad">${m} ${k}: ${v}</span> `)
    }</p>
    <form class="row" onSubmit=${submit}>
      <${Field} label="Module">
        <select value=${module} onChange=${(e) => {
          setModule(e.currentTarget.value);
          setEdits({});
        }}>
          ${TARGETS.map((m) => html`<option value=${m}>${m === '*' ? 'every module' : m}</option>`)}
        </select>
      <//>
      ${Object.entries(MODES).map(
        ([kind, values]) => html`<${Field} label=${`${kind[0].toUpperCase()}${kind.slice(1)} mode`}>
          <select value=${shown(kind)} onChange=${(e) => setEdits({ ...edits, [kind]: e.currentTarget.value })}>
            ${values.map((v) => html`<option value=${v}>${v}</option>`)}
          </select>
        <//>`,
      )}
      <button type="submit" disabled=${apply.busy || !changed}>Apply</button>
      <button type="button" class="secondary" disabled=${apply.busy} onClick=${clear}>Clear all overrides</button>
    </form>
    <${Alert} error=${apply.error || snap.error} />
  </section>`;
}
