// Delivery events from providers (POST /webhooks/:provider, Standard Webhooks signed): delivered,
// bounced, complained and opened, each kind counted once per recipient however often and in whatever
// order providers repeat it (delivered → opened → delivered is one delivery), and only for a message
// that went out or may have (a failed one may: a provider that timed out may still deliver); bounces and
// complaints put the address on the account's suppression list. A bounce that overtakes the
// worker's record of the send (the provider answered before the sub-batch was written) leaves the
// state to that record, which writes `bounced` for a sent message with the bounce bit set: the send
// is counted either way.
import type { Pool } from '../../kit/db.ts';
import { withTransaction } from '../../kit/db.ts';
import type { Logger } from '../../kit/log.ts';
import type { DeliveryEvent } from './schemas.ts';
import { addSuppressions } from './suppressions.ts';

/** Counter column per event type: a fixed map, never caller text, goes into the SQL. */
const COUNTER = {
  delivered: 'delivered',
  bounced: 'bounced',
  complained: 'complained',
  opened: 'opened',
} as const;
/** The kind's bit in sender_recipients.event_kinds (migration 003). */
const BIT = { delivered: 1, bounced: 2, complained: 4, opened: 8 } as const;

const MESSAGE_ID = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):([0-9]{1,10})$/i;
const MAX_RECIPIENT_ID = 2_147_483_647; // sender_recipients.id is an int

/** The batch id and recipient id a messageId names, or undefined when it cannot name one of ours. */
function messageIds(messageId: string): [string, number] | undefined {
  const m = MESSAGE_ID.exec(messageId);
  if (!m) return undefined;
  const rid = Number(m[2]);
  return rid <= MAX_RECIPIENT_ID ? [m[1]!, rid] : undefined;
}

export async function recordDeliveryEvents(
  pool: Pool,
  log: Logger,
  provider: string,
  events: DeliveryEvent[],
) {
  let recorded = 0;
  let duplicate = 0;
  const unknown: string[] = [];
  await withTransaction(pool, async (db) => {
    for (const e of events) {
      const ids = messageIds(e.messageId);
      if (!ids) {
        unknown.push(e.messageId);
        continue;
      }
      const [batchId, rid] = ids;
      const { rows } = await db.query<{ address: string; account_id: string; fresh: boolean }>(
        // Only a message that went out, or may have: not a suppressed recipient, nor a cancelled one
        // never tried (one cancelled while waiting for a retry may have been delivered by a provider
        // that timed out), nor one of a draft (counted, they showed deliveries and bounces of
        // messages never sent).
        `WITH r AS (
           SELECT address, event FROM sender_recipients
           WHERE batch_id = $1 AND id = $2 AND state <> 'suppressed' AND NOT (state = 'cancelled' AND attempts = 0)
             AND EXISTS (SELECT 1 FROM sender_batches WHERE id = $1 AND state <> 'draft')
           FOR UPDATE),
         u AS (
           UPDATE sender_recipients SET event = $3, event_at = now(), event_kinds = event_kinds | $4,
             state = CASE WHEN $3 = 'bounced' AND state = 'sent' THEN 'bounced' ELSE state END
           WHERE batch_id = $1 AND id = $2 AND event_kinds & $4 = 0 AND EXISTS (SELECT 1 FROM r) RETURNING 1)
         SELECT r.address, b.account_id, EXISTS (SELECT 1 FROM u) AS fresh
         FROM r JOIN sender_batches b ON b.id = $1`,
        [batchId, rid, e.type, BIT[e.type]],
      );
      const row = rows[0];
      if (!row) {
        unknown.push(e.messageId);
        continue;
      }
      if (!row.fresh) {
        duplicate++;
        continue;
      }
      const column = COUNTER[e.type];
      await db.query(
        `UPDATE sender_batches SET ${column} = ${column} + 1, updated_at = now() WHERE id = $1`,
        [batchId],
      );
      if (e.type === 'bounced' || e.type === 'complained')
        await addSuppressions(
          db,
          row.account_id,
          [row.address],
          e.type === 'bounced' ? 'bounce' : 'complaint',
        );
      recorded++;
    }
  });
  log.info({ provider, recorded, duplicate, unknown: unknown.length }, 'SENDER_DELIVERY_EVENTS');
  return { recorded, duplicate, unknown };
}
