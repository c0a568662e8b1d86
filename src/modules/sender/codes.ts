// The codes service the sender uses: one reserved-then-assigned code per recipient, reached through
// RPC only (in-process or NATS), never through the codes tables. The type is the codes module's own
// contract (src/modules/codes/service.ts), so a change there breaks the sender's build, not a send.
//   getCampaign({campaignId}) when a batch is created: an unknown codeCampaign is refused then
//   reserve({campaignId, count: 1, reserveId: `${batchId}:${recipientId}`}) → {reserveId, codes, expiresAt}
//     (the same reserveId again returns the same code, so a re-sent recipient keeps its code)
//   assign({campaignId, reserveId, userId: address}) before the message goes to the provider
//   release({campaignId, reserveId}) when the recipient fails for good or the batch is cancelled
import { badRequest, conflict, HttpError, notFound, unavailable } from '../../kit/errors.ts';
import { BATCH_CAMPAIGN_ID, type CodesService } from '../codes/service.ts';
import { SendError } from './channels.ts';

export type { CodesService };

/**
 * A failed reservation as a send outcome. The codes service answering 4xx is an answer about the
 * campaign (404 unknown, 409 out of codes, 400 bad id): retrying changes nothing, the recipient
 * fails. 5xx (503 no codes worker, an RPC timeout, a database hiccup), 408, 429 and errors without
 * a status (the connection) are transient: the recipient is retried with backoff, like a provider
 * error, and fails only after the batch's maxAttempts.
 */
export function codeReservationError(campaign: string, err: unknown): SendError {
  return new SendError(`no code from campaign ${campaign}: ${(err as Error).message}`, isPermanent(err));
}

/** A 4xx of the codes service other than 408 and 429: the same call would be refused again. */
function isPermanent(err: unknown): boolean {
  const status = err instanceof HttpError ? err.statusCode : undefined;
  return status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429;
}

/**
 * A refused assign as a send outcome, classed as a reservation's failure is: a 4xx (the address
 * already holds the campaign's maxPerUser codes) fails the recipient, unsent; a 5xx, or a
 * reservation that lapsed in between, is retried.
 */
export function codeAssignError(campaign: string, address: string, err: unknown): SendError {
  // Its reservation lapsed (or was released) between reserve and assign: the retry reserves anew.
  const lapsed = err instanceof HttpError && err.statusCode === 409 && /reserve again/.test(err.message);
  return new SendError(
    `code from campaign ${campaign} not assigned to ${address}, so not sent: ${(err as Error).message}`,
    !lapsed && isPermanent(err),
  );
}

/** At batch create: the campaign exists (asked through the codes service), or the create is refused. */
export async function checkCodeCampaign(codes: CodesService, campaignId: string): Promise<void> {
  // Accepted, every recipient of the batch would fail on its reserve's 409.
  if (campaignId === BATCH_CAMPAIGN_ID)
    throw conflict(
      `codeCampaign "${campaignId}" hands out codes only through POST /api/generate, so no batch can reserve in it: create a campaign of your own (POST /api/campaigns) and name it`,
    );
  try {
    await codes.getCampaign({ campaignId });
  } catch (err) {
    const status = err instanceof HttpError ? err.statusCode : 503;
    if (status === 404)
      throw notFound(`codeCampaign "${campaignId}" not found: create it with POST /api/campaigns first`);
    if (status < 500) throw badRequest(`codeCampaign: ${(err as Error).message}`);
    throw unavailable(
      `the codes service could not confirm codeCampaign "${campaignId}" (${(err as Error).message}); retry the create`,
    );
  }
}
