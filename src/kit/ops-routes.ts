// Ops endpoints on every role, never behind auth, never failure-injected.

import { runHealth } from './health.ts';
import type { App } from './http.ts';
import type { Kit } from './kit.ts';
import { moduleLogger } from './log.ts';
import type { HealthCheck } from './module.ts';

export function registerOpsRoutes(app: App, kit: Kit, checks: HealthCheck[]): void {
  const hide = { hide: true };
  app.get('/heartbeat', { schema: hide, config: { public: true } }, async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return { status: 'alive' };
  });

  const log = moduleLogger(kit.log, 'health');
  const health = async (_req: unknown, reply: import('fastify').FastifyReply) => {
    const { healthy, body } = await runHealth(kit, checks);
    if (healthy) log.debug('HEALTH_CHECK_OK');
    else log.warn({ failing: body.failing, checks: body.checks }, 'HEALTH_CHECK_FAILED');
    reply.code(healthy ? 200 : 503).header('cache-control', 'no-store');
    return body;
  };
  app.get('/health', { schema: hide, config: { public: true } }, health);
  app.get('/api/health', { schema: hide, config: { public: true } }, health);

  const metrics = async (_req: unknown, reply: import('fastify').FastifyReply) => {
    reply.header('content-type', kit.metrics.registry.contentType);
    return kit.metrics.registry.metrics();
  };
  app.get('/metrics', { schema: hide, config: { public: true } }, metrics);
  app.get('/api/metrics', { schema: hide, config: { public: true } }, metrics);
}
