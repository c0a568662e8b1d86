// The codes service the sender uses: one reserved-then-assigned code per recipient, reached through
// RPC only (in-process or NATS), never through the codes tables. The type is the codes module's own
// contract (src/modules/codes/service.ts), so a change there breaks the sender's build, not a send.
//   reserve({campaignId, count: 1, reserveId: `${batchId}:${recipientId}`}) → {reserveId, codes, expiresAt}
//     (the same reserveId again returns the same code, so a re-sent recipient keeps its code)
//   assign({campaignId, reserveId, userId: address}) after the provider accepted the message
//   release({campaignId, reserveId}) when the recipient fails for good or the batch is cancelled
export type { CodesService } from '../codes/service.ts';
