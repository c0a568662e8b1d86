import { useEffect, useState } from 'preact/hooks';
import { api, post } from '../api.js';
import { Alert, Field, html, useAction } from '../ui.js';

export function SignInPage({ onSignedIn }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const { busy, error, run } = useAction();
  useEffect(() => document.getElementById('signin-email')?.focus(), []);
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      await post('/api/auth/login', { email, password }, { allow401: true });
      const s = await api('/api/dashboard/session');
      if (!s.signedIn) throw new Error('signed in, but the browser did not keep the session cookie');
      onSignedIn(s.principal);
    });
  };
  return html`<main id="main" class="signin" tabindex="-1">
    <form class="card" onSubmit=${submit} aria-labelledby="signin-title">
      <h1 id="signin-title">Sign in to Tessera</h1>
      <${Field} label="E-mail" id="signin-email" type="email" name="email" autocomplete="username" required
        value=${email} onInput=${(e) => setEmail(e.currentTarget.value)} />
      <${Field} label="Password" type="password" name="password" autocomplete="current-password" required
        value=${password} onInput=${(e) => setPassword(e.currentTarget.value)} />
      <${Alert} error=${error} />
      <button type="submit" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
      <p class="muted">Scripts and other programs use API keys instead: <a href="/docs">API docs</a>.</p>
    </form>
  </main>`;
}
