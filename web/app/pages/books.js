// Books (seed 002's API at /books, /checkout): a searchable table, add, edit, delete, check out
// and return. Writes carry the version the user saw, so a stale edit is a 409, not a lost update.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, api, del, post, put } from '../api.js';
import {
  Alert,
  Field,
  focusSoon,
  html,
  Notice,
  Pager,
  refocus,
  useAction,
  useIdempotencyKey,
  usePages,
  usePoll,
} from '../ui.js';

const EMPTY = { name: '', author: '', rack_id: '', tags: '' };

export function BooksPage() {
  const [q, setQ] = useState('');
  const [status, setStatus] = useState('');
  const [query, setQuery] = useState({ q: '', status: '' });
  const pages = usePages();
  // Search as the user types, without a request per keystroke; a new search starts at its first page.
  useEffect(() => {
    const t = setTimeout(() => {
      setQuery({ q: q.trim(), status });
      pages.first();
    }, 250);
    return () => clearTimeout(t);
  }, [q, status]);

  const list = usePoll(
    () => {
      const params = new URLSearchParams({ limit: '100' });
      if (query.q) params.set('q', query.q);
      if (query.status) params.set('status', query.status);
      if (pages.cursor) params.set('cursor', pages.cursor);
      return api(`/books?${params}`);
    },
    5000,
    [query.q, query.status, pages.cursor],
  );
  const [editing, setEditing] = useState(null); // a book, or null for "add"
  const [form, setForm] = useState(EMPTY);
  const [lending, setLending] = useState(null); // id of the book being checked out
  const [borrower, setBorrower] = useState('');
  const [message, setMessage] = useState('');
  const save = useAction();
  const act = useAction();
  const addKey = useIdempotencyKey();

  const edit = (b) => {
    setEditing(b);
    setForm({ name: b.info.name, author: b.info.author, rack_id: b.rack_id, tags: b.tags.join(', ') });
    document.getElementById('book-form-h')?.scrollIntoView();
    setTimeout(() => document.querySelector('#book-form input')?.focus(), 0);
  };
  const cancelEdit = () => {
    setEditing(null);
    setForm(EMPTY);
  };
  const submit = (e) => {
    e.preventDefault();
    save.run(async () => {
      const tags = form.tags
        .split(',')
        .map((t) => t.trim())
        .filter(Boolean);
      const info = { name: form.name, author: form.author };
      if (editing) {
        await put(`/books/${encodeURIComponent(editing.id)}`, {
          info,
          rack_id: form.rack_id,
          tags,
          version: editing.version,
        }).catch((err) => reloadIfChanged(err, editing, edit));
        setMessage(`Saved “${form.name}”.`);
      } else {
        // A click again after a failure or a timeout answers the book the first click may have made.
        const key = addKey.keyFor(JSON.stringify([info, form.rack_id, tags]));
        await post('/books', { info, rack_id: form.rack_id, tags }, { headers: { 'idempotency-key': key } });
        addKey.settled();
        // Unless every book is listed, the new one may be on another page or outside the search.
        const allListed = pages.page === 1 && !list.data?.nextCursor && !query.q && !query.status;
        setMessage(`Added “${form.name}”${allListed ? '' : ': search for its title to see it in the list'}.`);
      }
      cancelEdit();
      list.refresh();
    });
  };
  // `cell`: the row's actions, whose focused button the change replaces (see refocus).
  const checkout = (b, cell) =>
    act.run(async () => {
      const info = { status: 'checked-out' };
      if (borrower.trim()) info.borrower = borrower.trim();
      await post('/checkout', { id: b.id, info });
      setLending(null);
      setBorrower('');
      setMessage(`Checked out “${b.info.name}”.`);
      await list.refresh();
      refocus(cell);
    });
  const giveBack = (b, cell) =>
    act.run(async () => {
      await post('/checkout', { id: b.id, info: { status: 'available' } });
      setMessage(`Returned “${b.info.name}”.`);
      await list.refresh();
      refocus(cell);
    });
  const remove = (b) => {
    if (!confirm(`Delete “${b.info.name}”?`)) return;
    act.run(async () => {
      await del(`/books/${encodeURIComponent(b.id)}`, { headers: { 'if-match': `"${b.version}"` } }).catch(
        (err) => reloadIfChanged(err, b, () => list.refresh()),
      );
      setMessage(`Deleted “${b.info.name}”.`);
      list.refresh();
    });
  };
  const books = list.data?.data ?? [];

  /**
   * A 409 because someone changed the book since this page read it: show the saved book (`then`
   * gets it) and say so in words, instead of the API's "GET it again and retry".
   */
  async function reloadIfChanged(err, b, then) {
    if (!(err instanceof ApiError && err.status === 409 && /changed since you read it/.test(err.message)))
      throw err;
    const fresh = await api(`/books/${encodeURIComponent(b.id)}`);
    then(fresh.data);
    list.refresh();
    throw new Error(
      `“${b.info.name}” was changed by someone else since this page showed it: its saved version is shown now; make your change again.`,
    );
  }

  return html`<h1>Books</h1>
    <form class="row" role="search" onSubmit=${(e) => e.preventDefault()}>
      <${Field} label="Search title or author" type="search" value=${q} onInput=${(e) => setQ(e.currentTarget.value)} />
      <${Field} label="Status">
        <select value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
          <option value="">any</option>
          <option value="available">available</option>
          <option value="checked-out">checked out</option>
        </select>
      <//>
    </form>
    ${message && html`<${Notice}>${message}<//>`}
    <${Alert} error=${list.error || act.error} />
    <div class="scroll"><table>
      <caption class="sr-only">Books</caption>
      <thead><tr><th scope="col">Title</th><th scope="col">Author</th><th scope="col">Rack</th><th scope="col">Tags</th>
        <th scope="col">Status</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>
        ${list.data && books.length === 0 && html`<tr><td colspan="6" class="muted">No books match.</td></tr>`}
        ${books.map(
          (b) => html`<tr key=${b.id}>
            <td>${b.info.name}</td><td>${b.info.author}</td><td>${b.rack_id}</td><td>${b.tags.join(', ')}</td>
            <td><span class=${`badge ${b.info.status === 'available' ? 'ok' : 'warn'}`}>${b.info.status}</span>
              ${b.info.borrower && html` <small>${b.info.borrower}</small>`}</td>
            <td><div class="actions">
              ${
                b.info.status === 'available'
                  ? lending === b.id
                    ? html`<form class="row" onSubmit=${(e) => {
                        e.preventDefault();
                        checkout(b, e.currentTarget.closest('.actions'));
                      }}>
                        <${Field} label=${`Borrower of ${b.info.name}`} value=${borrower} maxlength="200"
                          id=${`borrower-${b.id}`} onInput=${(e) => setBorrower(e.currentTarget.value)} />
                        <button type="submit" disabled=${act.busy}>Confirm checkout</button>
                        <button type="button" class="secondary" onClick=${(e) => {
                          const cell = e.currentTarget.closest('.actions');
                          setLending(null);
                          refocus(cell);
                        }}>Cancel</button>
                      </form>`
                    : html`<button type="button" aria-label=${`Check out ${b.info.name}`} onClick=${() => {
                        setLending(b.id);
                        setBorrower('');
                        // The button is replaced by the form: the keyboard goes on in its first field.
                        focusSoon(`borrower-${b.id}`);
                      }}>Check out</button>`
                  : html`<button type="button" aria-label=${`Return ${b.info.name}`} disabled=${act.busy}
                      onClick=${(e) => giveBack(b, e.currentTarget.closest('.actions'))}>Return</button>`
              }
              <button type="button" class="secondary" aria-label=${`Edit ${b.info.name}`} onClick=${() => edit(b)}>Edit</button>
              <button type="button" class="danger" aria-label=${`Delete ${b.info.name}`}
                disabled=${act.busy || b.info.status !== 'available'}
                title=${b.info.status === 'available' ? undefined : 'Return the book before deleting it'}
                onClick=${() => remove(b)}>Delete</button>
            </div></td>
          </tr>`,
        )}
      </tbody>
    </table></div>
    <${Pager} pages=${pages} next=${list.data?.nextCursor} what="books" />
    <section class="card" aria-labelledby="book-form-h">
      <h2 id="book-form-h">${editing ? `Edit “${editing.info.name}”` : 'Add a book'}</h2>
      <form id="book-form" class="row" onSubmit=${submit}>
        <${Field} label="Title" required maxlength="500" value=${form.name}
          onInput=${(e) => setForm({ ...form, name: e.currentTarget.value })} />
        <${Field} label="Author" required maxlength="300" value=${form.author}
          onInput=${(e) => setForm({ ...form, author: e.currentTarget.value })} />
        <${Field} label="Rack" required maxlength="100" pattern="[A-Za-z0-9][A-Za-z0-9._:\\-]*"
          hint="letters, digits and . _ : -" value=${form.rack_id}
          onInput=${(e) => setForm({ ...form, rack_id: e.currentTarget.value })} />
        <${Field} label="Tags" hint="comma-separated" value=${form.tags}
          onInput=${(e) => setForm({ ...form, tags: e.currentTarget.value })} />
        <button type="submit" disabled=${save.busy}>${editing ? 'Save changes' : 'Add book'}</button>
        ${editing && html`<button type="button" class="secondary" onClick=${cancelEdit}>Cancel</button>`}
      </form>
      <${Alert} error=${save.error} />
    </section>`;
}
