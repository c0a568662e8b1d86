// Reserve, assign, release and expire. Why no code can reach two holders:
// - a code is picked only while available (`state = 3`, unused, or `state = 0`, back in the pool)
//   with FOR UPDATE SKIP LOCKED: a row another transaction is taking is skipped, and one it has
//   already taken fails the state re-check after the lock;
// - a reserveId is a primary key in codes_reservations, so the same id in two processes at once
//   serialises on the insert, and the second reads the first one's codes;
// - assign, release and expiry first lock the reservation row, then its codes, then the campaign
//   row; every transaction here takes the campaign row last, so these paths cannot deadlock.
// A reservation row lists its codes (codes_reservations.codes); the paths that change them reach
// them through that list and the primary key, and re-check `reserve_id` and `state` on each code.
// Codes are marked reserved in two places that must agree: reserveInTx here, and for batches of
// fresh ids the SQL function codes_reserve_unused (migrations/007_unused_codes.sql, body since 008).
// Throughput comes from the Coalescer (one transaction per batch of concurrent reserves of a
// campaign) and from allocation cursors. Unused codes (generated, never handed out) are taken in
// code order through the primary key, from the code after the last one this process took, and
// never below the campaign's unused_from; codes back in the pool (released, expired, imported)
// come after them, in seq order through the codes_available index, from this process's seq
// cursor. The cursors are only hints: a short scan falls back to scanning from unused_from and
// from the start of the pool, and a shortfall while the committed inventory has enough (codes
// other transactions hold) runs again (shortfall()), so a 409 means the campaign really is short.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Coalescer } from '../../kit/coalescer.ts';
import type { Pool, PoolClient, Queryable } from '../../kit/db.ts';
import { UTC_TEXT_TYPES, utcIso, withTransaction } from '../../kit/db.ts';
import { conflict, type HttpError, notFound } from '../../kit/errors.ts';
import type { Logger } from '../../kit/log.ts';
import type { Campaign } from './campaigns.ts';
import type { CodesMetrics } from './metrics.ts';

export interface ReserveRequest {
  count: number;
  reserveId?: string;
  ttlSeconds?: number;
}

export interface ReserveResult {
  reserveId: string;
  codes: string[];
  expiresAt: string;
}

export interface AssignResult {
  reserveId: string;
  codes: string[];
  userId: string;
  assignedAt: string;
}

export interface ReservationView {
  reserveId: string;
  state: 'reserved' | 'assigned' | 'released' | 'expired';
  /** The codes it holds, or held until it was released or expired. */
  codes: string[];
  userId: string | null;
  createdAt: string;
  expiresAt: string;
  assignedAt: string | null;
  /** When it was released or expired (for one past its TTL the cron has not swept yet: its expiry). */
  endedAt: string | null;
}

function reservationNotFound(campaign: Campaign, reserveId: string) {
  return notFound(
    `reservation ${reserveId} not found in campaign ${campaign.id}: use the reserveId reserve returned`,
  );
}

interface Swept {
  campaignNo: number;
  n: number;
}

/**
 * Returns expired reservations' codes to the pool, up to 10,000 reservations a call; the caller
 * updates the campaign counters last. Two statements (in the caller's transaction) on purpose:
 * after a burst of reservations expires at once, the statistics are stale and one statement
 * joining the expired set to codes was planned as a sequential scan of the whole codes table
 * (2.9 s per call with 10M codes); the ids as arrays are always joined through the index.
 * No ORDER BY: any 10,000 will do, and sorting every expired row to pick them cost more still.
 */
async function sweepExpired(db: Queryable, campaignNo?: number, reserveIds?: string[]): Promise<Swept[]> {
  const { rows: expired } = await db.query<{ campaign_no: number; reserve_id: string }>(
    `UPDATE codes_reservations SET state = 'expired', ended_at = expires_at
     WHERE (campaign_no, reserve_id) IN (
       SELECT campaign_no, reserve_id FROM codes_reservations
       WHERE state = 'reserved' AND expires_at <= now() AND ($1::int IS NULL OR campaign_no = $1)
         AND ($2::text[] IS NULL OR reserve_id = ANY($2::text[]))
       LIMIT 10000 FOR UPDATE SKIP LOCKED)
     RETURNING campaign_no, reserve_id`,
    [campaignNo ?? null, reserveIds ?? null],
  );
  if (expired.length === 0) return [];
  // Each expired reservation's codes come from its own row (up to RESERVE_MAX each), unnested here
  // rather than shipped to Node and back.
  const { rows } = await db.query<{ campaign_no: number; n: number }>(
    `WITH held AS (
       SELECT r.campaign_no, r.reserve_id, unnest(r.codes) AS code
       FROM unnest($1::int[], $2::text[]) AS x(campaign_no, reserve_id)
       JOIN codes_reservations r ON r.campaign_no = x.campaign_no AND r.reserve_id = x.reserve_id
     ), c AS (
       UPDATE codes SET state = 0, reserve_id = NULL, reserved_at = NULL, expires_at = NULL
       FROM held
       WHERE codes.campaign_no = held.campaign_no AND codes.code = held.code
         AND codes.reserve_id = held.reserve_id AND codes.state = 1
       RETURNING codes.campaign_no
     )
     SELECT campaign_no, count(*)::int AS n FROM c GROUP BY campaign_no`,
    [expired.map((r) => r.campaign_no), expired.map((r) => r.reserve_id)],
  );
  return rows.map((r) => ({ campaignNo: r.campaign_no, n: r.n }));
}

/** One campaign's expired reservations back to the pool, counters included; returns the codes returned. */
async function sweepCampaign(db: Queryable, campaignNo: number): Promise<number> {
  const n = (await sweepExpired(db, campaignNo)).reduce((a, x) => a + x.n, 0);
  if (n) await addCounters(db, campaignNo, { available: n, reserved: -n });
  return n;
}

async function addCounters(
  db: Queryable,
  campaignNo: number,
  d: { available?: number; reserved?: number; assigned?: number },
) {
  await db.query(
    `UPDATE codes_campaigns SET available = available + $2, reserved = reserved + $3, assigned = assigned + $4
     WHERE no = $1`,
    [campaignNo, d.available ?? 0, d.reserved ?? 0, d.assigned ?? 0],
  );
}

/**
 * A request this batch could not judge fairly, sent back to reserve() to go in a later batch: a
 * second request for the same reserveId with another count (a batch answers one request per id),
 * or a shortfall of codes that other transactions had locked and may yet give back. `final` is
 * its answer when it has been sent back RUN_AGAIN_MAX times.
 */
class RunAgain extends Error {
  constructor(
    readonly final: HttpError,
    /** Wait before the first resend (doubled on each later one): 0 for the next batch. */
    readonly backoffMs = 0,
  ) {
    super(final.message);
  }
}
/** Tries in all; a shortfall waits 10, 20, 40, 80 and 160 ms between them (0.31 s: a 10,000-code reserve takes ~0.3 s). */
const RUN_AGAIN_MAX = 6;
const SHORTFALL_BACKOFF_MS = 10;

/** The campaign's available counter as committed (with this transaction's own changes). */
async function committedAvailable(db: Queryable, campaignNo: number): Promise<number> {
  const { rows } = await db.query<{ available: number }>(
    'SELECT available FROM codes_campaigns WHERE no = $1',
    [campaignNo],
  );
  return rows[0]?.available ?? 0;
}

/**
 * The answer to a request that could not be given `count` codes. When the committed inventory has
 * enough, other transactions hold the rest for the moment (a reserve that may fail and give them
 * back): the request runs again a little later, so a 409 means the campaign really is short.
 */
function shortfall(campaign: Campaign, count: number, available: number): Error {
  if (available >= count)
    return new RunAgain(
      conflict(
        `campaign ${campaign.id} has ${available} code(s) available, but other requests held them while this one ran, so fewer than the ${count} asked for could be reserved: retry`,
      ),
      SHORTFALL_BACKOFF_MS,
    );
  return conflict(
    `campaign ${campaign.id} has ${Math.max(0, available)} code(s) available, fewer than the ${count} asked for: generate or import more codes, or ask for fewer`,
  );
}

interface Job extends ReserveRequest {
  campaign: Campaign;
}

/** The requests' reserveIds, counts and TTLs: the three arrays both reserve statements take. */
function perRequest(jobs: (Job & { reserveId: string })[]): [string[], number[], number[]] {
  return [
    jobs.map((j) => j.reserveId),
    jobs.map((j) => j.count),
    // Each request its own campaign copy: one read before a PATCH keeps the TTL it was asked under.
    jobs.map((j) => j.ttlSeconds ?? j.campaign.reservationTtlSeconds),
  ];
}

/**
 * A process raises its campaign's unused_from after taking this many unused codes, so a process
 * that starts (and scans from unused_from) walks past at most about this many taken codes.
 */
const ADVANCE_UNUSED_EVERY = 20_000;

export class Reservations {
  /** Per campaign: the seq after the last code this process took from the pool (state 0). */
  private readonly cursors = new Map<number, number>();
  /** Per campaign: the last unused code this process took (the next scan starts there). */
  private readonly unusedCursors = new Map<number, string>();
  /** Per campaign: unused codes taken since this process last raised unused_from. */
  private readonly takenSinceAdvance = new Map<number, number>();
  /** The chain of background advanceUnusedFrom calls, and the campaigns waiting in it. */
  private advancing: Promise<void> = Promise.resolve();
  private readonly advanceWaiting = new Set<number>();
  /**
   * Campaigns whose last advance found no unused code (unused_from NULL): a short scan for unused
   * codes there is the normal case (imports, released codes) and needs no new advance until a scan
   * finds unused codes again (a generation, here or in another process, lowers the bound).
   */
  private readonly noUnused = new Set<number>();
  private readonly coalescer: Coalescer<Job, ReserveResult>;

  constructor(
    private readonly pool: Pool,
    private readonly metrics: CodesMetrics,
    private readonly log: Logger,
  ) {
    this.coalescer = new Coalescer((_key, jobs) => this.reserveBatch(jobs), {
      maxBatch: 1000,
      maxInflight: 1,
    });
  }

  async reserve(campaign: Campaign, req: ReserveRequest): Promise<ReserveResult> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.coalescer.submit(String(campaign.no), { ...req, campaign });
      } catch (err) {
        if (!(err instanceof RunAgain)) throw err;
        if (attempt + 1 >= RUN_AGAIN_MAX) throw err.final;
        if (err.backoffMs) await sleep(err.backoffMs * 2 ** attempt);
      }
    }
  }

  /** Expiry across all campaigns (the cron job); returns codes returned to the pool. */
  async expireAll(idOf: (no: number) => Promise<string>): Promise<number> {
    let total = 0;
    for (;;) {
      const swept = await withTransaction(this.pool, async (client) => {
        const s = await sweepExpired(client);
        for (const { campaignNo, n } of s.sort((a, b) => a.campaignNo - b.campaignNo))
          await addCounters(client, campaignNo, { available: n, reserved: -n });
        return s;
      });
      for (const s of swept) this.metrics.expired.inc({ campaign: await idOf(s.campaignNo) }, s.n);
      const n = swept.reduce((a, s) => a + s.n, 0);
      total += n;
      if (n === 0) return total;
    }
  }

  /** The lazy check: run before reporting a campaign's inventory, so expired codes never count as reserved. */
  async expireCampaign(campaign: Campaign): Promise<number> {
    const n = await withTransaction(this.pool, (client) => sweepCampaign(client, campaign.no));
    if (n) this.metrics.expired.inc({ campaign: campaign.id }, n);
    return n;
  }

  private async reserveBatch(jobs: Job[]): Promise<(ReserveResult | Error)[]> {
    const campaign = jobs[0]!.campaign;
    // One request per reserveId: a duplicate with the same count (a retry) shares the first one's
    // answer; one with another count goes in a later batch, where it meets the first one's outcome.
    const ids = jobs.map((j) => j.reserveId ?? randomUUID());
    const firstOf = new Map<string, number>();
    const unique: number[] = [];
    const later = new Set<number>();
    ids.forEach((id, i) => {
      const first = firstOf.get(id);
      if (first === undefined) {
        firstOf.set(id, i);
        unique.push(i);
      } else if (jobs[first]!.count !== jobs[i]!.count) later.add(i);
    });
    const batch = unique.map((i) => ({ ...jobs[i]!, reserveId: ids[i]! }));
    // Fresh ids only (no reserveId given): one statement, one round trip, when the pool has enough.
    const tally = { expired: 0, reserved: 0 };
    const fresh = jobs.every((j) => j.reserveId === undefined) && (await this.reserveFresh(campaign, batch));
    if (fresh) for (const r of fresh) tally.reserved += r.codes.length;
    const results =
      fresh ||
      (await withTransaction(this.pool, (client) => this.reserveInTx(client, campaign, batch, tally)));
    // Codes of expired reservations this batch's sweep returned count as expired, as the cron's do.
    if (tally.expired) this.metrics.expired.inc({ campaign: campaign.id }, tally.expired);
    // Only codes reserved now: a repeat of a reserveId answers codes already counted.
    if (tally.reserved) this.metrics.reserved.inc({ campaign: campaign.id }, tally.reserved);
    const byId = new Map<string, ReserveResult | Error>();
    for (const [k, i] of unique.entries()) byId.set(ids[i]!, results[k]!);
    return ids.map((id, i) =>
      later.has(i)
        ? new RunAgain(
            conflict(`reservation ${id} is being reserved by other requests with other counts; retry`),
          )
        : byId.get(id)!,
    );
  }

  /**
   * The common case in one call of codes_reserve_unused (migrations 007, 008: one round trip, no
   * BEGIN/COMMIT, one plan per connection): a batch of requests under fresh ids, all satisfied from
   * the codes after this process's cursors (unused ones first, then the pool). It picks, records
   * the reservations, marks the codes and moves the counters, or, when those codes are too few,
   * changes nothing and answers null so the batch takes the general path.
   */
  private async reserveFresh(
    campaign: Campaign,
    jobs: (Job & { reserveId: string })[],
  ): Promise<ReserveResult[] | null> {
    const no = campaign.no;
    const total = jobs.reduce((a, j) => a + j.count, 0);
    const { rows } = await this.pool.query<{
      reserve_id: string;
      code: string;
      seq: number;
      expires_at: string;
      unused: boolean;
    }>({
      // Named: each connection parses it once (and the function plans its statement once). The
      // expiry comes as UTC text (UTC_TEXT_TYPES): a Date parsed per code and formatted back was
      // ~2.5% of the server's busy CPU under this load.
      name: 'codes_reserve_unused_utc',
      text: `SELECT reserve_id, code, seq, expires_at AT TIME ZONE 'UTC' AS expires_at, unused
        FROM codes_reserve_unused($1, $2, $3, $4, $5, $6, $7)`,
      types: UTC_TEXT_TYPES,
      values: [no, ...perRequest(jobs), this.unusedCursors.get(no) ?? null, this.cursors.get(no) ?? 0, total],
    });
    if (rows.length < total) return null;
    this.tookUnused(
      no,
      rows.filter((r) => r.unused).map((r) => r.code),
    );
    this.tookFromPool(
      no,
      rows.filter((r) => !r.unused),
    );
    const byId = new Map<string, { codes: string[]; expiresAt: string }>();
    rows.sort((a, b) => a.seq - b.seq);
    for (const r of rows) {
      let e = byId.get(r.reserve_id);
      if (!e) {
        e = { codes: [], expiresAt: utcIso(r.expires_at) };
        byId.set(r.reserve_id, e);
      }
      e.codes.push(r.code);
    }
    return jobs.map((j) => ({ reserveId: j.reserveId, ...byId.get(j.reserveId)! }));
  }

  /** Moves this process's unused cursor past `codes`, and now and then the campaign's unused_from. */
  private tookUnused(no: number, codes: string[]): void {
    if (codes.length === 0) return;
    this.noUnused.delete(no);
    let last = this.unusedCursors.get(no) ?? '';
    for (const c of codes) if (c > last) last = c;
    this.unusedCursors.set(no, last);
    const taken = (this.takenSinceAdvance.get(no) ?? 0) + codes.length;
    if (taken < ADVANCE_UNUSED_EVERY) {
      this.takenSinceAdvance.set(no, taken);
      return;
    }
    this.scheduleAdvance(no);
  }

  /** Moves this process's pool cursor past the seq of the last of `codes`. */
  private tookFromPool(no: number, codes: { seq: number }[]): void {
    let last = -1;
    for (const c of codes) if (c.seq > last) last = c.seq;
    if (last >= 0) this.cursors.set(no, last + 1);
  }

  /** advanceUnusedFrom in the background, one at a time, at most one waiting per campaign. */
  private scheduleAdvance(no: number): void {
    if (this.advanceWaiting.has(no)) return;
    this.advanceWaiting.add(no);
    this.takenSinceAdvance.set(no, 0);
    this.advancing = this.advancing
      .then(() => {
        this.advanceWaiting.delete(no);
        return this.advanceUnusedFrom(no);
      })
      .then(
        () => undefined,
        (err) => this.log.warn({ err, campaignNo: no }, 'CODES_UNUSED_FROM_FAILED'),
      );
  }

  /**
   * Raises the campaign's unused_from to its smallest unused code (NULL when it has none). The
   * read and the epoch are one snapshot; the write is a compare-and-set on the epoch, so a
   * generation that committed new unused codes in between (and lowered unused_from) wins. Codes
   * that concurrent reservations are taking still read as unused, so the bound stays below them.
   * Returns the new bound, or undefined when a generation got in between.
   */
  async advanceUnusedFrom(no: number): Promise<string | null | undefined> {
    const { rows } = await this.pool.query<{ epoch: string; first: string | null; from: string | null }>(
      `SELECT c.unused_epoch AS epoch, c.unused_from AS from,
         (SELECT k.code FROM codes k WHERE k.campaign_no = c.no AND k.code >= c.unused_from AND k.state = 3
          ORDER BY k.code LIMIT 1) AS first
       FROM codes_campaigns c WHERE c.no = $1`,
      [no],
    );
    const r = rows[0];
    let bound: string | null | undefined = r?.from ?? null;
    if (r && r.from !== null && r.first !== r.from) {
      const done = await this.pool.query(
        'UPDATE codes_campaigns SET unused_from = $3 WHERE no = $1 AND unused_epoch = $2',
        [no, r.epoch, r.first],
      );
      bound = done.rowCount ? r.first : undefined;
    }
    if (bound === null) this.noUnused.add(no);
    else this.noUnused.delete(no);
    return bound;
  }

  /**
   * Locks up to `total` available codes: unused ones first (in code order from this process's
   * cursor, then from the campaign's unused_from), then codes back in the pool (in seq order from
   * this process's seq cursor, then from the start, then after returning expired reservations).
   * A rescan from an earlier point returns again the rows this transaction already locked.
   */
  private async pick(
    client: PoolClient,
    no: number,
    total: number,
    sweep: () => Promise<number>,
  ): Promise<{ code: string; seq: number }[]> {
    const pickUnused = (from: string | null) =>
      client.query<{ code: string; seq: number }>(
        `SELECT code, seq FROM codes WHERE campaign_no = $1 AND state = 3
           AND code >= GREATEST($2::text COLLATE "C", (SELECT unused_from FROM codes_campaigns WHERE no = $1))
         ORDER BY code LIMIT $3 FOR UPDATE SKIP LOCKED`,
        [no, from, total],
      );
    const cursor = this.unusedCursors.get(no) ?? null;
    let unused = (await pickUnused(cursor)).rows;
    if (unused.length < total && cursor !== null) {
      this.unusedCursors.delete(no);
      unused = (await pickUnused(null)).rows;
    }
    this.tookUnused(
      no,
      unused.map((p) => p.code),
    );
    // Few or no unused codes left: let unused_from catch up, so later scans start past the taken
    // ones (unless the last advance found that the campaign has none).
    if (unused.length < total && !this.noUnused.has(no)) this.scheduleAdvance(no);
    if (unused.length === total) return unused;

    const want = total - unused.length;
    const seqCursor = this.cursors.get(no) ?? 0;
    const pickBack = (from: number) =>
      client.query<{ code: string; seq: number }>(
        `SELECT code, seq FROM codes WHERE campaign_no = $1 AND state = 0 AND seq >= $2
         ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED`,
        [no, from, want],
      );
    let back = (await pickBack(seqCursor)).rows;
    if (back.length < want && seqCursor > 0) back = (await pickBack(0)).rows;
    if (back.length < want && (await sweep()) > 0) back = (await pickBack(0)).rows;
    this.tookFromPool(no, back);
    if (back.length < want) this.cursors.set(no, 0);
    return [...unused, ...back];
  }

  /**
   * Undoes the claims of requests that came up short: a row this batch inserted goes; a released or
   * expired reservation it took over gets back what it was.
   */
  private async undoClaims(
    client: PoolClient,
    no: number,
    ids: string[],
    claims: Map<string, { prior: unknown }>,
  ): Promise<void> {
    const added = ids.filter((id) => claims.get(id)?.prior == null);
    const priors = ids.map((id) => claims.get(id)?.prior).filter((p) => p != null);
    if (added.length)
      await client.query(
        'DELETE FROM codes_reservations WHERE campaign_no = $1 AND reserve_id = ANY($2::text[])',
        [no, added],
      );
    if (priors.length)
      await client.query(
        `UPDATE codes_reservations r SET state = p.state, count = p.count, user_id = p.user_id,
           created_at = p.created_at, expires_at = p.expires_at, assigned_at = p.assigned_at, ended_at = p.ended_at
         FROM jsonb_populate_recordset(NULL::codes_reservations, $2::jsonb) p
         WHERE r.campaign_no = $1 AND r.reserve_id = p.reserve_id`,
        [no, JSON.stringify(priors)],
      );
  }

  private async reserveInTx(
    client: PoolClient,
    campaign: Campaign,
    jobs: (Job & { reserveId: string })[],
    /** Set to the codes the sweeps returned and the codes reserved, read once the transaction commits. */
    tally: { expired: number; reserved: number },
  ): Promise<(ReserveResult | Error)[]> {
    const no = campaign.no;
    let expired = 0;
    const sweep = async (ids?: string[]) => {
      const n = (await sweepExpired(client, no, ids)).reduce((a, s) => a + s.n, 0);
      expired += n;
      return n;
    };
    // A reserveId may name an expired reservation whose codes still carry it: these ids' own. A
    // sweep of the campaign takes any 10,000 expired reservations, so with more waiting unswept
    // the named one could stay 'reserved' and its retry was answered with its expired codes.
    await sweep(jobs.map((j) => j.reserveId));

    // A released or expired reservation is taken over in place; `prior` keeps what it was, to put
    // back if this request comes up short (a failed reserve must not erase its history).
    const claimed = await client.query<{ reserve_id: string; expires_at: Date; prior: unknown }>(
      `WITH prior AS (
         SELECT reserve_id, to_jsonb(p) AS row FROM codes_reservations p
         WHERE campaign_no = $1 AND reserve_id = ANY($2::text[]) AND state IN ('released', 'expired')
       ), claimed AS (
         INSERT INTO codes_reservations AS r (campaign_no, reserve_id, state, count, expires_at)
         SELECT $1, x.id, 'reserved', x.n, now() + make_interval(secs => x.ttl)
         FROM unnest($2::text[], $3::int[], $4::int[]) AS x(id, n, ttl)
         -- In id order: two processes claiming the same ids in other orders would wait on each other.
         ORDER BY x.id COLLATE "C"
         ON CONFLICT (campaign_no, reserve_id) DO UPDATE
           SET state = 'reserved', count = EXCLUDED.count, expires_at = EXCLUDED.expires_at, created_at = now(),
               user_id = NULL, assigned_at = NULL, ended_at = NULL
           WHERE r.state IN ('released', 'expired')
         RETURNING reserve_id, expires_at, (xmax = 0) AS inserted
       )
       SELECT c.reserve_id, c.expires_at, CASE WHEN NOT c.inserted THEN p.row END AS prior
       FROM claimed c LEFT JOIN prior p USING (reserve_id)`,
      [no, ...perRequest(jobs)],
    );
    const fresh = new Map(claimed.rows.map((r) => [r.reserve_id, r]));
    const results: (ReserveResult | Error | undefined)[] = new Array(jobs.length);

    // The same reserveId again: answer with the codes it already holds.
    const again = jobs.filter((j) => !fresh.has(j.reserveId)).map((j) => j.reserveId);
    if (again.length) {
      const { rows } = await client.query<{ reserve_id: string; expires_at: Date; codes: string[] }>(
        // A reserved one past its TTL is not held, though still marked so (its row was locked, so
        // the sweep above skipped it): answered, its codes would be someone else's next.
        `SELECT reserve_id, expires_at, codes FROM codes_reservations
         WHERE campaign_no = $1 AND reserve_id = ANY($2::text[])
           AND (state = 'assigned' OR (state = 'reserved' AND expires_at > now()))`,
        [no, again],
      );
      const held = new Map(rows.map((r) => [r.reserve_id, r]));
      jobs.forEach((j, i) => {
        if (fresh.has(j.reserveId)) return;
        const h = held.get(j.reserveId);
        results[i] = !h
          ? conflict(`reservation ${j.reserveId} is being changed by another request; retry`)
          : h.codes.length !== j.count
            ? // Not a retry of the same request: answering its codes would look like success.
              conflict(
                `reservation ${j.reserveId} already holds ${h.codes.length} code(s), not ${j.count}: repeat a reserve with the count it asked for, or use a new reserveId`,
              )
            : { reserveId: j.reserveId, codes: h.codes, expiresAt: h.expires_at.toISOString() };
      });
    }

    const wanted = jobs.filter((j) => fresh.has(j.reserveId));
    const total = wanted.reduce((a, j) => a + j.count, 0);
    const picked = total > 0 ? await this.pick(client, no, total, sweep) : [];
    // Short: what the campaign holds available as committed (its counter, plus what this batch's
    // sweep returned). More than was picked means other transactions hold rows they may give back.
    const available = picked.length < total ? (await committedAvailable(client, no)) + expired : 0;
    // All-or-nothing per request, first come first served.
    const codes: string[] = [];
    const owners: string[] = [];
    const expiries: Date[] = [];
    const dropped: string[] = [];
    let next = 0;
    jobs.forEach((j, i) => {
      const claim = fresh.get(j.reserveId);
      if (!claim) return;
      if (j.count > picked.length - next) {
        dropped.push(j.reserveId);
        results[i] = shortfall(campaign, j.count, available - next);
        return;
      }
      const mine = picked.slice(next, next + j.count).map((p) => p.code);
      next += j.count;
      for (const c of mine) {
        codes.push(c);
        owners.push(j.reserveId);
        expiries.push(claim.expires_at);
      }
      results[i] = { reserveId: j.reserveId, codes: mine, expiresAt: claim.expires_at.toISOString() };
    });
    if (dropped.length) await this.undoClaims(client, no, dropped, fresh);
    if (codes.length)
      await client.query(
        `WITH x AS (
           SELECT * FROM unnest($2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY AS x(code, rid, exp, ord)
         ), held AS (
           UPDATE codes_reservations r SET codes = g.codes
           FROM (SELECT rid, array_agg(code ORDER BY ord) AS codes FROM x GROUP BY rid) g
           WHERE r.campaign_no = $1 AND r.reserve_id = g.rid
         )
         UPDATE codes SET state = 1, reserve_id = x.rid, reserved_at = now(), expires_at = x.exp
         FROM x WHERE codes.campaign_no = $1 AND codes.code = x.code`,
        [no, codes, owners, expiries],
      );
    const delta = codes.length - expired;
    if (delta !== 0) await addCounters(client, no, { available: -delta, reserved: delta });
    tally.expired = expired;
    tally.reserved = codes.length;
    return results as (ReserveResult | Error)[];
  }

  async assign(campaign: Campaign, reserveId: string, userId: string): Promise<AssignResult> {
    const result = await withTransaction(this.pool, async (client) => {
      const no = campaign.no;
      // maxPerUser is read here, not from the cached campaign: a PATCH through another process
      // applies to the next assign, not CAMPAIGN_REFRESH_MS later.
      const { rows } = await client.query<{
        assigned_at: Date;
        codes: string[];
        max_per_user: number | null;
      }>(
        `UPDATE codes_reservations SET state = 'assigned', user_id = $3, assigned_at = now()
         WHERE campaign_no = $1 AND reserve_id = $2 AND state = 'reserved' AND expires_at > now()
         RETURNING assigned_at, codes, (SELECT max_per_user FROM codes_campaigns WHERE no = $1)`,
        [no, reserveId, userId],
      );
      if (!rows[0]) {
        const prior = await client.query<{
          state: string;
          user_id: string | null;
          assigned_at: Date | null;
          codes: string[];
        }>(
          'SELECT state, user_id, assigned_at, codes FROM codes_reservations WHERE campaign_no = $1 AND reserve_id = $2',
          [no, reserveId],
        );
        const p = prior.rows[0];
        if (p?.state === 'assigned' && p.user_id === userId) {
          // Idempotent: the same assign again answers the same.
          const codes = [...p.codes].sort();
          return { reserveId, codes, userId, assignedAt: p.assigned_at!.toISOString(), fresh: 0 };
        }
        // Each case says its own way out: "reserve first" read as nonsense to one who had.
        const why = !p
          ? 'no such reservation: reserve codes first and assign with the reserveId reserve returned'
          : p.state === 'assigned'
            ? 'it is already assigned to another user, and an assignment is final: reserve new codes for this user'
            : p.state === 'released'
              ? 'it was released and its codes went back to the pool: reserve again'
              : 'it expired and its codes went back to the pool: reserve again (a longer ttlSeconds gives more time to assign)';
        throw conflict(`cannot assign reservation ${reserveId} of campaign ${campaign.id}: ${why}`);
      }
      const maxPerUser = rows[0].max_per_user;
      if (maxPerUser !== null) {
        // Serialise assigns of one user in this campaign so two at once cannot both pass the limit.
        await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [no, userId]);
        const held = await client.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM codes WHERE campaign_no = $1 AND user_id = $2',
          [no, userId],
        );
        const count = (
          await client.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM codes
             WHERE campaign_no = $1 AND code = ANY($3::text[]) AND reserve_id = $2 AND state = 1`,
            [no, reserveId, rows[0].codes],
          )
        ).rows[0]!.n;
        if (held.rows[0]!.n + count > maxPerUser)
          throw conflict(
            `assigning reservation ${reserveId} (${count} code(s)) would give user ${userId} ${held.rows[0]!.n + count} code(s) of campaign ${campaign.id}, who holds ${held.rows[0]!.n}; maxPerUser is ${maxPerUser}`,
          );
      }
      const updated = await client.query<{ code: string }>(
        // An assigned code no longer expires: its reservation's expiry, kept, read as if it lapsed.
        `UPDATE codes SET state = 2, user_id = $3, assigned_at = $4, expires_at = NULL
         WHERE campaign_no = $1 AND code = ANY($5::text[]) AND reserve_id = $2 AND state = 1 RETURNING code`,
        [no, reserveId, userId, rows[0].assigned_at, rows[0].codes],
      );
      const n = updated.rows.length;
      if (n) await addCounters(client, no, { reserved: -n, assigned: n });
      return {
        reserveId,
        codes: updated.rows.map((r) => r.code).sort(),
        userId,
        assignedAt: rows[0].assigned_at.toISOString(),
        fresh: n,
      };
    });
    if (result.fresh) this.metrics.assigned.inc({ campaign: campaign.id }, result.fresh);
    const { fresh: _fresh, ...answer } = result;
    return answer;
  }

  /** One reservation as it stands; one past its TTL reads expired before the cron has swept it. */
  async get(campaign: Campaign, reserveId: string): Promise<ReservationView> {
    const { rows } = await this.pool.query<{
      lapsed: boolean;
      state: ReservationView['state'];
      codes: string[];
      user_id: string | null;
      created_at: Date;
      expires_at: Date;
      assigned_at: Date | null;
      ended_at: Date | null;
    }>(
      `SELECT state = 'reserved' AND expires_at <= now() AS lapsed, state, codes, user_id, created_at,
         expires_at, assigned_at, ended_at
       FROM codes_reservations WHERE campaign_no = $1 AND reserve_id = $2`,
      [campaign.no, reserveId],
    );
    const r = rows[0];
    if (!r) throw reservationNotFound(campaign, reserveId);
    const endedAt = r.ended_at ?? (r.lapsed ? r.expires_at : null);
    return {
      reserveId,
      state: r.lapsed ? 'expired' : r.state,
      codes: [...r.codes].sort(),
      userId: r.user_id,
      createdAt: r.created_at.toISOString(),
      expiresAt: r.expires_at.toISOString(),
      assignedAt: r.assigned_at?.toISOString() ?? null,
      endedAt: endedAt?.toISOString() ?? null,
    };
  }

  async release(campaign: Campaign, reserveId: string): Promise<{ released: number }> {
    let expired = 0;
    const released = await withTransaction(this.pool, async (client) => {
      const no = campaign.no;
      const { rows } = await client.query<{ codes: string[] }>(
        `UPDATE codes_reservations SET state = 'released', ended_at = now()
         WHERE campaign_no = $1 AND reserve_id = $2 AND state = 'reserved' AND expires_at > now()
         RETURNING codes`,
        [no, reserveId],
      );
      if (!rows[0]) {
        const prior = await client.query<{ state: string }>(
          'SELECT state FROM codes_reservations WHERE campaign_no = $1 AND reserve_id = $2',
          [no, reserveId],
        );
        if (!prior.rows[0]) throw reservationNotFound(campaign, reserveId);
        // Past its TTL, not swept yet: it expired, as GET already says, and answers as it will once
        // the cron has swept it (released 0), its codes counted expired rather than released.
        if (prior.rows[0].state === 'reserved') expired = await sweepCampaign(client, no);
        return 0; // already released, expired or assigned: nothing to return
      }
      const updated = await client.query(
        `UPDATE codes SET state = 0, reserve_id = NULL, reserved_at = NULL, expires_at = NULL
         WHERE campaign_no = $1 AND code = ANY($3::text[]) AND reserve_id = $2 AND state = 1`,
        [no, reserveId, rows[0].codes],
      );
      const n = updated.rowCount ?? 0;
      if (n) await addCounters(client, no, { available: n, reserved: -n });
      return n;
    });
    if (released) this.metrics.released.inc({ campaign: campaign.id }, released);
    if (expired) this.metrics.expired.inc({ campaign: campaign.id }, expired);
    return { released };
  }
}
