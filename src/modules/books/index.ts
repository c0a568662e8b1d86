// The books module (seed 002): book inventory by rack, checkouts with history, behind seed 002's
// HTTP API. The service is registered in every role; the routes call it through RPC, so with
// NATS_URL an api process forwards to `tessera start --role worker` processes in the
// `tessera.books` queue group (adding a worker adds capacity), and without it the call stays
// in-process.
import path from 'node:path';
import { defineModule } from '../../kit/module.ts';
import type { Handlers } from '../../kit/rpc.ts';
import { createBooksMetrics } from './metrics.ts';
import { forgetCreateKeys } from './queries.ts';
import { registerBookRoutes } from './routes.ts';
import { type BooksService, createBooksService } from './service.ts';

export type { Book, BookInput, HistoryEntry, Rack } from './schemas.ts';
export type { BooksService } from './service.ts';

export const booksModule = defineModule({
  name: 'books',
  scope: 'books',
  migrationsDir: path.join(import.meta.dirname, 'migrations'),
  setup(ctx) {
    const metrics = createBooksMetrics(ctx.metrics.registry, ctx.pool, ctx.log);
    const service = metrics.instrument(createBooksService(ctx.pool, ctx.log));
    ctx.rpc.register('books', service as unknown as Handlers);
    ctx.jobs.cron({
      name: 'books:forget-create-keys',
      schedule: '17 * * * *',
      run: async ({ log }) => {
        const n = await forgetCreateKeys(ctx.pool);
        if (n) log.info({ keys: n }, 'BOOKS_CREATE_KEYS_FORGOTTEN');
      },
    });
  },
  routes(app, ctx) {
    registerBookRoutes(app, ctx.rpc.client<BooksService>('books'));
  },
});
