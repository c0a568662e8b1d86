// Builds Tessera for one role: the kit, the modules, the HTTP app, and what runs in the background.
// The launcher (src/cli/start.ts) only picks the role, listens and handles signals.

import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { registerAdminRoutes, registerAuthRoutes } from './kit/admin-routes.ts';
import { createApiKey, createUser, WebhookVerifier } from './kit/auth.ts';
import type { Config, Role } from './kit/config.ts';
import { databaseCheck, natsCheck } from './kit/health.ts';
import { type App, createHttpApp, guardModuleRoutes } from './kit/http.ts';
import { createKit, KIT_MIGRATIONS, type Kit } from './kit/kit.ts';
import { moduleLogger } from './kit/log.ts';
import { forgetOldLoginAttempts } from './kit/login-throttle.ts';
import { type MigrationSource, migrate } from './kit/migrate.ts';
import type { HealthCheck, ModuleContext, TesseraModule } from './kit/module.ts';
import { registerOpsRoutes } from './kit/ops-routes.ts';
import { turnOffPretenuring } from './kit/v8-flags.ts';
import { registerDashboard } from './web/dashboard.ts';

export interface Platform {
  kit: Kit;
  app: App;
  modules: TesseraModule[];
  /** Listen (when port given) and start background work for the role. */
  start(listen?: { host: string; port: number }): Promise<void>;
  /** Graceful: stop accepting, drain requests, RPC and jobs, close the pool and embedded PostgreSQL. */
  stop(): Promise<void>;
  address(): string;
}

export const servesApi = (role: Role) => role === 'all' || role === 'api';
const runsJobs = (role: Role) => role === 'all' || role === 'worker';
const runsCron = (role: Role) => role === 'all' || role === 'scheduler';
/**
 * Who answers module RPC on NATS: the processes that do a module's work. An api process only calls;
 * a scheduler only ticks cron, and joining the books queue group would make it take a share of book
 * requests it was never sized for.
 */
export const servesRpc = (role: Role) => role === 'all' || role === 'worker';

export const DEV_USER = { email: 'test@example.com', password: 'test123' };
export const DEV_API_KEY = 'test-api-key';

export function migrationSources(modules: TesseraModule[]): MigrationSource[] {
  return [
    { module: 'kit', dir: KIT_MIGRATIONS },
    ...modules.filter((m) => m.migrationsDir).map((m) => ({ module: m.name, dir: m.migrationsDir! })),
  ];
}

export async function runMigrations(kit: Kit, modules: TesseraModule[]): Promise<string[]> {
  const applied = await migrate(kit.pool, migrationSources(modules), moduleLogger(kit.log, 'migrate'));
  await kit.jobs.migrate();
  return applied;
}

/** Seed 001's development credentials: embedded default only, never in production. */
async function bootstrapDevCredentials(kit: Kit): Promise<void> {
  if (!kit.embedded || kit.config.nodeEnv === 'production') return;
  const { rows } = await kit.pool.query('SELECT 1 FROM users LIMIT 1');
  if (rows.length > 0) return;
  await createUser(kit.pool, DEV_USER.email, DEV_USER.password, 'admin');
  await createApiKey(kit.pool, 'development key', ['admin'], { key: DEV_API_KEY });
  const msg = [
    'Development credentials created (embedded default only, never in production):',
    `  dashboard: ${DEV_USER.email} / ${DEV_USER.password}`,
    `  API key:   ${DEV_API_KEY}`,
    `  webhook secret (Standard Webhooks): ${kit.webhookSecret}`,
  ].join('\n');
  moduleLogger(kit.log, 'kit').info(
    { email: DEV_USER.email, apiKey: DEV_API_KEY },
    'DEV_CREDENTIALS_CREATED',
  );
  process.stderr.write(`\n${msg}\n\n`);
}

/**
 * Said at every start of a serving process (not of one-shot commands, whose stdout may be an export):
 * only the embedded default's first start prints the generated secrets, so a process on
 * DATABASE_URL without WEBHOOK_SECRET answered every signed delivery 401, unexplained.
 */
function warnOfDevSecrets(kit: Kit): void {
  const unset = [!kit.config.webhookSecret && 'WEBHOOK_SECRET', !kit.config.jwtSecret && 'JWT_SECRET'];
  if (!unset.some(Boolean)) return;
  moduleLogger(kit.log, 'kit').warn(
    {
      unset: unset.filter(Boolean),
      file: path.resolve(kit.config.dataDir, 'secrets.json'),
      hint: 'using generated development secrets from this file: signed webhooks must be signed with its webhookSecret, and every process must share it; set the variables to choose your own',
    },
    'DEV_SECRETS_IN_USE',
  );
}

export interface PlatformOptions {
  config: Config;
  role: Role;
  modules: TesseraModule[];
  logDestination?: NodeJS.WritableStream;
  /** Apply migrations at start (default true; `tessera migrate` runs them alone). */
  migrate?: boolean;
}

export async function createPlatform(opts: PlatformOptions): Promise<Platform> {
  // Before the first request: a pretenuring decision made under load is what V8 keeps (v8-flags.ts).
  turnOffPretenuring();
  const kit = await createKit({ config: opts.config, role: opts.role, logDestination: opts.logDestination });
  const { role, modules } = opts;
  try {
    if (opts.migrate !== false) await runMigrations(kit, modules);
    await bootstrapDevCredentials(kit);
    warnOfDevSecrets(kit);
  } catch (err) {
    await closeKit(kit);
    throw err;
  }
  const contexts = new Map<string, ModuleContext>();
  for (const m of modules) {
    const ctx: ModuleContext = { ...kit, log: moduleLogger(kit.log, m.name) };
    contexts.set(m.name, ctx);
    await m.setup(ctx);
  }
  kit.jobs.cron({
    name: 'kit:forget-webhook-ids',
    schedule: '*/5 * * * *',
    run: () => WebhookVerifier.forgetOld(kit.pool),
  });
  kit.jobs.cron({
    name: 'kit:forget-login-attempts',
    schedule: '*/15 * * * *',
    run: () => forgetOldLoginAttempts(kit.pool),
  });

  const checks: HealthCheck[] = [databaseCheck(kit), ...(kit.nats ? [natsCheck(kit)] : [])];
  for (const m of modules) checks.push(...(m.healthChecks ?? []));

  const app = await createHttpApp(kit);
  registerOpsRoutes(app, kit, checks);
  if (servesApi(role)) {
    registerAuthRoutes(app, kit);
    await registerAdminRoutes(
      app,
      kit,
      modules.map((m) => m.name),
    );
    await registerDashboard(app, kit, checks);
    for (const m of modules) {
      if (!m.routes) continue;
      const ctx = contexts.get(m.name)!;
      await app.register(async (scoped: App) => {
        guardModuleRoutes(scoped, kit, m.name, m.scope);
        await m.routes!(scoped, ctx);
      });
    }
  }
  await app.ready();

  let stopped = false;
  return {
    kit,
    app,
    modules,
    address: () => {
      const a = app.server.address();
      return a && typeof a === 'object'
        ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
        : '';
    },
    async start(listen) {
      kit.chaos.startSync(kit.pool);
      await kit.chaos.refresh(kit.pool);
      if (runsJobs(role) || runsCron(role)) {
        await kit.jobs.start({
          jobs: runsJobs(role),
          cron: runsCron(role),
          concurrency: kit.config.workerConcurrency,
          role,
          heartbeatTimeoutMs: kit.config.workerHeartbeatTimeoutMs,
        });
      }
      if (kit.nats && servesRpc(role)) await kit.rpc.serve();
      if (listen) await app.listen(listen);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      const log = moduleLogger(kit.log, 'kit');
      log.info('SHUTDOWN_STARTED');
      kit.beginStop();
      await app.close(); // stops accepting, waits for in-flight requests
      await kit.rpc.close(); // leaves NATS queue groups, answers in-flight RPC
      await kit.jobs.stop(); // waits for running jobs
      for (const m of modules)
        await m
          .stop?.(contexts.get(m.name)!)
          .catch((err) => log.error({ err, module: m.name }, 'MODULE_STOP_FAILED'));
      kit.chaos.stopSync();
      await closeKit(kit);
      log.info('SHUTDOWN_DONE');
    },
  };
}

/**
 * Waits (at most 2 s) until nothing holds or waits for a connection. graphile-worker may ask for a
 * client to record a job's completion just after its stop() resolves; pool.end() in that same tick
 * closes the idle clients under the pending request, which then fails "timeout exceeded" 5 s later.
 */
async function settle(pool: Kit['pool'], maxMs = 2000): Promise<void> {
  const deadline = Date.now() + maxMs;
  do await sleep(20);
  while ((pool.waitingCount > 0 || pool.totalCount > pool.idleCount) && Date.now() < deadline);
}

async function closeKit(kit: Kit): Promise<void> {
  // From here on a dropped connection is expected, not news.
  kit.pool.removeAllListeners('error');
  kit.pool.on('error', () => undefined);
  kit.dbStatus.close();
  await settle(kit.pool);
  await kit.pool.end().catch(() => undefined);
  if (kit.nats && !kit.nats.isClosed()) await kit.nats.close().catch(() => undefined);
  await kit.embedded?.stop();
  await kit.telemetry.shutdown();
}
