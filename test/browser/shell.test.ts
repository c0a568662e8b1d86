import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createUser } from '../../src/kit/auth.ts';
import { json } from '../helpers.ts';
import { launchBrowser, needsChromium, openPage, PHONE, signIn, startDashboard, USER } from './harness.ts';

describe('dashboard shell, sign-in, overview and API keys', { skip: needsChromium }, async () => {
  if (needsChromium) return;
  const [browser, base] = await Promise.all([launchBrowser(), startDashboard()]);

  test('when GET / is fetched, then the dashboard HTML and its vendor modules are served', async () => {
    const res = await fetch(`${base.baseUrl}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await res.text(), /type="importmap"/);
    for (const path of ['/vendor/preact/preact.mjs', '/vendor/htm/htm.mjs', '/vendor/uplot/uPlot.esm.js']) {
      const r = await fetch(`${base.baseUrl}${path}`);
      assert.equal(r.status, 200, path);
      assert.match(r.headers.get('content-type') ?? '', /javascript/, path);
    }
    const missing = await fetch(`${base.baseUrl}/no-such-page`);
    assert.equal(missing.status, 404);
    assert.equal((await json(missing)).statusCode, 404, 'unknown paths keep the JSON 404');
  });

  test('when signed out, then every page redirects to sign-in, and a wrong password is refused', async () => {
    const w = await openPage(browser, base.baseUrl);
    await w.page.goto('/#/books');
    await w.page.getByRole('heading', { name: 'Sign in to Tessera' }).waitFor();
    assert.match(w.page.url(), /#\/sign-in\?next=books$/);
    await w.shot('sign-in');

    w.expectError(/401/);
    await w.page.getByLabel('E-mail').fill(USER.email);
    await w.page.getByLabel('Password').fill('wrong password');
    await w.page.getByRole('button', { name: 'Sign in' }).click();
    await w.page.getByRole('alert').filter({ hasText: 'wrong e-mail or password' }).waitFor();
    w.assertClean();
  });

  test('when signing in by keyboard, then the page asked for opens, and sign-out returns to sign-in', async () => {
    const w = await openPage(browser, base.baseUrl);
    await w.page.goto('/#/keys');
    await w.page.getByLabel('E-mail').waitFor();
    // The e-mail field has focus on arrival; the rest is Tab and Enter.
    await w.page.keyboard.type(USER.email);
    await w.page.keyboard.press('Tab');
    await w.page.keyboard.type(USER.password);
    await w.page.keyboard.press('Enter');
    await w.page.getByRole('heading', { name: 'API keys', level: 1 }).waitFor();
    assert.match(w.page.url(), /#\/keys$/);
    const cookies = await w.context.cookies();
    const session = cookies.find((c) => c.name === 'tessera_session');
    assert.ok(session?.httpOnly, 'the session cookie is HttpOnly');
    assert.equal(session?.sameSite, 'Strict');

    await w.page.getByRole('button', { name: 'Sign out' }).click();
    await w.page.getByRole('heading', { name: 'Sign in to Tessera' }).waitFor();
    await w.page.goto('/#/overview');
    await w.page.getByRole('heading', { name: 'Sign in to Tessera' }).waitFor();
    w.assertClean();
  });

  test('when the overview is open, then health, traffic and queue depth update live', async () => {
    const w = await openPage(browser, base.baseUrl);
    await signIn(w);
    await w.page.getByRole('heading', { name: 'Overview' }).waitFor();
    await w.page.getByTestId('health-checks').getByText('database').waitFor();
    await w.page.getByRole('heading', { name: /Health: healthy/ }).waitFor();
    await w.page.getByTestId('queue-depth').waitFor();
    // Requests made now show up as a non-zero rate within a couple of polls.
    for (let i = 0; i < 20; i++) await fetch(`${base.baseUrl}/api/admin/jobs`, { headers: base.auth });
    await w.page.waitForFunction(
      `Number(document.querySelector('[data-testid="rps"]')?.textContent) > 0`,
      undefined,
      { timeout: 8000 },
    );
    await w.page.getByRole('heading', { name: 'Recent failed jobs' }).waitFor();
    await w.shot('overview');
    w.assertClean();
  });

  test('when an admin creates an API key, then it is shown once, works, and stops working once revoked', async () => {
    const w = await openPage(browser, base.baseUrl);
    await signIn(w);
    await w.page.getByRole('link', { name: 'API keys' }).click();
    // htm does not decode HTML entities: "&lt;key&gt;" showed as written.
    await w.page.getByText('Authorization: Bearer <key>', { exact: true }).waitFor();
    await w.page.getByLabel('Name').fill('browser-test');
    // No scope ticked: told so, and the words go once one is ticked (they stayed).
    await w.page.getByRole('checkbox', { name: 'events' }).uncheck();
    await w.page.getByRole('button', { name: 'Create key' }).click();
    const noScope = w.page.getByRole('alert').filter({ hasText: 'choose at least one scope' });
    await noScope.waitFor();
    await w.page.getByRole('checkbox', { name: 'events' }).check();
    await noScope.waitFor({ state: 'detached' });
    await w.page.getByRole('checkbox', { name: 'books' }).check();
    await w.page.getByRole('button', { name: 'Create key' }).click();
    const key = (await w.page.getByTestId('new-key').textContent()) ?? '';
    assert.match(key, /^tsk_/);
    const me = await fetch(`${base.baseUrl}/api/auth/me`, { headers: { authorization: `Bearer ${key}` } });
    assert.deepEqual((await json(me)).scopes.sort(), ['books', 'events']);
    const row = w.page.getByRole('row').filter({ hasText: 'browser-test' });
    await row.getByText('active').waitFor();
    await w.shot('api-keys');

    await w.page.getByRole('button', { name: 'Done' }).click();
    assert.equal(await w.page.getByTestId('new-key').count(), 0, 'the key is not shown again');
    // The keyboard goes back to the form rather than to the page's top, after Done and after Revoke.
    const focused = (js: string) => w.page.waitForFunction(js, null, { timeout: 5000 });
    await focused(`document.activeElement?.id === 'key-name'`);
    await row.getByRole('button', { name: 'Revoke browser-test' }).click();
    await row.getByText(/^revoked/).waitFor();
    await focused(`document.activeElement?.closest('tr')?.textContent.includes('browser-test')`);
    const { rows } = await base.kit.pool.query('SELECT revoked_at FROM api_keys WHERE name = $1', [
      'browser-test',
    ]);
    assert.ok(rows[0]?.revoked_at, 'revoked in the database');
    w.assertClean();
  });

  test('when a non-admin signs in, then admin pages and calls are left out, so nothing answers 403', async () => {
    const viewer = { email: 'viewer@example.com', password: 'viewer-pass-1' };
    await createUser(base.kit.pool, viewer.email, viewer.password, 'user');
    const w = await openPage(browser, base.baseUrl);
    await signIn(w, viewer);
    await w.page.getByRole('heading', { name: /Health: healthy/ }).waitFor();
    await w.page.getByTestId('rps').waitFor();
    assert.equal(await w.page.getByRole('link', { name: 'API keys' }).count(), 0);
    // Queue depth is for everyone (from /api/dashboard/overview); failure details are for admins.
    await w.page.getByTestId('queue-depth').waitFor();
    assert.equal(await w.page.getByRole('heading', { name: 'Recent failed jobs' }).count(), 0);
    await w.page.getByRole('link', { name: 'Events' }).click();
    await w.page.getByTestId('total-events').waitFor();
    assert.equal(await w.page.getByRole('heading', { name: 'Failure injection' }).count(), 0);
    await w.page.goto('/#/keys');
    await w.page.getByRole('heading', { name: 'Not found' }).waitFor();
    w.assertClean();
  });

  test('when the dashboard is at phone width, then the navigation fits without sideways scrolling', async () => {
    const w = await openPage(browser, base.baseUrl, PHONE);
    await signIn(w);
    await w.page.getByRole('heading', { name: 'Overview' }).waitFor();
    await w.page.getByTestId('health-checks').waitFor();
    const overflow = (await w.page.evaluate(
      'document.documentElement.scrollWidth - window.innerWidth',
    )) as number;
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone screen`);
    await w.shot('overview-phone');
    w.assertClean();
  });
});
