// The events module's business metrics, on the process registry served at /metrics.
import type { Pool, Queryable } from '../../kit/db.ts';
import { prom, type Registry } from '../../kit/metrics.ts';
import { SOURCES } from './ingest.ts';

export interface EventsMetrics {
  ingested: prom.Counter<'source'>;
  duplicates: prom.Counter<'source'>;
  processed: prom.Counter;
  failed: prom.Counter<'reason'>;
  backlog: prom.Gauge;
  lag: prom.Histogram;
}

export function createEventsMetrics(registry: Registry, pool: Pool): EventsMetrics {
  return {
    ingested: bySource(registry, {
      name: 'events_ingested_total',
      help: 'Events accepted and stored (a 201 was or will be sent), by source (api, segment)',
    }),
    duplicates: bySource(registry, {
      name: 'events_duplicates_total',
      help: 'Events acknowledged but not stored again because their messageId was seen before',
    }),
    processed: new prom.Counter({
      name: 'events_processed_total',
      help: 'Events the worker turned into processed rows and aggregates',
      registers: [registry],
    }),
    failed: failedCounter(registry),
    backlog: new prom.Gauge({
      name: 'events_backlog',
      help: 'Raw events waiting for the worker (read from PostgreSQL at scrape time)',
      registers: [registry],
      async collect() {
        // A scrape during an outage still answers: the gauge keeps its last value.
        const n = await countBacklog(pool).catch(() => undefined);
        if (n !== undefined) this.set(n);
      },
    }),
    lag: new prom.Histogram({
      name: 'events_processing_lag_seconds',
      help: 'Time from ingestion (received_at) to processing (the worker COMMIT)',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
      registers: [registry],
    }),
  };
}

/** A counter by ingestion source, each source's series at 0 from the start (see failedCounter). */
function bySource(registry: Registry, def: { name: string; help: string }): prom.Counter<'source'> {
  const counter = new prom.Counter({ ...def, labelNames: ['source'], registers: [registry] });
  for (const source of SOURCES) counter.inc({ source }, 0);
  return counter;
}

/** The reasons the worker dead-letters an event for: events_failed_total's `reason` label. */
export const FAILED_REASONS = ['parse'] as const;
export type FailedReason = (typeof FAILED_REASONS)[number];

function failedCounter(registry: Registry): prom.Counter<'reason'> {
  const failed = new prom.Counter({
    name: 'events_failed_total',
    help: 'Events the worker could not parse, moved to the dead-letter table, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  // A labelled counter has no series until its first inc(): rate() and increase() alerts had
  // nothing to evaluate before the first failure. Each known reason starts at 0.
  for (const reason of FAILED_REASONS) failed.inc({ reason }, 0);
  return failed;
}

export async function countBacklog(pool: Queryable): Promise<number> {
  // Batches (migration 007), and rows an api process of the previous release may still write.
  const { rows } = await pool.query<{ n: number }>(
    `SELECT ((SELECT coalesce(sum(n), 0) FROM events_raw_batches) + (SELECT count(*) FROM events_raw))::int AS n`,
  );
  return rows[0]?.n ?? 0;
}
