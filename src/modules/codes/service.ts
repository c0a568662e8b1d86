// The codes service: what the module's routes use, and what other modules call over RPC
// (`ctx.rpc.client<CodesService>('codes')`). Inputs are checked here too, because RPC callers
// bypass the HTTP schemas; every bad input is a 4xx that says what to fix.
import { PG_INT_MAX } from '../../kit/db.ts';
import { badRequest, conflict, unprocessable } from '../../kit/errors.ts';
import type { Logger } from '../../kit/log.ts';
import { longerThan } from '../../kit/text.ts';
import {
  BATCH_CAMPAIGN,
  type Campaigns,
  type CampaignView,
  type CreateCampaignInput,
  refuseBatchCampaign,
  type UpdateCampaignInput,
  view,
} from './campaigns.ts';
import type { CodesMetrics } from './metrics.ts';
import { timed } from './metrics.ts';
import type { AssignResult, Reservations, ReservationView, ReserveResult } from './reservations.ts';

/** POST /api/generate's campaign: only that route hands out its codes, so nothing may reserve in it. */
export const BATCH_CAMPAIGN_ID = BATCH_CAMPAIGN.id;
export const RESERVE_MAX = 10_000;
export const TTL_MAX_SECONDS = 30 * 24 * 3600;
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$/;

export interface ReserveInput {
  campaignId: string;
  count: number;
  /** Same id again → the same codes (idempotent). Omit to get a fresh UUID. */
  reserveId?: string;
  /** Defaults to the campaign's reservationTtlSeconds. */
  ttlSeconds?: number;
}
export interface AssignInput {
  campaignId: string;
  reserveId: string;
  userId: string;
}
export interface ReleaseInput {
  campaignId: string;
  reserveId: string;
}

/** The RPC contract other modules (sender) program against. */
export interface CodesService {
  /** All-or-nothing; 409 when the campaign has fewer available codes, 404 for an unknown campaign. */
  reserve(input: ReserveInput): Promise<ReserveResult>;
  /** 409 unless the reserveId holds a live reservation (or is already assigned to this userId). */
  assign(input: AssignInput): Promise<AssignResult>;
  /** Returns reserved (not assigned) codes to the pool; 404 for a reserveId never seen. */
  release(input: ReleaseInput): Promise<{ released: number }>;
  /** The reservation's state, codes, user and dates; 404 for a reserveId never seen. */
  getReservation(input: ReleaseInput): Promise<ReservationView>;
  getCampaign(input: { campaignId: string }): Promise<CampaignView>;
  createCampaign(input: CreateCampaignInput): Promise<CampaignView>;
  /** Changes name, reservationTtlSeconds or maxPerUser (null removes it); the format is fixed. */
  updateCampaign(
    input: UpdateCampaignInput & { campaignId: string; format?: unknown },
  ): Promise<CampaignView>;
}

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw badRequest(`${name} must be a whole number from ${min} to ${max}`);
  return v;
}

export function checkId(name: string, v: unknown): string {
  if (typeof v !== 'string' || !ID_PATTERN.test(v))
    throw badRequest(
      `${name} must be 1-200 characters of A-Z a-z 0-9 _ . : - (starting with a letter or digit)`,
    );
  return v;
}

function checkUser(v: unknown): string {
  if (typeof v !== 'string' || v.length < 1 || longerThan(v, 200))
    throw badRequest('userId must be a string of 1 to 200 characters');
  // Blank ids name no one, and would all be one "user" for maxPerUser.
  if (v.trim() === '') throw badRequest('userId must hold a character other than spaces');
  return v;
}

function checkName(v: unknown): string {
  if (typeof v !== 'string' || v.trim() === '' || longerThan(v, 200))
    throw badRequest('name must be a string of 1 to 200 characters, not only spaces');
  return v;
}

/**
 * A new campaign's fields, checked as the HTTP schema checks them: RPC and CLI callers skip that
 * schema, and an alphabet that was not a string was a 500 (TypeError) in parseFormat.
 */
function checkNewCampaign(input: CreateCampaignInput): CreateCampaignInput {
  checkId('id', input?.id);
  checkName(input.name);
  const f = input.format as Partial<Record<'length' | 'alphabet' | 'prefix', unknown>> | undefined;
  if (
    !f ||
    typeof f !== 'object' ||
    typeof f.alphabet !== 'string' ||
    (f.prefix !== undefined && typeof f.prefix !== 'string')
  )
    throw badRequest(
      'format must be {length, alphabet, prefix?}: length a whole number, alphabet a preset name or the characters themselves, prefix a string',
    );
  if (input.reservationTtlSeconds !== undefined)
    checkInt('reservationTtlSeconds', input.reservationTtlSeconds, 1, TTL_MAX_SECONDS);
  if (input.maxPerUser !== undefined) checkInt('maxPerUser', input.maxPerUser, 1, PG_INT_MAX);
  return input;
}

/** The settings a PATCH names, each checked; a 400 when it names none or tries the format. */
function checkCampaignChange(input: UpdateCampaignInput & { format?: unknown }): UpdateCampaignInput {
  if (input.format !== undefined)
    throw badRequest(
      "a campaign's format cannot change: its codes were made in it; create a new campaign for another format",
    );
  const change: UpdateCampaignInput = {};
  if (input.name !== undefined) change.name = checkName(input.name);
  if (input.reservationTtlSeconds !== undefined)
    change.reservationTtlSeconds = checkInt(
      'reservationTtlSeconds',
      input.reservationTtlSeconds,
      1,
      TTL_MAX_SECONDS,
    );
  if (input.maxPerUser !== undefined)
    change.maxPerUser =
      input.maxPerUser === null ? null : checkInt('maxPerUser', input.maxPerUser, 1, PG_INT_MAX);
  if (Object.keys(change).length === 0)
    throw badRequest(
      'send at least one of name, reservationTtlSeconds or maxPerUser (null removes the limit)',
    );
  return change;
}

export function createCodesService(deps: {
  campaigns: Campaigns;
  reservations: Reservations;
  metrics: CodesMetrics;
  log: Logger;
}): CodesService {
  const { campaigns, reservations, metrics, log } = deps;
  // Seed 004's DEBUG='titan:codes*' traced each operation; DEBUG=tessera:codes* shows these lines.
  const trace = (event: string, fields: Record<string, unknown>) => {
    if (log.isLevelEnabled('debug')) log.debug(fields, event);
  };
  return {
    reserve: (input) =>
      timed(metrics, 'reserve', async () => {
        const count = checkInt('count', input?.count, 1, RESERVE_MAX);
        const reserveId = input.reserveId === undefined ? undefined : checkId('reserveId', input.reserveId);
        const ttlSeconds =
          input.ttlSeconds === undefined
            ? undefined
            : checkInt('ttlSeconds', input.ttlSeconds, 1, TTL_MAX_SECONDS);
        const campaign = await campaigns.get(checkId('campaignId', input.campaignId));
        refuseBatchCampaign(campaign, 'reserve codes');
        if (campaign.maxPerUser !== null && count > campaign.maxPerUser)
          throw unprocessable(
            `campaign ${campaign.id} gives a user at most ${campaign.maxPerUser} code(s) (maxPerUser), so a reservation of ${count} could never be assigned: reserve at most ${campaign.maxPerUser}`,
          );
        const r = await reservations.reserve(campaign, { count, reserveId, ttlSeconds });
        trace('CODES_RESERVED', {
          campaign: campaign.id,
          reserveId: r.reserveId,
          count,
          expiresAt: r.expiresAt,
        });
        return r;
      }),
    assign: (input) =>
      timed(metrics, 'assign', async () => {
        const campaign = await campaigns.get(checkId('campaignId', input?.campaignId));
        refuseBatchCampaign(campaign, 'reserve and assign codes');
        const r = await reservations.assign(
          campaign,
          checkId('reserveId', input.reserveId),
          checkUser(input.userId),
        );
        trace('CODES_ASSIGNED', {
          campaign: campaign.id,
          reserveId: r.reserveId,
          userId: r.userId,
          count: r.codes.length,
        });
        return r;
      }),
    release: (input) =>
      timed(metrics, 'release', async () => {
        const campaign = await campaigns.get(checkId('campaignId', input?.campaignId));
        const reserveId = checkId('reserveId', input.reserveId);
        const r = await reservations.release(campaign, reserveId);
        trace('CODES_RELEASED', { campaign: campaign.id, reserveId, released: r.released });
        return r;
      }),
    getReservation: (input) =>
      timed(metrics, 'get_reservation', async () => {
        const campaign = await campaigns.get(checkId('campaignId', input?.campaignId));
        return reservations.get(campaign, checkId('reserveId', input.reserveId));
      }),
    getCampaign: (input) =>
      timed(metrics, 'get_campaign', async () => {
        const campaign = await campaigns.get(checkId('campaignId', input?.campaignId));
        await reservations.expireCampaign(campaign);
        return view(campaign, await campaigns.inventory(campaign));
      }),
    createCampaign: (input) =>
      timed(metrics, 'create_campaign', () => {
        // Made by the first signed POST /api/generate with seed 000's format; created by hand first
        // with another format, the webhook handed out codes that broke its 6-character A–Z0–9 promise.
        if (input?.id === BATCH_CAMPAIGN.id)
          throw conflict(
            `${BATCH_CAMPAIGN.id} is the campaign of POST /api/generate, made on its first call with 6-character A-Z0-9 codes; choose another id`,
          );
        return campaigns.create(checkNewCampaign(input));
      }),
    updateCampaign: (input) =>
      timed(metrics, 'update_campaign', async () => {
        const id = checkId('campaignId', input?.campaignId);
        // Its codes are handed out by the webhook alone, which has no TTL and no user to limit.
        if (id === BATCH_CAMPAIGN.id)
          throw conflict(`${id} is the campaign of POST /api/generate, whose settings are that route's`);
        const change = checkCampaignChange(input);
        const updated = await campaigns.update(id, change);
        // Settings that change what users may be given: worth a line an operator can find later.
        log.info({ campaign: id, change }, 'CODES_CAMPAIGN_UPDATED');
        return updated;
      }),
  };
}
