// The sender module (issue 6, seed 001 BatchSender): batches of personalised messages sent through
// durable chunk jobs to e-mail (SMTP), webhooks or a mock provider. See docs/api/sender.md.
import path from 'node:path';
import { defineModule, type ModuleContext } from '../../kit/module.ts';
import { Batches } from './batches.ts';
import type { CodesService } from './codes.ts';
import { createSenderMetrics } from './metrics.ts';
import { forgetIdle } from './ratelimit.ts';
import { senderRoutes } from './routes.ts';
import { SendEngine } from './worker.ts';

export type { CodesService } from './codes.ts';

// One engine per platform built in this process (tests build several), found again by its context.
const engines = new WeakMap<ModuleContext, SendEngine>();

export const senderModule = defineModule({
  name: 'sender',
  scope: 'sender',
  migrationsDir: path.join(import.meta.dirname, 'migrations'),
  setup(ctx) {
    const metrics = createSenderMetrics(ctx.metrics.registry, ctx.pool);
    const engine = new SendEngine(ctx, metrics);
    engines.set(ctx, engine);
    engine.register();
    // Every batch, send config and key leaves a rate bucket row behind; idle ones are dropped.
    ctx.jobs.cron({
      name: 'sender:forget-rate-buckets',
      schedule: '*/15 * * * *',
      run: async ({ log }) => {
        const n = await forgetIdle(ctx.pool);
        if (n) log.info({ buckets: n }, 'SENDER_RATE_BUCKETS_FORGOTTEN');
      },
    });
    if (ctx.role === 'all' || ctx.role === 'worker') engine.startSweeper();
  },
  routes(app, ctx) {
    senderRoutes(app, ctx, new Batches(ctx.pool, ctx.jobs, ctx.rpc.client<CodesService>('codes'), ctx.log));
  },
  async stop(ctx) {
    await engines.get(ctx)?.stop();
  },
});
