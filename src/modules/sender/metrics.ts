// The sender's business metrics, registered on the process registry and served on /metrics.

import type { Pool } from '../../kit/db.ts';
import { prom, type Registry } from '../../kit/metrics.ts';

const QUEUE_STATES = ['scheduled', 'queued', 'sending', 'paused'] as const;
type QueueState = (typeof QUEUE_STATES)[number];

export type SendStatus = 'sent' | 'failed' | 'retry' | 'suppressed' | 'interrupted';

export interface SenderMetrics {
  messages: prom.Counter<'channel' | 'status'>;
  latency: prom.Histogram<'channel'>;
  rateLimitWaits: prom.Counter<'limit'>;
  rateLimitWaitSeconds: prom.Counter<'limit'>;
  chunksRecovered: prom.Counter;
}

export function createSenderMetrics(registry: Registry, pool: Pool): SenderMetrics {
  // By state, so alerts can tell work that should be moving (sending) from work that waits on
  // purpose: paused by a person, or queued for a scheduledAt still ahead (state "scheduled").
  new prom.Gauge({
    name: 'sender_queue_depth',
    help: 'Recipients not yet sent, by batch state: scheduled (queued, scheduledAt ahead), queued, sending, paused',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const { rows } = await pool
        .query<{ state: QueueState; n: number }>(
          `SELECT CASE WHEN state = 'queued' AND scheduled_at > now() THEN 'scheduled' ELSE state END AS state,
             coalesce(sum(total - sent - failed - suppressed - cancelled), 0)::int AS n
           FROM sender_batches WHERE state IN ('queued', 'sending', 'paused') GROUP BY 1`,
        )
        .catch(() => ({ rows: [] }));
      // Every state is reported, at 0 when empty, so a PromQL selector on one state always has a series.
      for (const state of QUEUE_STATES) this.set({ state }, rows.find((r) => r.state === state)?.n ?? 0);
    },
  });
  return {
    messages: new prom.Counter({
      name: 'messages_sent_total',
      help: 'Messages by channel and outcome (sent, failed, retry, suppressed, interrupted)',
      labelNames: ['channel', 'status'],
      registers: [registry],
    }),
    latency: new prom.Histogram({
      name: 'sender_send_latency_seconds',
      help: 'Provider call latency per message by channel',
      labelNames: ['channel'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: [registry],
    }),
    rateLimitWaits: new prom.Counter({
      name: 'sender_rate_limit_waits_total',
      help: 'Times a chunk waited for a shared rate limit, by limit (batch, provider, api_key)',
      labelNames: ['limit'],
      registers: [registry],
    }),
    rateLimitWaitSeconds: new prom.Counter({
      name: 'sender_rate_limit_wait_seconds_total',
      help: 'Seconds chunks spent waiting for shared rate limits, by limit',
      labelNames: ['limit'],
      registers: [registry],
    }),
    chunksRecovered: new prom.Counter({
      name: 'sender_chunks_recovered_total',
      help: 'Chunks taken back from a worker whose lease expired (killed or hung)',
      registers: [registry],
    }),
  };
}
