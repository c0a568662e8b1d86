// Seed 004's business metrics: codes by campaign through their life, the available inventory, and
// latency per operation. Registered on the process registry, served on /metrics.
import { isConnectionError, unstorableInputError } from '../../kit/db.ts';
import { prom, type Registry } from '../../kit/metrics.ts';

export interface CodesMetrics {
  generated: prom.Counter<'campaign'>;
  reserved: prom.Counter<'campaign'>;
  assigned: prom.Counter<'campaign'>;
  released: prom.Counter<'campaign'>;
  expired: prom.Counter<'campaign'>;
  duration: prom.Histogram<'operation' | 'outcome'>;
}

export function createCodesMetrics(
  registry: Registry,
  availableByCampaign: () => Promise<{ id: string; available: number }[]>,
): CodesMetrics {
  const counter = (name: string, help: string) =>
    new prom.Counter({ name, help, labelNames: ['campaign'], registers: [registry] });
  new prom.Gauge({
    name: 'codes_available',
    help: 'Codes available to reserve, by campaign',
    labelNames: ['campaign'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const c of await availableByCampaign()) this.set({ campaign: c.id }, c.available);
    },
  });
  return {
    generated: counter('codes_generated_total', 'Codes generated or imported, by campaign'),
    reserved: counter('codes_reserved_total', 'Codes reserved, by campaign'),
    assigned: counter('codes_assigned_total', 'Codes assigned to a user, by campaign'),
    released: counter('codes_released_total', 'Reserved codes released back to the pool, by campaign'),
    expired: counter('codes_expired_total', 'Reserved codes whose reservation expired, by campaign'),
    duration: new prom.Histogram({
      name: 'codes_operation_duration_seconds',
      help: 'Latency of codes operations (reserve, assign, release, generate, import, lookup, …) by outcome',
      labelNames: ['operation', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 120],
      registers: [registry],
    }),
  };
}

/**
 * The HTTP status an error will be answered with, as the error handler decides it: PostgreSQL's
 * refusal of text it cannot store (a NUL in a userId) is a 400 there, and was `error` here.
 */
function outcomeOf(err: unknown): string {
  const status = (err as { statusCode?: number }).statusCode;
  if (status !== undefined) return String(status);
  if (unstorableInputError(err)) return '400';
  if (isConnectionError(err)) return '503';
  return 'error';
}

/** Times `fn` into the operation histogram; outcome is ok or the HTTP status of the error. */
export async function timed<T>(m: CodesMetrics, operation: string, fn: () => Promise<T>): Promise<T> {
  const end = m.duration.startTimer({ operation });
  try {
    const r = await fn();
    end({ outcome: 'ok' });
    return r;
  } catch (err) {
    end({ outcome: outcomeOf(err) });
    throw err;
  }
}
