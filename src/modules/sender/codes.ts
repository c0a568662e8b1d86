// The slice of the codes service the sender uses: one reserved-then-assigned code per recipient,
// reached through RPC only (in-process or NATS), never through the codes tables.
// Declared here to the agreed contract until src/modules/codes exports its own type.
export interface CodesService {
  reserve(input: {
    campaignId: string;
    count: number;
    reserveId?: string;
    ttlSeconds?: number;
  }): Promise<{ reserveId: string; codes: string[]; expiresAt: string }>;
  assign(input: { campaignId: string; reserveId: string; userId: string }): Promise<unknown>;
  release(input: { campaignId: string; reserveId: string }): Promise<unknown>;
}
