// Books metrics in one place: the books_total gauge (read from PostgreSQL at scrape time, so every
// process reports the same truth however many workers write), and every service call counted by
// operation and outcome where it runs. RPC latency by service and method is the kit's
// tessera_rpc_duration_seconds.
import { callerError, type Pool } from '../../kit/db.ts';
import type { Logger } from '../../kit/log.ts';
import { prom, type Registry } from '../../kit/metrics.ts';
import { countBooks } from './queries.ts';
import type { BooksService } from './service.ts';

export type Outcome = 'ok' | 'invalid' | 'not_found' | 'conflict' | 'unavailable' | 'error';

export function outcomeOf(thrown: unknown): Outcome {
  // A NUL in the caller's text reaches PostgreSQL before anything refuses it: the caller's 400, not
  // an error of ours (counted as one, it fed the TesseraRpcErrors alert).
  const err = callerError(thrown);
  if (!err) return 'error';
  if (err.statusCode === 404) return 'not_found';
  if (err.statusCode === 409) return 'conflict';
  if (err.statusCode === 503) return 'unavailable';
  return err.statusCode < 500 ? 'invalid' : 'error';
}

export function createBooksMetrics(registry: Registry, pool: Pool, log: Logger) {
  const operations = new prom.Counter({
    name: 'books_operations_total',
    help: 'Books service calls by operation (create, get, list, update, remove, checkout, history, racks) and outcome',
    labelNames: ['operation', 'outcome'],
    registers: [registry],
  });
  new prom.Gauge({
    name: 'books_total',
    help: 'Books in the inventory (all racks)',
    registers: [registry],
    async collect() {
      try {
        this.set(await countBooks(pool));
      } catch (err) {
        // A scrape must not fail because the database is away; the gauge keeps its last value.
        log.warn({ err: { message: (err as Error).message } }, 'BOOKS_TOTAL_UNAVAILABLE');
      }
    },
  });

  /** The same service, with each call counted by operation and outcome. */
  function instrument(service: BooksService): BooksService {
    const wrapped = {} as Record<string, (input: unknown) => Promise<unknown>>;
    for (const [operation, fn] of Object.entries(service) as [
      string,
      (input: unknown) => Promise<unknown>,
    ][]) {
      wrapped[operation] = async (input) => {
        try {
          const result = await fn(input);
          operations.inc({ operation, outcome: 'ok' });
          return result;
        } catch (err) {
          operations.inc({ operation, outcome: outcomeOf(err) });
          throw err;
        }
      };
    }
    return wrapped as unknown as BooksService;
  }

  return { operations, instrument };
}
