// API keys for scripts and services: list, create (the key is shown once), revoke. Admin only.
import { useState } from 'preact/hooks';
import { api, del, post } from '../api.js';
import { Alert, ago, Field, focusSoon, html, refocus, useAction, usePoll, when } from '../ui.js';

const SCOPES = ['admin', 'codes', 'events', 'books', 'sender'];

export function KeysPage() {
  const keys = usePoll(() => api('/api/keys'), 0);
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState(['events']);
  const [created, setCreated] = useState(null);
  const create = useAction();
  const revoke = useAction();

  const submit = (e) => {
    e.preventDefault();
    create.run(async () => {
      if (scopes.length === 0) throw new Error('choose at least one scope');
      setCreated(await post('/api/keys', { name, scopes }));
      setName('');
      keys.refresh();
    });
  };
  const toggle = (s) => {
    setScopes((cur) => (cur.includes(s) ? cur.filter((x) => x !== s) : [...cur, s]));
    create.setError(undefined); // "choose at least one scope" no longer applies once one is ticked
  };
  const doRevoke = (k, cell) => {
    if (!confirm(`Revoke the key “${k.name}” (${k.prefix}…)? Programs using it stop working within seconds.`))
      return;
    revoke.run(async () => {
      await del(`/api/keys/${k.id}`);
      await keys.refresh();
      refocus(cell); // the Revoke button is gone: focus its row, not the page's top
    });
  };
  const done = () => {
    setCreated(null);
    focusSoon('key-name');
  };

  return html`<h1>API keys</h1>
    <p class="muted">Programs call the API with <code>${'Authorization: Bearer <key>'}</code>. Keys are stored hashed: a new key is shown once.</p>
    <section aria-labelledby="newkey-h" class="card">
      <h2 id="newkey-h">Create a key</h2>
      <form onSubmit=${submit} class="row">
        <${Field} id="key-name" label="Name" required maxlength="100" value=${name} onInput=${(e) => setName(e.currentTarget.value)} />
        <fieldset class="scopes">
          <legend>Scopes</legend>
          ${SCOPES.map(
            (s) => html`<label class="check"><input type="checkbox" name="scope" value=${s}
              checked=${scopes.includes(s)} onChange=${() => toggle(s)} /> ${s}</label>`,
          )}
        </fieldset>
        <button type="submit" disabled=${create.busy}>Create key</button>
      </form>
      <${Alert} error=${create.error} />
      ${
        created &&
        html`<div class="secret" role="status">
          <p>Key “${created.name}” created. Copy it now: it will not be shown again.</p>
          <p><code data-testid="new-key">${created.key}</code>
            <button type="button" onClick=${() => navigator.clipboard?.writeText(created.key)}>Copy</button>
            <button type="button" class="link" onClick=${done}>Done</button></p>
        </div>`
      }
    </section>
    <section aria-labelledby="keys-h">
      <h2 id="keys-h">Keys</h2>
      <${Alert} error=${keys.error || revoke.error} />
      ${
        keys.data &&
        html`<div class="scroll"><table>
        <thead><tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Scopes</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Status</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
        <tbody>${keys.data.keys.map(
          (k) => html`<tr key=${k.id} class=${k.revokedAt ? 'revoked' : ''} tabindex="-1">
            <td>${k.name}</td><td><code>${k.prefix}…</code></td><td>${k.scopes.join(', ')}</td>
            <td title=${when(k.createdAt)}>${ago(k.createdAt)}</td><td>${k.lastUsedAt ? ago(k.lastUsedAt) : 'never'}</td>
            <td>${k.revokedAt ? `revoked ${ago(k.revokedAt)}` : 'active'}</td>
            <td>${
              !k.revokedAt &&
              html`<button type="button" class="danger" disabled=${revoke.busy}
              aria-label=${`Revoke ${k.name}`} onClick=${(e) => doRevoke(k, e.currentTarget.closest('td'))}>Revoke</button>`
            }</td>
          </tr>`,
        )}</tbody></table></div>`
      }
    </section>`;
}
