// The web dashboard: static files from web/ at `GET /`, and the few browser libraries it imports
// (Preact, htm, uPlot) straight from node_modules under /vendor/. There is no build step: the
// browser loads plain ES modules and an import map in web/index.html names the vendor files.
// Every page is public (it is HTML and JavaScript); the data behind it needs a session or key.
import { createRequire } from 'node:module';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import { type App, authenticate } from '../kit/http.ts';
import type { Kit } from '../kit/kit.ts';
import type { HealthCheck } from '../kit/module.ts';
import { registerOverview } from './overview.ts';

const require = createRequire(import.meta.url);
export const WEB_ROOT = path.resolve(import.meta.dirname, '../../web');

/** URL prefix → directory of the file a package exports (resolved, so hoisting does not matter). */
const VENDOR: Record<string, string> = {
  '/vendor/preact/': path.dirname(require.resolve('preact')),
  '/vendor/preact-hooks/': path.dirname(require.resolve('preact/hooks')),
  '/vendor/htm/': path.dirname(require.resolve('htm')),
  '/vendor/uplot/': path.dirname(require.resolve('uplot')),
};

export async function registerDashboard(app: App, kit: Kit, checks: HealthCheck[]): Promise<void> {
  registerOverview(app, kit, checks);
  // Like GET /api/auth/me, but "signed out" is a 200: the dashboard asks on every load, and a 401
  // there would be a console error in every signed-out browser.
  app.get(
    '/api/dashboard/session',
    { schema: { tags: ['auth'] }, config: { public: true } },
    async (req, reply) => {
      reply.header('cache-control', 'no-store');
      const p = await authenticate(kit, req);
      return p
        ? {
            signedIn: true,
            principal: { kind: p.kind, name: p.name, scopes: p.scopes, accountId: p.accountId },
          }
        : { signedIn: false };
    },
  );

  // wildcard: false registers one route per file found at start, so unknown paths still reach
  // the JSON 404 handler instead of a catch-all; decorateReply: false because @fastify/swagger-ui
  // registers its own copy of this plugin.
  const common = { wildcard: false, decorateReply: false, schemaHide: true } as const;
  await app.register(fastifyStatic, {
    ...common,
    root: WEB_ROOT,
    prefix: '/',
    index: 'index.html',
    // The app changes with every release; revalidate with the ETag rather than trust a max-age.
    cacheControl: false,
    setHeaders: (reply) => {
      reply.header('cache-control', 'no-cache');
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'same-origin');
    },
  });
  for (const [prefix, root] of Object.entries(VENDOR)) {
    await app.register(fastifyStatic, { ...common, root, prefix, maxAge: '1d' });
  }
}
