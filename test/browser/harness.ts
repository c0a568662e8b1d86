// Browser tests drive Debian's chromium through playwright-core against a platform listening on a
// loopback port. Every page fails its test on a console error or page error, and every page visited
// is saved as a screenshot in test-artifacts/.
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { createUser } from '../../src/kit/auth.ts';
import { ROOT, startPlatform, type TestPlatform } from '../helpers.ts';

export const CHROMIUM = '/usr/bin/chromium';
export const ARTIFACTS = path.join(ROOT, 'test-artifacts');
/** `{ skip: needsChromium }`: CI installs chromium; a machine without it says why it skips. */
export const needsChromium = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to run browser tests`;
export const USER = { email: 'ops@example.com', password: 'correct horse battery' };

export const DESKTOP = { width: 1280, height: 860 };
export const PHONE = { width: 390, height: 844 };

export async function launchBrowser(): Promise<Browser> {
  // playwright gives every launch a fresh temporary profile (a fresh user-data-dir) and removes it.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--no-first-run',
      '--disable-quic',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  after(async () => {
    await browser.close();
  });
  return browser;
}

/** A platform listening on loopback with a dashboard user (admin unless told). */
export async function startDashboard(
  opts: { role?: 'admin' | 'user' } = {},
): Promise<TestPlatform & { baseUrl: string }> {
  const p = await startPlatform({ listen: true });
  await createUser(p.kit.pool, USER.email, USER.password, opts.role ?? 'admin');
  return Object.assign(p, { baseUrl: p.address() });
}

/**
 * A page that records console errors and page errors. `expectError(pattern)` allows one console
 * error matching pattern (a test that provokes a 401 on purpose); `assertClean()` fails on the rest.
 */
export interface WatchedPage {
  page: Page;
  context: BrowserContext;
  errors: string[];
  expectError(pattern: RegExp): void;
  assertClean(): void;
  shot(name: string): Promise<string>;
}

export async function openPage(browser: Browser, baseUrl: string, viewport = DESKTOP): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport, baseURL: baseUrl });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const errors: string[] = [];
  const allowed: RegExp[] = [];
  const record = (text: string) => {
    const i = allowed.findIndex((re) => re.test(text));
    if (i >= 0) allowed.splice(i, 1);
    else errors.push(text);
  };
  page.on('console', (msg) => {
    if (msg.type() === 'error') record(`console: ${msg.text()} (${msg.location().url})`);
  });
  page.on('pageerror', (err) => record(`page error: ${err.message}`));
  page.on('dialog', (d) => d.accept());
  after(() => context.close().catch(() => undefined));
  mkdirSync(ARTIFACTS, { recursive: true });
  return {
    page,
    context,
    errors,
    expectError: (re) => allowed.push(re),
    assertClean() {
      if (errors.length) throw new Error(`browser errors:\n${errors.join('\n')}`);
    },
    async shot(name) {
      const file = path.join(ARTIFACTS, `${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      return file;
    },
  };
}

/** Signs in through the real form. */
export async function signIn(w: WatchedPage, creds = USER): Promise<void> {
  const { page } = w;
  await page.goto('/');
  await page.getByLabel('E-mail').fill(creds.email);
  await page.getByLabel('Password').fill(creds.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}
