// Campaigns: one row each in codes_campaigns. The row's settings are cached per process and read
// again after CAMPAIGN_REFRESH_MS, so a PATCH made through another process applies here within
// that time; the inventory counters are read fresh.
import { randomBytes } from 'node:crypto';
import type { Pool, Queryable } from '../../kit/db.ts';
import { conflict, notFound } from '../../kit/errors.ts';
import { type CodeFormat, capacityOf, parseFormat } from './format.ts';
import { CodePermutation } from './permutation.ts';

export const DEFAULT_TTL_SECONDS = 900;

/** How long a process uses its cached copy of a campaign's settings before reading them again. */
export const CAMPAIGN_REFRESH_MS = 5_000;

export interface Campaign {
  no: number;
  id: string;
  name: string;
  format: CodeFormat;
  reservationTtlSeconds: number;
  maxPerUser: number | null;
  key: Buffer;
  createdAt: Date;
  permutation: CodePermutation;
}

export interface Inventory {
  available: number;
  reserved: number;
  assigned: number;
  total: number;
}

export interface CampaignView {
  id: string;
  name: string;
  format: { length: number; alphabet: string; preset: string; prefix: string };
  reservationTtlSeconds: number;
  maxPerUser: number | null;
  /** alphabet^length: how many distinct codes the format allows. */
  capacity: number;
  /** codes held / capacity; generation stops at 0.01. */
  density: number;
  inventory: Inventory;
  createdAt: string;
}

export interface CreateCampaignInput {
  id: string;
  name: string;
  format: { length: number; alphabet: string; prefix?: string };
  reservationTtlSeconds?: number;
  maxPerUser?: number;
}

/** What PATCH /api/campaigns/:id may change: the format is fixed once a campaign exists. */
export interface UpdateCampaignInput {
  name?: string;
  reservationTtlSeconds?: number;
  /** null removes the limit. */
  maxPerUser?: number | null;
}

interface Row {
  no: number;
  id: string;
  name: string;
  length: number;
  alphabet: string;
  alphabet_preset: string;
  prefix: string;
  reservation_ttl_seconds: number;
  max_per_user: number | null;
  fpe_key: Buffer;
  created_at: Date;
  available: number;
  reserved: number;
  assigned: number;
}

const COLUMNS = `no, id, name, length, alphabet, alphabet_preset, prefix, reservation_ttl_seconds, max_per_user,
  fpe_key, created_at, available, reserved, assigned`;

/** The codes reservation `r` still holds (the primary key, for each code it lists). */
const UNSWEPT_CODES = `(SELECT count(*) FROM codes k
    WHERE k.campaign_no = r.campaign_no AND k.code = ANY(r.codes) AND k.reserve_id = r.reserve_id
      AND k.state = 1)`;
/** Reservations past their TTL that no sweep has returned yet, of every campaign (as `r`). */
const EXPIRED_UNSWEPT = `codes_reservations r WHERE r.state = 'reserved' AND r.expires_at <= now()`;

/**
 * The lazy expiry check of every inventory read (campaign `c`): codes still held by reservations
 * past their TTL that no sweep has returned yet (the cron runs each minute). Reads move them from
 * reserved to available in the same statement, so in the same snapshot as the counters: a sweep
 * commits codes and counters together, so the figures add up whichever side of it a read falls,
 * and the read writes nothing. The per-reservation subquery keeps the plan to index probes
 * (codes_reservations_expiring_all, then the primary key for each code the reservation lists), so
 * the cost follows the expiries since the last sweep; a join let the planner merge against every
 * held code of the campaign instead.
 */
const UNSWEPT = `(SELECT coalesce(sum(${UNSWEPT_CODES}), 0)::bigint
  FROM ${EXPIRED_UNSWEPT} AND r.campaign_no = c.no) AS unswept`;

function fromRow(r: Row, before?: Campaign): Campaign {
  const format: CodeFormat = {
    length: r.length,
    alphabet: r.alphabet,
    preset: r.alphabet_preset as CodeFormat['preset'],
    prefix: r.prefix,
  };
  return {
    no: r.no,
    id: r.id,
    name: r.name,
    format,
    reservationTtlSeconds: r.reservation_ttl_seconds,
    maxPerUser: r.max_per_user,
    key: r.fpe_key,
    createdAt: r.created_at,
    // The key and format never change, so a refreshed copy keeps the permutation already built.
    permutation:
      before?.no === r.no ? before.permutation : new CodePermutation(r.fpe_key, r.alphabet, r.length),
  };
}

export function view(c: Campaign, inv: Inventory): CampaignView {
  const capacity = Number(capacityOf(c.format));
  return {
    id: c.id,
    name: c.name,
    format: {
      length: c.format.length,
      alphabet: c.format.alphabet,
      preset: c.format.preset,
      prefix: c.format.prefix,
    },
    reservationTtlSeconds: c.reservationTtlSeconds,
    maxPerUser: c.maxPerUser,
    capacity,
    density: inv.total / capacity,
    inventory: inv,
    createdAt: c.createdAt.toISOString(),
  };
}

const inventoryOf = ({
  available,
  reserved,
  assigned,
  unswept = 0,
}: Pick<Row, 'available' | 'reserved' | 'assigned'> & { unswept?: number }): Inventory => ({
  available: available + unswept,
  reserved: reserved - unswept,
  assigned,
  total: available + reserved + assigned,
});

/** Seed 000's default campaign behind POST /api/generate, made on first use. */
export const BATCH_CAMPAIGN = {
  id: 'batch-codes',
  name: 'Batch codes (POST /api/generate)',
  format: { length: 6, alphabet: 'alphanumeric' },
};

interface Cached {
  campaign: Campaign;
  loadedAt: number;
}

/**
 * Generating, importing or reserving in the webhook's campaign would mix an inventory into one
 * whose codes that route alone hands out (as assigned): a 409 that says where such codes belong.
 */
export function refuseBatchCampaign(c: Campaign, what: string): void {
  if (c.id === BATCH_CAMPAIGN.id)
    throw conflict(
      `${c.id} is the campaign of POST /api/generate, which alone hands out its codes: ${what} in a campaign of your own (POST /api/campaigns)`,
    );
}

function campaignNotFound(id: string) {
  return id === BATCH_CAMPAIGN.id
    ? notFound(`campaign ${id} does not exist yet: the first signed POST /api/generate makes it`)
    : notFound(`campaign ${id} not found: create it with POST /api/campaigns`);
}

export class Campaigns {
  private readonly cache = new Map<string, Cached>();
  /** Reads in progress, so the requests that find a copy stale at once share one query. */
  private readonly loading = new Map<string, Promise<Campaign>>();

  constructor(private readonly pool: Pool) {}

  async create(input: CreateCampaignInput): Promise<CampaignView> {
    const format = parseFormat(input.format);
    const { rows } = await this.pool.query<Row>(
      `INSERT INTO codes_campaigns (id, name, length, alphabet, alphabet_preset, prefix, reservation_ttl_seconds,
         max_per_user, fpe_key)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING RETURNING ${COLUMNS}`,
      [
        input.id,
        input.name,
        format.length,
        format.alphabet,
        format.preset,
        format.prefix,
        input.reservationTtlSeconds ?? DEFAULT_TTL_SECONDS,
        input.maxPerUser ?? null,
        randomBytes(16),
      ],
    );
    const row = rows[0];
    if (!row) throw conflict(`campaign ${input.id} already exists: choose another id`);
    const c = fromRow(row);
    this.remember(c);
    return view(c, inventoryOf(row));
  }

  /** Changes the given settings; 404 when unknown. Reservations already made keep their expiry. */
  async update(id: string, change: UpdateCampaignInput): Promise<CampaignView> {
    const { rows } = await this.pool.query<Row & { unswept: number }>(
      `UPDATE codes_campaigns c SET
         name = coalesce($2, name),
         reservation_ttl_seconds = coalesce($3, reservation_ttl_seconds),
         max_per_user = CASE WHEN $4 THEN $5 ELSE max_per_user END
       WHERE id = $1 RETURNING ${COLUMNS}, ${UNSWEPT}`,
      [
        id,
        change.name ?? null,
        change.reservationTtlSeconds ?? null,
        change.maxPerUser !== undefined,
        change.maxPerUser ?? null,
      ],
    );
    const row = rows[0];
    if (!row) throw campaignNotFound(id);
    const c = fromRow(row, this.cache.get(id)?.campaign);
    this.remember(c);
    return view(c, inventoryOf(row));
  }

  /** Creates the campaign if missing (the default batch-codes campaign), then returns it. */
  async ensure(input: CreateCampaignInput): Promise<Campaign> {
    if (this.cache.has(input.id)) return this.get(input.id);
    await this.create(input).catch((err) => {
      if ((err as { statusCode?: number }).statusCode !== 409) throw err;
    });
    return this.get(input.id);
  }

  /** The campaign's settings, at most CAMPAIGN_REFRESH_MS old; 404 when unknown. */
  get(id: string): Promise<Campaign> {
    const hit = this.cache.get(id);
    if (hit && performance.now() - hit.loadedAt < CAMPAIGN_REFRESH_MS) return Promise.resolve(hit.campaign);
    let loading = this.loading.get(id);
    if (!loading) {
      loading = this.load(id, hit?.campaign).finally(() => this.loading.delete(id));
      this.loading.set(id, loading);
    }
    return loading;
  }

  private async load(id: string, before?: Campaign): Promise<Campaign> {
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM codes_campaigns WHERE id = $1`, [id]);
    const row = rows[0];
    if (!row) throw campaignNotFound(id);
    const c = fromRow(row, before);
    this.remember(c);
    return c;
  }

  private remember(c: Campaign): void {
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(c.id, { campaign: c, loadedAt: performance.now() });
  }

  async inventory(c: Campaign, db: Queryable = this.pool): Promise<Inventory> {
    const { rows } = await db.query<Row & { unswept: number }>(
      `SELECT available, reserved, assigned, ${UNSWEPT} FROM codes_campaigns c WHERE no = $1`,
      [c.no],
    );
    return inventoryOf(rows[0]!);
  }

  /**
   * A page of campaigns by id. The expired, unswept reservations are read once for the page and
   * counted by campaign (as availableByCampaign does), not once per campaign as UNSWEPT would:
   * each of those reads walks every campaign's expired reservations, so a page of 1,000 took
   * ~0.9 s with 10,000 of them waiting for the cron.
   */
  async list(limit: number, after?: string): Promise<CampaignView[]> {
    const { rows } = await this.pool.query<Row & { unswept: number }>(
      `WITH page AS (SELECT ${COLUMNS} FROM codes_campaigns WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2)
       SELECT page.*, coalesce(u.unswept, 0) AS unswept
       FROM page
       LEFT JOIN (SELECT r.campaign_no, sum(${UNSWEPT_CODES})::bigint AS unswept FROM ${EXPIRED_UNSWEPT}
                    AND r.campaign_no IN (SELECT no FROM page)
                  GROUP BY r.campaign_no) u ON u.campaign_no = page.no
       ORDER BY page.id`,
      [after ?? null, limit],
    );
    return rows.map((r) => view(fromRow(r), inventoryOf(r)));
  }

  /**
   * For the codes_available gauge: every campaign (an alert on a campaign running out must see
   * each one; the first 1,000 by id once left the others out). The expired, unswept reservations
   * are read once and counted by campaign, not once per campaign as UNSWEPT does for one campaign:
   * with 5,000 campaigns the statement takes ~10 ms, and ~20 ms with 10,000 such reservations
   * waiting for the cron, where a scan per campaign took 4.7 s.
   */
  async availableByCampaign(): Promise<{ id: string; available: number }[]> {
    const { rows } = await this.pool.query<{ id: string; available: number }>(
      `SELECT c.id, c.available + coalesce(u.unswept, 0) AS available
       FROM codes_campaigns c
       LEFT JOIN (SELECT r.campaign_no, sum(${UNSWEPT_CODES})::bigint AS unswept FROM ${EXPIRED_UNSWEPT}
                  GROUP BY r.campaign_no) u ON u.campaign_no = c.no
       ORDER BY c.id`,
    );
    return rows;
  }
}
