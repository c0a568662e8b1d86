// What one platform's codes module holds: built in setup(), used by routes, jobs and RPC.

import { Coalescer } from '../../kit/coalescer.ts';
import { type Queryable, UTC_TEXT_TYPES, utcIso } from '../../kit/db.ts';
import type { ModuleContext } from '../../kit/module.ts';
import { BATCH_CAMPAIGN, Campaigns } from './campaigns.ts';
import { type ExportLimits, Exports } from './exports.ts';
import { normalizeCode } from './format.ts';
import { Generator, STATE_ASSIGNED } from './generate.ts';
import { type CodesMetrics, createCodesMetrics } from './metrics.ts';
import { Reservations } from './reservations.ts';
import { type CodesService, createCodesService } from './service.ts';
import { Transfer } from './transfer.ts';

export interface CodeRecord {
  campaignId: string;
  code: string;
  state: 'available' | 'reserved' | 'assigned';
  reserveId: string | null;
  userId: string | null;
  createdAt: string;
  reservedAt: string | null;
  expiresAt: string | null;
  assignedAt: string | null;
}

export interface CodesState {
  campaigns: Campaigns;
  reservations: Reservations;
  generator: Generator;
  transfer: Transfer;
  /** The HTTP CSV exports: how many at once, and the cut of a client that stops reading. */
  exports: Exports;
  metrics: CodesMetrics;
  service: CodesService;
  lookup(campaign: Campaign, code: string): Promise<CodeRecord | null>;
  /** The codes assigned to `userId`, by code, a page at a time (`after`: the last code of the previous page). */
  codesOfUser(campaign: Campaign, userId: string, limit: number, after?: string): Promise<CodeRecord[]>;
  /** POST /api/generate: concurrent calls are coalesced into one INSERT. */
  webhookGenerate(count: number): Promise<string[]>;
}

export interface CodesOptions {
  /** Bounds of the HTTP CSV export (production: MAX_EXPORTS at once, cut after EXPORT_STALL_MS). */
  exports?: ExportLimits;
}

export function createCodesState(ctx: ModuleContext, options: CodesOptions = {}): CodesState {
  const campaigns = new Campaigns(ctx.pool);
  const metrics = createCodesMetrics(ctx.metrics.registry, () => campaigns.availableByCampaign());
  const reservations = new Reservations(ctx.pool, metrics, ctx.log);
  const generator = new Generator(ctx.pool, metrics);
  const transfer = new Transfer(ctx.pool, metrics);
  const csvExports = new Exports(transfer, ctx.log, ctx.stopping, options.exports);
  const service = createCodesService({ campaigns, reservations, metrics, log: ctx.log });
  const webhookBatches = new Coalescer<number, string[]>(
    async (_key, counts) => {
      const campaign = await campaigns.ensure(BATCH_CAMPAIGN);
      const total = counts.reduce((a, n) => a + n, 0);
      const codes = await generator.generateSmall(campaign, total, STATE_ASSIGNED);
      // Handed out as they are made: assigned, as the campaign's inventory counts them.
      metrics.assigned.inc({ campaign: campaign.id }, codes.length);
      let off = 0;
      return counts.map((n) => {
        const mine = codes.slice(off, off + n);
        off += n;
        return mine;
      });
    },
    { maxBatch: 64, maxInflight: 1 },
  );
  // GET of one code is the hottest read: concurrent lookups in a campaign share one query.
  const lookups = new Coalescer<Lookup, CodeRecord | null>(
    (_key, reqs) =>
      lookupMany(
        ctx.pool,
        reqs[0]!.campaign,
        reqs.map((r) => r.code),
      ),
    { maxBatch: 500, maxInflight: 1 },
  );
  return {
    campaigns,
    reservations,
    generator,
    transfer,
    exports: csvExports,
    metrics,
    service,
    webhookGenerate: (count) => webhookBatches.submit(BATCH_CAMPAIGN.id, count),
    lookup: (campaign, code) => lookups.submit(String(campaign.no), { campaign, code }),
    codesOfUser: (campaign, userId, limit, after) => codesOfUser(ctx.pool, campaign, userId, limit, after),
  };
}

type Campaign = Awaited<ReturnType<Campaigns['get']>>;
interface Lookup {
  campaign: Campaign;
  code: string;
}

interface CodeRow {
  code: string;
  state: number;
  live: boolean;
  reserve_id: string | null;
  user_id: string | null;
  /** The timestamps as UTC text (UTC_TEXT_TYPES), for utcIso. */
  created_at: string;
  reserved_at: string | null;
  expires_at: string | null;
  assigned_at: string | null;
}

/** What a CodeRecord is built from, with the timestamps as UTC text (UTC_TEXT_TYPES). */
const RECORD_COLUMNS = `code, state, NOT (state = 1 AND expires_at <= now()) AS live, reserve_id, user_id,
  created_at AT TIME ZONE 'UTC' AS created_at, reserved_at AT TIME ZONE 'UTC' AS reserved_at,
  expires_at AT TIME ZONE 'UTC' AS expires_at, assigned_at AT TIME ZONE 'UTC' AS assigned_at`;

/** The records of `codes` in one campaign, in the order asked (null where a code is not there). */
async function lookupMany(
  pool: Queryable,
  campaign: Campaign,
  codes: string[],
): Promise<(CodeRecord | null)[]> {
  const { rows } = await pool.query<CodeRow>({
    // Named: parsed and planned once per connection (GET of one code is a hot path).
    name: 'codes_lookup_many',
    text: `SELECT ${RECORD_COLUMNS} FROM codes WHERE campaign_no = $1 AND code = ANY($2::text[])`,
    values: [campaign.no, codes],
    types: UTC_TEXT_TYPES,
  });
  const found = new Map(rows.map((r) => [r.code, r]));
  return codes.map((code) => {
    const r = found.get(code);
    return r ? toRecord(campaign, r) : null;
  });
}

/** Through codes_by_user: a user's codes are few next to the campaign's, so sorting them is cheap. */
async function codesOfUser(
  pool: Queryable,
  campaign: Campaign,
  userId: string,
  limit: number,
  after = '',
): Promise<CodeRecord[]> {
  const { rows } = await pool.query<CodeRow>({
    text: `SELECT ${RECORD_COLUMNS} FROM codes
     WHERE campaign_no = $1 AND user_id = $2 AND code > $3 ORDER BY code LIMIT $4`,
    // As a lookup reads a code: `after` typed in the other case pages on instead of past the end.
    values: [campaign.no, userId, normalizeCode(campaign.format, after) ?? after, limit],
    types: UTC_TEXT_TYPES,
  });
  return rows.map((r) => toRecord(campaign, r));
}

function toRecord(campaign: Campaign, r: CodeRow): CodeRecord {
  // The lazy expiry check: a reservation past its TTL is reported available even before the
  // cron job has returned it to the pool.
  const state = r.state === 2 ? 'assigned' : r.state === 1 && r.live ? 'reserved' : 'available';
  const held = state !== 'available';
  return {
    campaignId: campaign.id,
    code: r.code,
    state,
    reserveId: held ? r.reserve_id : null,
    userId: r.user_id,
    createdAt: utcIso(r.created_at),
    reservedAt: held ? utcIso(r.reserved_at) : null,
    expiresAt: held ? utcIso(r.expires_at) : null,
    assignedAt: utcIso(r.assigned_at),
  };
}
