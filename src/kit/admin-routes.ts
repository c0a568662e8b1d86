// Sign-in, API keys, job progress and failure modes. Admin routes need the admin scope.
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import {
  checkLogin,
  createApiKey,
  hasScope,
  lacksScope,
  listApiKeys,
  type Principal,
  revokeApiKey,
  SCOPES,
  SESSION_COOKIE,
} from './auth.ts';
import { ALL_MODULES, MODE_VALUES } from './chaos.ts';
import { badRequest, forbidden, notFound, unauthorized } from './errors.ts';
import { type App, authenticate, refuseCrossSite, requireScope } from './http.ts';
import { JOB_STATES } from './jobs.ts';
import type { Kit } from './kit.ts';
import { moduleLogger } from './log.ts';
import { clearLoginAttempts, countLoginAttempt, TooManyLogins } from './login-throttle.ts';

const Credentials = Type.Object({
  email: Type.String({ minLength: 3, maxLength: 320 }),
  password: Type.String({ minLength: 1, maxLength: 200 }),
});

export function registerAuthRoutes(app: App, kit: Kit): void {
  app.post(
    '/api/auth/login',
    { schema: { tags: ['auth'], body: Credentials }, config: { public: true } },
    async (req, reply) => {
      const { email, password } = req.body;
      const user = await countLoginAttempt(kit.pool, email, req.ip)
        .then(() => checkLogin(kit.pool, email, password))
        .catch((err) => {
          kit.metrics.authFailures.inc({ kind: 'login' });
          if (err instanceof TooManyLogins) reply.header('retry-after', String(err.retryAfterSeconds));
          throw err;
        });
      await clearLoginAttempts(kit.pool, email, req.ip);
      const token = await kit.sessions.issue(user);
      const secure = kit.config.nodeEnv === 'production' ? '; Secure' : '';
      const maxAge = kit.config.sessionTtlHours * 3600;
      reply.header(
        'set-cookie',
        `${SESSION_COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${maxAge}${secure}`,
      );
      return { user };
    },
  );

  app.post(
    '/api/auth/logout',
    { schema: { tags: ['auth'] }, config: { public: true } },
    async (req, reply) => {
      // Signing out is a change too: another site's page must not sign the user out.
      refuseCrossSite(req);
      reply.header('set-cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
      return { ok: true };
    },
  );

  app.get('/api/auth/me', { schema: { tags: ['auth'] }, config: { public: true } }, async (req, reply) => {
    const principal = await authenticate(kit, req);
    if (!principal)
      return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'not signed in' });
    return {
      kind: principal.kind,
      name: principal.name,
      scopes: principal.scopes,
      accountId: principal.accountId,
    };
  });
}

/**
 * Who changed the failure modes, for FAILURE_MODE_CHANGED: the runbook finds who left chaos on by
 * it, and a key's name alone need not be unique, so its id and kind are logged too.
 */
function changedBy(req: FastifyRequest) {
  return { by: req.principal?.name, byId: req.principal?.id, byKind: req.principal?.kind };
}

/** `modules`: the module names failure modes can target (besides `kit`, whose cron jobs obey them too, and `*`). */
export async function registerAdminRoutes(app: App, kit: Kit, modules: string[]): Promise<void> {
  const targets = [ALL_MODULES, 'kit', ...modules];
  await app.register(async (admin: App) => {
    // Admin routes are how an operator turns failure injection off: they are never injected.
    requireScope(admin, kit, 'admin');

    admin.get(
      '/api/admin/jobs',
      {
        schema: {
          tags: ['admin'],
          querystring: Type.Object({
            state: Type.Optional(Type.Union(JOB_STATES.map((s) => Type.Literal(s)))),
            limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          }),
        },
      },
      async (req) => ({
        jobs: await kit.jobs.list(req.query.state, req.query.limit),
        depth: await kit.jobs.depth(),
      }),
    );

    admin.get('/api/admin/chaos', { schema: { tags: ['admin'] } }, async () => kit.chaos.snapshot());

    admin.post(
      '/api/admin/chaos',
      {
        schema: {
          tags: ['admin'],
          body: Type.Object(
            {
              module: Type.String({
                default: ALL_MODULES,
                description: 'module name, or * for every module',
              }),
              api: Type.Optional(Type.Union(MODE_VALUES.api.map((m) => Type.Literal(m)))),
              worker: Type.Optional(Type.Union(MODE_VALUES.worker.map((m) => Type.Literal(m)))),
              cron: Type.Optional(Type.Union(MODE_VALUES.cron.map((m) => Type.Literal(m)))),
            },
            { additionalProperties: false },
          ),
        },
      },
      async (req) => {
        const { module, ...modes } = req.body;
        if (!modes.api && !modes.worker && !modes.cron)
          throw badRequest('give at least one of api, worker, cron');
        // A typo would be stored and inject nothing, while the caller believes the drill is on.
        if (!targets.includes(module))
          throw badRequest(`module "${module}" is not one of ${targets.join(', ')} (* is every module)`);
        await kit.chaos.set(kit.pool, module, modes);
        moduleLogger(kit.log, 'chaos').warn(
          { target: module, ...modes, ...changedBy(req) },
          'FAILURE_MODE_CHANGED',
        );
        return kit.chaos.snapshot();
      },
    );

    admin.delete('/api/admin/chaos', { schema: { tags: ['admin'] } }, async (req) => {
      const cleared = await kit.chaos.clear(kit.pool);
      const { defaults } = kit.chaos.snapshot();
      // As POST logs: turning chaos off is a change the runbook traces too. `defaults` are the modes
      // in force now (from the environment or config file), which a clear does not switch off.
      moduleLogger(kit.log, 'chaos').warn(
        { target: ALL_MODULES, cleared, defaults, ...changedBy(req) },
        'FAILURE_MODE_CHANGED',
      );
      return kit.chaos.snapshot();
    });

    admin.get('/api/keys', { schema: { tags: ['admin'] } }, async () => ({
      keys: await listApiKeys(kit.pool),
    }));

    admin.post(
      '/api/keys',
      {
        schema: {
          tags: ['admin'],
          body: Type.Object({
            name: Type.String({ minLength: 1, maxLength: 100 }),
            scopes: Type.Array(Type.Union(SCOPES.map((s) => Type.Literal(s))), { minItems: 1 }),
            account: Type.Optional(
              Type.String({
                minLength: 1,
                maxLength: 100,
                description:
                  "the account whose sender data the key reaches (codes, events and books are shared); default: the caller's account",
              }),
            ),
          }),
        },
      },
      async (req, reply) => {
        reply.code(201);
        return createApiKey(kit.pool, req.body.name, req.body.scopes, {
          accountId: req.body.account ?? req.principal!.accountId,
        });
      },
    );

    admin.delete(
      '/api/keys/:id',
      { schema: { tags: ['admin'], params: Type.Object({ id: Type.String({ format: 'uuid' }) }) } },
      async (req) => {
        if (!(await revokeApiKey(kit.pool, req.params.id)))
          throw notFound(`API key ${req.params.id} not found or already revoked`);
        return { revoked: true };
      },
    );
  });

  // A job is read and cancelled with the scope of the module whose route started it (an events-only
  // key read codes jobs before).
  const ownJob = async (principal: Principal, jobId: string) => {
    const job = await kit.jobs.getTracked(jobId);
    if (!hasScope(principal, job.module))
      throw forbidden(`job ${job.id} is a ${job.module} job: ${lacksScope(principal, job.module)}`);
    return job;
  };
  await app.register(async (jobs: App) => {
    jobs.addHook('onRequest', async (req) => {
      const principal = await authenticate(kit, req);
      if (!principal)
        throw unauthorized('missing or invalid credentials: send Authorization: Bearer <api key> or sign in');
      req.principal = principal;
    });
    jobs.get(
      '/api/jobs/:jobId',
      { schema: { tags: ['jobs'], params: Type.Object({ jobId: Type.String() }) } },
      async (req) => ownJob(req.principal!, req.params.jobId),
    );
    jobs.delete(
      '/api/jobs/:jobId',
      {
        schema: {
          tags: ['jobs'],
          summary: 'Cancel a job: one queued never runs, one running stops at its next progress report',
          params: Type.Object({ jobId: Type.String() }),
        },
      },
      async (req) => {
        await ownJob(req.principal!, req.params.jobId);
        return kit.jobs.cancelTracked(req.params.jobId);
      },
    );
  });
}
