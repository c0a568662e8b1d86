// The shell: who is signed in, which page the hash names, the navigation. Pages live in pages/.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, onSignedOut, post } from './api.js';
import { BooksPage } from './pages/books.js';
import { CodesPage } from './pages/codes.js';
import { EventsPage } from './pages/events.js';
import { KeysPage } from './pages/keys.js';
import { OverviewPage } from './pages/overview.js';
import { SenderPage } from './pages/sender.js';
import { SignInPage } from './pages/signin.js';
import { html } from './ui.js';

const PAGES = [
  { path: 'overview', title: 'Overview', Page: OverviewPage },
  { path: 'codes', title: 'Codes', Page: CodesPage },
  { path: 'sender', title: 'Sender', Page: SenderPage },
  { path: 'events', title: 'Events', Page: EventsPage },
  { path: 'books', title: 'Books', Page: BooksPage },
  { path: 'keys', title: 'API keys', Page: KeysPage, admin: true },
];

function currentRoute() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  return { path: path || 'overview', params: new URLSearchParams(query) };
}

function App() {
  const [route, setRoute] = useState(currentRoute);
  // undefined = asking the server, null = signed out
  const [me, setMe] = useState(undefined);

  useEffect(() => {
    const onHash = () => setRoute(currentRoute());
    addEventListener('hashchange', onHash);
    const off = onSignedOut(() => setMe(null));
    api('/api/dashboard/session')
      .then((s) => setMe(s.signedIn ? s.principal : null))
      .catch(() => setMe(null));
    return () => {
      removeEventListener('hashchange', onHash);
      off();
    };
  }, []);

  // Signed-out pages go to sign-in, remembering where the user was headed.
  useEffect(() => {
    if (me === null && route.path !== 'sign-in') {
      location.replace(`#/sign-in?next=${encodeURIComponent(route.path)}`);
    } else if (me && route.path === 'sign-in') {
      location.replace(`#/${route.params.get('next') || 'overview'}`);
    }
  }, [me, route.path]);

  const page = PAGES.find((p) => p.path === route.path);
  useEffect(() => {
    document.title = `${route.path === 'sign-in' ? 'Sign in' : (page?.title ?? 'Not found')} · Tessera`;
    // Moving focus to the new page tells screen-reader and keyboard users the page changed;
    // sign-in focuses its own first field instead.
    if (route.path !== 'sign-in' && me) document.getElementById('main')?.focus({ preventScroll: true });
  }, [route.path, Boolean(me)]);

  if (me === undefined) return html`<p class="boot">Loading Tessera…</p>`;
  if (me === null || route.path === 'sign-in') return html`<${SignInPage} onSignedIn=${setMe} />`;

  const isAdmin = me.scopes.includes('admin');
  const signOut = async () => {
    await post('/api/auth/logout').catch(() => undefined);
    setMe(null);
  };
  return html`
    <a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      document.getElementById('main')?.focus();
    }}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/overview">Tessera</a>
      <nav aria-label="Main">
        <ul>
          ${PAGES.filter((p) => !p.admin || isAdmin).map(
            (p) =>
              html`<li><a href=${`#/${p.path}`} aria-current=${p.path === route.path ? 'page' : undefined}>${p.title}</a></li>`,
          )}
        </ul>
      </nav>
      <div class="who">
        <span title=${me.scopes.join(', ')}>${me.name}</span>
        <button type="button" class="link" onClick=${signOut}>Sign out</button>
      </div>
    </header>
    <main id="main" tabindex="-1">
      ${
        page && (!page.admin || isAdmin)
          ? html`<${page.Page} me=${me} isAdmin=${isAdmin} params=${route.params} key=${route.path} />`
          : html`<h1>Not found</h1><p>No page called “${route.path}”. <a href="#/overview">Go to the overview</a>.</p>`
      }
    </main>`;
}

render(html`<${App} />`, document.getElementById('root'));
