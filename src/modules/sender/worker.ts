// The send engine: durable chunk jobs with leases and per-recipient state.
//
// Invariants
// - A chunk (CHUNK_SIZE consecutive recipient ids) is run by one job at a time: the job claims the
//   chunk row (state running, owner, lease) and a heartbeat extends the lease every 2 s.
// - A recipient is marked `sending` (attempts + 1) in one UPDATE before its provider call, and its
//   outcome is written with the sub-batch in one statement; a recipient is never claimed twice
//   while it is `sending`.
// - A worker killed mid-chunk leaves its chunk `running` with a lease that runs out; the sweeper in
//   any worker takes the chunk back and decides for each recipient left in `sending`:
//     mock, webhook: back to pending and sent again with the same idempotency key (batch:recipient,
//                    the webhook-id), so the receiver keeps exactly one;
//     email:         SMTP has no idempotency key, so the recipient is marked failed with reason
//                    "interrupted" rather than risk a second e-mail (at most once wins over at least once).
// - Pause and cancel are seen within 200 ms, waiting or sending: a sub-batch being sent looks at
//   the batch every 200 ms too and leaves the messages it has not started for later (back to
//   `pending`, the attempt not counted), so only the messages already at the provider still go out.
// - A worker shutting down (SIGTERM) stops its chunks the same way once graphile-worker's grace has
//   passed, and hands each back to the queue for another worker at once.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool, Queryable } from '../../kit/db.ts';
import { withTransaction } from '../../kit/db.ts';
import type { JobContext } from '../../kit/jobs.ts';
import type { Logger } from '../../kit/log.ts';
import type { ModuleContext } from '../../kit/module.ts';
import { type Channel, type ChannelSpec, createChannel, type OutMessage, SendError } from './channels.ts';
import { type CodesService, codeAssignError, codeReservationError } from './codes.ts';
import type { SenderMetrics } from './metrics.ts';
import { giveBack, type Limit, take } from './ratelimit.ts';
import { loadChannelSpec } from './send-configs.ts';
import { render, type Template } from './template.ts';
import { unsubscribeToken } from './unsubscribe.ts';

declare module '../../kit/jobs.ts' {
  interface JobPayloads {
    'sender:start': { batchId: string };
    'sender:chunk': { batchId: string; no: number };
    'sender:cancel': { batchId: string };
  }
}

export const CHUNK_SIZE = 500;
/** Batches this large refresh the recipients' statistics when they start. */
const ANALYZE_FROM = 10_000;
const SUB_BATCH = 200;
/** The mock provider answers in-process, so its sub-batch is a whole chunk: fewer round trips. */
const MOCK_SUB_BATCH = CHUNK_SIZE;
/** Long enough to ride out a slow, overloaded database; a killed worker's chunks wait this long. */
const LEASE_SECONDS = 20;
const HEARTBEAT_MS = 2000;
const SWEEP_MS = 2000;
/** A retry further away than this gives the worker slot back and re-queues the chunk for later. */
const MAX_INLINE_WAIT_MS = 2000;
const STATE_POLL_MS = 200;

export const INTERRUPTED =
  'interrupted: the worker stopped during the SMTP call; not re-sent, because SMTP cannot deduplicate and a second e-mail is worse than none';

/** Queues a job for every unfinished chunk (job_key dedupes a chunk already waiting in the queue). */
export async function enqueueChunks(db: Queryable, batchId: string, no?: number, runAt?: Date) {
  await db.query(
    `SELECT graphile_worker.add_job('sender:chunk', json_build_object('batchId', batch_id, 'no', no),
       run_at => $3, max_attempts => 25, job_key => 'sender:chunk:' || batch_id || ':' || no)
     FROM sender_chunks WHERE batch_id = $1 AND state <> 'done' AND ($2::int IS NULL OR no = $2)`,
    [batchId, no ?? null, runAt ?? null],
  );
}

/**
 * Completes a sending batch whose chunks are all done (failed when nothing was sent and something
 * failed); undefined when it is not sending or has work left. Called by the chunk that finishes
 * last, and by resume: a batch paused just as its last chunk finished has nothing left to run.
 */
export async function completeIfDone(db: Queryable, batchId: string) {
  const { rows } = await db.query<{ state: string; sent: number; failed: number }>(
    `UPDATE sender_batches
     SET state = CASE WHEN sent = 0 AND failed > 0 THEN 'failed' ELSE 'completed' END,
         error = CASE WHEN sent = 0 AND failed > 0 THEN
           CASE WHEN suppressed = 0 THEN 'every recipient failed'
                ELSE format('nothing was sent: %s failed, %s suppressed', failed, suppressed) END END,
         finished_at = now(), updated_at = now()
     WHERE id = $1 AND state = 'sending'
       AND NOT EXISTS (SELECT 1 FROM sender_chunks WHERE batch_id = $1 AND state <> 'done')
     RETURNING state, sent, failed`,
    [batchId],
  );
  return rows[0];
}

/** Exponential backoff with jitter: 0.5–1 × base × 2^(attempt-1), at most a minute. */
export function backoffSeconds(attempt: number, baseMs: number): number {
  const base = Math.min(60, (baseMs / 1000) * 2 ** (attempt - 1));
  return base * (0.5 + Math.random() / 2);
}

interface BatchForSend {
  id: string;
  account_id: string;
  /** The API key (or user) that created the batch: the per-key rate limit's key. */
  created_by: string | null;
  state: string;
  channel: string;
  send_config_id: string | null;
  channel_options: Record<string, unknown>;
  template: Template;
  rate_per_second: number | null;
  max_attempts: number;
  code_campaign: string | null;
  config_rate: number | null;
}

interface Claimed {
  id: number;
  address: string;
  variables: Record<string, unknown> | null;
  attempts: number;
  code: string | null;
  suppressed: boolean;
}

interface Outcome {
  id: number;
  state: 'sent' | 'pending' | 'failed' | 'suppressed';
  error: string | null;
  delay: number | null;
  code: string | null;
  /** The code was assigned to the address before the send: it is theirs whatever the send did. */
  assigned?: boolean;
}

export class SendEngine {
  private readonly channels = new Map<string, Channel>();
  private sweeper?: NodeJS.Timeout;
  private readonly pool: Pool;
  private readonly log: Logger;
  private readonly codes;

  constructor(
    private readonly ctx: ModuleContext,
    private readonly metrics: SenderMetrics,
  ) {
    this.pool = ctx.pool;
    this.log = ctx.log;
    this.codes = ctx.rpc.client<CodesService>('codes');
  }

  register(): void {
    this.ctx.jobs.define({ name: 'sender:start', run: (p) => this.start(p.batchId), maxAttempts: 10 });
    this.ctx.jobs.define({ name: 'sender:chunk', run: (p, job) => this.chunk(p, job), maxAttempts: 25 });
    this.ctx.jobs.define({ name: 'sender:cancel', run: (p) => this.cancelIdle(p.batchId), maxAttempts: 10 });
  }

  get retryBaseMs(): number {
    return this.ctx.config.senderRetryBaseMs;
  }

  startSweeper(): void {
    this.sweeper = setInterval(() => {
      if ((this.pool as unknown as { ending?: boolean }).ending) return clearInterval(this.sweeper);
      this.sweep().catch((err) => this.log.warn({ err }, 'SENDER_SWEEP_FAILED'));
    }, SWEEP_MS);
    this.sweeper.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.allSettled([...this.channels.values()].map((c) => c.close()));
    this.channels.clear();
  }

  // --- jobs ----------------------------------------------------------------------------------

  /** queued → sending: writes the chunk rows and queues one job per chunk, in one transaction. */
  async start(batchId: string) {
    // Fresh statistics before a large batch runs: right after a big upload the planner still
    // thinks the table is small and may scan it whole for every sub-batch's claim (seen: 3× the
    // CPU per message on a 100,000-recipient batch). ANALYZE samples, so it is cheap, but small
    // batches (many a second, perhaps) skip it: they cannot skew the statistics.
    const { rows: size } = await this.pool.query<{ total: number }>(
      'SELECT total FROM sender_batches WHERE id = $1',
      [batchId],
    );
    if ((size[0]?.total ?? 0) >= ANALYZE_FROM) await this.pool.query('ANALYZE sender_recipients');
    const total = await withTransaction(this.pool, async (c) => {
      const { rows } = await c.query<{ total: number }>(
        `UPDATE sender_batches SET state = 'sending', started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1 AND state = 'queued' RETURNING total`,
        [batchId],
      );
      if (!rows[0]) return null;
      await c.query(
        `INSERT INTO sender_chunks (batch_id, no, from_id, to_id)
         SELECT $1, g / $2, g + 1, least(g + $2, $3) FROM generate_series(0, $3 - 1, $2) AS g
         ON CONFLICT DO NOTHING`,
        [batchId, CHUNK_SIZE, rows[0].total],
      );
      await enqueueChunks(c, batchId);
      return rows[0].total;
    });
    if (total !== null) this.log.info({ batchId, total }, 'BATCH_STARTED');
    return { total };
  }

  async chunk(p: { batchId: string; no: number }, job: JobContext) {
    const owner = `${process.pid}:${randomUUID()}`;
    const { rows } = await this.pool.query<{ from_id: number; to_id: number }>(
      `UPDATE sender_chunks SET state = 'running', owner = $3, lease_until = now() + make_interval(secs => $4)
       WHERE batch_id = $1 AND no = $2 AND state = 'pending' RETURNING from_id, to_id`,
      [p.batchId, p.no, owner, LEASE_SECONDS],
    );
    if (!rows[0]) return { skipped: 'chunk is done or held by another worker' };
    const run = new ChunkRun(this, p.batchId, p.no, rows[0].from_id, rows[0].to_id, owner, job.signal);
    const heartbeat = setInterval(() => {
      this.pool
        .query(
          `UPDATE sender_chunks SET lease_until = now() + make_interval(secs => $4)
           WHERE batch_id = $1 AND no = $2 AND owner = $3 AND state = 'running'`,
          [p.batchId, p.no, owner, LEASE_SECONDS],
        )
        .then((r) => {
          if (!r.rowCount) run.lost = true;
        })
        .catch((err) => job.log.warn({ err }, 'SENDER_HEARTBEAT_FAILED'));
    }, HEARTBEAT_MS);
    try {
      return await run.run();
    } catch (err) {
      await this.releaseChunk(p.batchId, p.no, owner).catch(() => undefined);
      throw err;
    } finally {
      clearInterval(heartbeat);
    }
  }

  /**
   * The cancel job: cancels every pending recipient outside the chunks a worker is running, and
   * marks the other chunks done. A running chunk may have a sub-batch at the provider whose rows
   * are still `pending` (an idempotent channel's claim leaves them so); cancelling those here would
   * record delivered messages as cancelled, so that chunk's own run cancels its rest once it has
   * recorded what it sent. The chunk rows are locked first, so none starts or stops running between
   * the two updates.
   */
  async cancelIdle(batchId: string) {
    const withCodes = await withTransaction(this.pool, async (db) => {
      const { rows: chunks } = await db.query<{ from_id: number; to_id: number; state: string }>(
        'SELECT from_id, to_id, state FROM sender_chunks WHERE batch_id = $1 ORDER BY no FOR UPDATE',
        [batchId],
      );
      const busy = chunks.filter((c) => c.state === 'running');
      const ids = await this.cancelPending(
        db,
        batchId,
        'NOT EXISTS (SELECT 1 FROM unnest($2::int[], $3::int[]) AS k(f, t) WHERE r.id BETWEEN k.f AND k.t)',
        [busy.map((c) => c.from_id), busy.map((c) => c.to_id)],
      );
      await db.query(`UPDATE sender_chunks SET state = 'done' WHERE batch_id = $1 AND state = 'pending'`, [
        batchId,
      ]);
      return ids;
    });
    await this.releaseCodes(batchId, withCodes);
  }

  /** A chunk run's end under a cancelled batch: its pending recipients are cancelled and counted. */
  async cancelRest(batchId: string, range: [number, number]) {
    await this.releaseCodes(
      batchId,
      await this.cancelPending(this.pool, batchId, 'r.id BETWEEN $2 AND $3', range),
    );
  }

  /** Cancels and counts the batch's pending recipients that match `where`; returns those holding a code. */
  private async cancelPending(db: Queryable, batchId: string, where: string, params: unknown[]) {
    const { rows } = await db.query<{ id: number }>(
      `WITH c AS (
         UPDATE sender_recipients r SET state = 'cancelled', next_attempt_at = NULL
         WHERE r.batch_id = $1 AND r.state = 'pending' AND ${where}
         RETURNING r.id, r.code),
       b AS (UPDATE sender_batches SET cancelled = cancelled + (SELECT count(*) FROM c), updated_at = now() WHERE id = $1)
       SELECT id FROM c WHERE code IS NOT NULL`,
      [batchId, ...params],
    );
    return rows.map((r) => r.id);
  }

  /** Cancelled recipients' reserved codes go back to the campaign (after the cancel committed). */
  private async releaseCodes(batchId: string, recipientIds: number[]) {
    if (recipientIds.length === 0) return;
    const batch = await this.loadBatch(batchId);
    if (batch?.code_campaign) for (const id of recipientIds) await this.releaseCode(batch, id);
  }

  // --- recovery --------------------------------------------------------------------------------

  /** Takes back chunks whose worker stopped renewing the lease (killed, hung) and queues them again. */
  async sweep(): Promise<number> {
    let recovered = 0;
    // One chunk per transaction: the lease is taken back, its orphans settled and its job queued
    // together, so a failure half-way leaves the chunk to the next sweep instead of stranded.
    for (;;) {
      const done = await withTransaction(this.pool, async (db) => {
        const { rows } = await db.query<{ batch_id: string; no: number; from_id: number; to_id: number }>(
          `SELECT batch_id, no, from_id, to_id FROM sender_chunks
           WHERE state = 'running' AND lease_until < now() LIMIT 1 FOR UPDATE SKIP LOCKED`,
        );
        const c = rows[0];
        if (!c) return true;
        await db.query(
          `UPDATE sender_chunks SET state = 'pending', owner = NULL, lease_until = NULL WHERE batch_id = $1 AND no = $2`,
          [c.batch_id, c.no],
        );
        const { resent, failed, state } = await this.settleOrphans(db, c.batch_id, c.from_id, c.to_id);
        // A cancelled batch's cancel job left this chunk's recipients to its run, which is gone:
        // a new run of the chunk claims nothing and cancels them.
        if (state === 'sending' || state === 'cancelled') await enqueueChunks(db, c.batch_id, c.no);
        this.metrics.chunksRecovered.inc();
        this.log.warn({ batchId: c.batch_id, chunk: c.no, resent, failed }, 'SENDER_CHUNK_RECOVERED');
        return false;
      });
      if (done) break;
      recovered++;
    }
    return recovered + (await this.requeueJobless());
  }

  /**
   * Queues a job for every pending chunk of a sending batch that has none. A chunk can be left so
   * when the job holding it ends without queuing the next: a resume (or any enqueue) while that job
   * runs takes its job_key over and marks it final (graphile sets attempts = max_attempts), so if
   * that job then fails, nothing retries it and its released chunk waits forever. `preserve_run_at`
   * leaves a job already queued for a later retry alone.
   */
  async requeueJobless(): Promise<number> {
    const { rowCount } = await this.pool.query(
      `SELECT graphile_worker.add_job('sender:chunk', json_build_object('batchId', c.batch_id, 'no', c.no),
         max_attempts => 25, job_key => 'sender:chunk:' || c.batch_id || ':' || c.no, job_key_mode => 'preserve_run_at')
       FROM sender_batches b JOIN sender_chunks c ON c.batch_id = b.id AND c.state = 'pending'
       WHERE b.state = 'sending'
         AND NOT EXISTS (SELECT 1 FROM graphile_worker.jobs j WHERE j.key = 'sender:chunk:' || c.batch_id || ':' || c.no)`,
    );
    if (rowCount) {
      this.metrics.chunksRecovered.inc(rowCount);
      this.log.warn({ chunks: rowCount }, 'SENDER_CHUNK_REQUEUED');
    }
    return rowCount ?? 0;
  }

  /**
   * Recipients left `sending` by a worker that is gone: mock and webhook go back to pending (the
   * re-send carries the same idempotency key); e-mail is failed as interrupted (no second e-mail).
   */
  async settleOrphans(db: Queryable, batchId: string, from: number, to: number) {
    const { rows: b } = await db.query<{ channel: string; state: string }>(
      'SELECT channel, state FROM sender_batches WHERE id = $1',
      [batchId],
    );
    let resent = 0;
    let failed = 0;
    if (b[0]?.channel === 'email') {
      const r = await db.query(
        `WITH f AS (UPDATE sender_recipients SET state = 'failed', error = $4
           WHERE batch_id = $1 AND id BETWEEN $2 AND $3 AND state = 'sending' RETURNING 1)
         UPDATE sender_batches SET failed = failed + (SELECT count(*) FROM f) WHERE id = $1
         RETURNING (SELECT count(*) FROM f)::int AS n`,
        [batchId, from, to, INTERRUPTED],
      );
      failed = r.rows[0]?.n ?? 0;
      if (failed) this.metrics.messages.inc({ channel: 'email', status: 'interrupted' }, failed);
    } else {
      const r = await db.query(
        `UPDATE sender_recipients SET state = 'pending', next_attempt_at = NULL
         WHERE batch_id = $1 AND id BETWEEN $2 AND $3 AND state = 'sending'`,
        [batchId, from, to],
      );
      resent = r.rowCount ?? 0;
    }
    return { resent, failed, state: b[0]?.state };
  }

  // --- shared pieces used by ChunkRun ----------------------------------------------------------

  async loadBatch(batchId: string): Promise<BatchForSend | undefined> {
    const { rows } = await this.pool.query<BatchForSend>(
      `SELECT b.id, b.account_id, b.created_by, b.state, b.channel, b.send_config_id, b.channel_options, b.template,
         b.rate_per_second, b.max_attempts, b.code_campaign, c.rate_per_second AS config_rate
       FROM sender_batches b LEFT JOIN sender_send_configs c ON c.id = b.send_config_id WHERE b.id = $1`,
      [batchId],
    );
    return rows[0];
  }

  async channelFor(b: BatchForSend): Promise<Channel> {
    const key = b.send_config_id ?? `mock:${JSON.stringify(b.channel_options)}`;
    let ch = this.channels.get(key);
    if (!ch) {
      const spec: ChannelSpec = b.send_config_id
        ? await loadChannelSpec(this.pool, b.send_config_id)
        : { channel: 'mock', settings: b.channel_options };
      ch = this.channels.get(key) ?? createChannel(spec);
      this.channels.set(key, ch);
    }
    return ch;
  }

  limitsFor(b: BatchForSend): Limit[] {
    const limits: Limit[] = [];
    if (b.rate_per_second)
      limits.push({ kind: 'batch', key: `batch:${b.id}`, ratePerSecond: b.rate_per_second });
    if (b.config_rate)
      limits.push({ kind: 'provider', key: `provider:${b.send_config_id}`, ratePerSecond: b.config_rate });
    if (this.ctx.config.senderApiKeyRate > 0)
      limits.push({
        kind: 'api_key',
        key: `api_key:${b.created_by ?? b.account_id}`,
        ratePerSecond: this.ctx.config.senderApiKeyRate,
      });
    return limits;
  }

  /** Takes tokens from every limit; returns the longest wait and counts it in the metrics. */
  async takeTokens(limits: Limit[], n: number): Promise<number> {
    let wait = 0;
    for (const l of limits) {
      const w = await take(this.pool, l, n);
      if (w > 0) {
        this.metrics.rateLimitWaits.inc({ limit: l.kind });
        this.metrics.rateLimitWaitSeconds.inc({ limit: l.kind }, w);
      }
      wait = Math.max(wait, w);
    }
    return wait;
  }

  /** Returns tokens taken by takeTokens for messages that were not sent after all. */
  async giveBackTokens(limits: Limit[], n: number): Promise<void> {
    for (const l of limits) await giveBack(this.pool, l, n);
  }

  async releaseChunk(batchId: string, no: number, owner: string, db: Queryable = this.pool) {
    await db.query(
      `UPDATE sender_chunks SET state = 'pending', owner = NULL, lease_until = NULL
       WHERE batch_id = $1 AND no = $2 AND owner = $3 AND state = 'running'`,
      [batchId, no, owner],
    );
  }

  async finishChunk(batchId: string, no: number, owner: string) {
    await this.pool.query(
      `UPDATE sender_chunks SET state = 'done', lease_until = NULL WHERE batch_id = $1 AND no = $2 AND owner = $3`,
      [batchId, no, owner],
    );
    // Each chunk commits `done` before it looks, so the last chunk to finish always sees all done.
    const done = await completeIfDone(this.pool, batchId);
    if (done) this.log.info({ batchId, ...done }, 'BATCH_COMPLETED');
  }

  unsubscribeUrl(batchId: string, recipientId: number): string {
    return `${this.ctx.config.senderPublicUrl.replace(/\/$/, '')}/api/unsubscribe/${unsubscribeToken(this.ctx.webhookSecret, batchId, recipientId)}`;
  }

  /**
   * The recipient's code: reserved under `<batchId>:<recipientId>` (the same code again on a retry,
   * or a new one if that reservation lapsed), then assigned to the address before anything is sent.
   * Assigned after the send, a refused assign (past maxPerUser) or a lapsed reservation left an
   * e-mailed code to go back to the pool and to a second holder.
   */
  async reserveCode(b: BatchForSend, recipientId: number): Promise<string> {
    const r = await this.codes.reserve({
      campaignId: b.code_campaign!,
      count: 1,
      reserveId: `${b.id}:${recipientId}`,
    });
    const code = r.codes[0];
    if (!code) throw new Error('the codes service returned no code');
    return code;
  }

  async assignCode(b: BatchForSend, recipientId: number, address: string) {
    await this.codes.assign({
      campaignId: b.code_campaign!,
      reserveId: `${b.id}:${recipientId}`,
      userId: address,
    });
  }

  async releaseCode(b: BatchForSend, recipientId: number) {
    await this.codes
      .release({ campaignId: b.code_campaign!, reserveId: `${b.id}:${recipientId}` })
      .catch((err) => this.log.warn({ err, batchId: b.id, recipientId }, 'SENDER_CODE_RELEASE_FAILED'));
  }

  get senderMetrics() {
    return this.metrics;
  }
  get db() {
    return this.pool;
  }
  get logger() {
    return this.log;
  }
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(lanes);
}

/** One job's pass over one chunk: sub-batches of claim → send → record until nothing is left. */
class ChunkRun {
  lost = false;
  private batch!: BatchForSend;
  private channel!: Channel;
  private limits: Limit[] = [];
  private subBatch = SUB_BATCH;

  constructor(
    private readonly engine: SendEngine,
    private readonly batchId: string,
    private readonly no: number,
    private readonly from: number,
    private readonly to: number,
    private readonly owner: string,
    /** The job's: aborted when this worker shuts down (graphile-worker's grace has passed). */
    private readonly stopping: AbortSignal,
  ) {}

  private get pool() {
    return this.engine.db;
  }

  async run() {
    const b = await this.engine.loadBatch(this.batchId);
    if (!b) return { skipped: 'batch deleted' };
    this.batch = b;
    this.limits = this.engine.limitsFor(b);
    try {
      this.channel = await this.engine.channelFor(b);
    } catch (err) {
      await this.pool.query(
        `UPDATE sender_batches SET state = 'failed', error = $2, finished_at = now() WHERE id = $1 AND state = 'sending'`,
        [this.batchId, `channel unavailable: ${(err as Error).message}`],
      );
      await this.engine.finishChunk(this.batchId, this.no, this.owner);
      return { failed: (err as Error).message };
    }
    // Small sub-batches under a low rate, so a pause is never stuck behind a long token wait.
    const slowest = Math.min(...this.limits.map((l) => l.ratePerSecond), Number.POSITIVE_INFINITY);
    const most = this.channel.name === 'mock' ? MOCK_SUB_BATCH : SUB_BATCH;
    this.subBatch = Math.max(1, Math.min(most, Math.floor(slowest / 4)));
    let sent = 0;
    // The batch state is read only when a claim comes back empty: the claim itself takes nothing
    // unless the batch is `sending`, so a pause or cancel still stops the chunk at the next sub-batch.
    let claimed: Claimed[] = [];
    for (;;) {
      if (this.lost) return { sent, lost: true };
      if (this.stopping.aborted) return this.handBack(sent);
      let stopSeen = false;
      if (claimed.length > 0) {
        const done = await this.sendAll(claimed);
        sent += done.sent;
        stopSeen = done.stopSeen;
        claimed = [];
      }
      // A sub-batch or a token wait cut short by a pause or cancel goes straight to the state
      // handling below.
      if (!stopSeen) {
        const wait = this.limits.length ? await this.engine.takeTokens(this.limits, this.subBatch) : 0;
        if (wait === 0 || (await this.sleepWhileSending(wait * 1000))) claimed = await this.claim();
        const unused = this.limits.length ? this.subBatch - claimed.length : 0;
        if (unused > 0) await this.engine.giveBackTokens(this.limits, unused);
        if (claimed.length > 0) continue;
      }
      if (this.stopping.aborted) return this.handBack(sent);
      const state = await this.state();
      if (state === 'paused') {
        await this.engine.releaseChunk(this.batchId, this.no, this.owner);
        // A resume that came between our look and the release found this chunk still running.
        if ((await this.state()) === 'sending') await enqueueChunks(this.pool, this.batchId, this.no);
        return { sent, paused: true };
      }
      if (state !== 'sending') {
        if (state === 'cancelled') await this.engine.cancelRest(this.batchId, [this.from, this.to]);
        await this.engine.finishChunk(this.batchId, this.no, this.owner);
        return { sent, stopped: state };
      }
      {
        const { next, orphans } = await this.nextRetryAt();
        if (orphans > 0) {
          // Nothing of ours is in flight here, so these were left by a worker that lost this chunk.
          await this.engine.settleOrphans(this.pool, this.batchId, this.from, this.to);
          continue;
        }
        if (next === null) {
          await this.engine.finishChunk(this.batchId, this.no, this.owner);
          return { sent };
        }
        const waitMs = next.getTime() - Date.now();
        if (waitMs > MAX_INLINE_WAIT_MS) {
          // Give the worker slot to other chunks; come back when the earliest retry is due.
          await this.requeue(next);
          return { sent, deferredUntil: next };
        }
        await this.sleepWhileSending(Math.max(10, waitMs));
      }
    }
  }

  /**
   * The worker is shutting down: the chunk goes back to the queue at once, for another worker (a
   * new job; this one ends done), instead of holding its lease until the drain times out and
   * leaving the chunk to the sweeper 20 s later. What was claimed and not sent went back already.
   */
  private async handBack(sent: number) {
    await this.requeue();
    this.engine.logger.info({ batchId: this.batchId, chunk: this.no, sent }, 'SENDER_CHUNK_HANDED_BACK');
    return { sent, handedBack: true };
  }

  /**
   * Lets the chunk go and queues its job again (at `runAt`, or now), in one transaction: there is
   * no moment where the chunk is released but has no queued job.
   */
  private async requeue(runAt?: Date) {
    await withTransaction(this.pool, async (db) => {
      await this.engine.releaseChunk(this.batchId, this.no, this.owner, db);
      await enqueueChunks(db, this.batchId, this.no, runAt);
    });
  }

  private async state(): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ state: string }>(
      'SELECT state FROM sender_batches WHERE id = $1',
      [this.batchId],
    );
    return rows[0]?.state;
  }

  /**
   * Sleeps up to `ms`, looking at the batch every 200 ms; false when it stopped being `sending`, or
   * the worker is shutting down.
   */
  private async sleepWhileSending(ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      await sleep(Math.min(STATE_POLL_MS, until - Date.now()));
      if (this.stopping.aborted || (await this.state()) !== 'sending') return false;
    }
    return true;
  }

  /**
   * Takes the next due recipients (attempts counted with this one) with their suppression flag, in
   * one round trip; takes nothing unless the batch is `sending`. For a channel that cannot
   * deduplicate (SMTP) they are first marked `sending`, so a worker killed mid-send leaves a trace
   * and nobody sends them again (at most once). An idempotent channel needs no mark: the chunk's
   * lease keeps other workers away, a re-send after a crash carries the same idempotency key, and
   * `record` writes only rows still `pending`. That saves one row update per message.
   */
  private async claim(): Promise<Claimed[]> {
    const due = `batch_id = $1 AND id BETWEEN $2 AND $3 AND state = 'pending'
           AND (next_attempt_at IS NULL OR next_attempt_at <= now())`;
    const sending = `EXISTS (SELECT 1 FROM sender_batches WHERE id = $1 AND state = 'sending')`;
    const suppressed = `EXISTS (SELECT 1 FROM sender_suppressions s WHERE s.account_id = $5 AND s.address = lower(r.address))
           AS suppressed`;
    const sql = this.channel.idempotent
      ? `SELECT r.id, r.address, r.variables, r.attempts + 1 AS attempts, r.code, ${suppressed}
         FROM sender_recipients r WHERE ${due} AND ${sending} ORDER BY id LIMIT $4`
      : // The picked ids as an array, and the outer scan kept to the chunk: with `r.id IN (SELECT …)`
        // the planner walked the batch's every recipient and ran the pick once per row (610 ms a
        // claim of 200 on a 5,000-recipient batch after larger batches; 2–6 ms this way).
        `UPDATE sender_recipients r SET state = 'sending', attempts = r.attempts + 1
         WHERE r.batch_id = $1 AND r.id BETWEEN $2 AND $3
           AND r.id = ANY (ARRAY(SELECT id FROM sender_recipients WHERE ${due} ORDER BY id LIMIT $4))
           AND ${sending}
         RETURNING r.id, r.address, r.variables, r.attempts, r.code, ${suppressed}`;
    const { rows } = await this.pool.query<Claimed>(sql, [
      this.batchId,
      this.from,
      this.to,
      this.subBatch,
      this.batch.account_id,
    ]);
    return rows;
  }

  private async nextRetryAt(): Promise<{ next: Date | null; orphans: number }> {
    const { rows } = await this.pool.query<{ at: Date | null; orphans: number }>(
      `SELECT min(coalesce(next_attempt_at, now())) FILTER (WHERE state = 'pending') AS at,
         count(*) FILTER (WHERE state = 'sending')::int AS orphans
       FROM sender_recipients WHERE batch_id = $1 AND id BETWEEN $2 AND $3 AND state IN ('pending', 'sending')`,
      [this.batchId, this.from, this.to],
    );
    return { next: rows[0]?.at ?? null, orphans: rows[0]?.orphans ?? 0 };
  }

  /**
   * Looks at the batch every STATE_POLL_MS until `end()`; `stopped()` turns true once the batch
   * is no longer `sending`, or the worker is shutting down. A failed look counts as still sending:
   * the next one decides.
   */
  private watchState() {
    let stopped = false;
    let looking = false;
    const timer = setInterval(() => {
      if (this.stopping.aborted) stopped = true;
      if (looking || stopped) return;
      looking = true;
      this.state()
        .then((state) => {
          if (state !== 'sending') stopped = true;
        })
        .catch(() => undefined)
        .finally(() => {
          looking = false;
        });
    }, STATE_POLL_MS);
    return { stopped: () => stopped, end: () => clearInterval(timer) };
  }

  /**
   * Sends one claimed sub-batch and records every outcome in one statement. A pause or cancel seen
   * meanwhile leaves the messages not yet started unsent (`stopSeen`), so a large sub-batch to a
   * slow provider cannot keep sending for seconds after the batch stopped.
   */
  private async sendAll(rows: Claimed[]): Promise<{ sent: number; stopSeen: boolean }> {
    const b = this.batch;
    const m = this.engine.senderMetrics;
    const channel = this.channel;
    const outcomes: Outcome[] = [];
    const work: Claimed[] = [];
    const unsent: Claimed[] = [];
    for (const r of rows) {
      if (r.suppressed)
        outcomes.push({ id: r.id, state: 'suppressed', error: null, delay: null, code: null });
      else work.push(r);
    }
    const watch = this.watchState();
    try {
      await eachLimit(work, channel.concurrency, async (r) => {
        if (watch.stopped()) unsent.push(r);
        else await this.sendOne(r, outcomes);
      });
    } finally {
      watch.end();
    }
    const attempts = new Map(rows.map((r) => [r.id, r.attempts]));
    // One transaction when claims are undone, so a crash cannot leave them marked `sending` (which
    // the sweeper would fail as interrupted, though they were never sent).
    const counts =
      unsent.length > 0 && !channel.idempotent
        ? await withTransaction(this.pool, async (db) => {
            const c = await this.record(db, outcomes, attempts);
            await this.putBack(db, unsent);
            return c;
          })
        : await this.record(this.pool, outcomes, attempts);
    for (const [status, n] of Object.entries(counts))
      if (n) m.messages.inc({ channel: channel.name, status: status === 'pending' ? 'retry' : status }, n);
    // A code reserved but never assigned (its reserve or assign failed for good) goes back; an
    // assigned one stays with the address it was sent, or meant to be sent, to.
    if (b.code_campaign)
      await eachLimit(outcomes, 32, async (o) => {
        if (o.code && o.state === 'failed' && !o.assigned) await this.engine.releaseCode(b, o.id);
      });
    return { sent: counts.sent ?? 0, stopSeen: unsent.length > 0 };
  }

  /**
   * Claimed recipients left unsent by a pause or cancel: the claim of a channel that cannot
   * deduplicate marked them `sending` and counted the attempt, so they go back to `pending` with the
   * attempt uncounted. (An idempotent channel's claim changed nothing, so it has nothing to undo.)
   */
  private async putBack(db: Queryable, rows: Claimed[]) {
    await db.query(
      `UPDATE sender_recipients SET state = 'pending', attempts = attempts - 1
       WHERE batch_id = $1 AND id BETWEEN $2 AND $3 AND id = ANY($4::int[]) AND state = 'sending'`,
      [this.batchId, this.from, this.to, rows.map((r) => r.id)],
    );
  }

  /** One message to the provider; its outcome goes to `outcomes`. */
  private async sendOne(r: Claimed, outcomes: Outcome[]) {
    const b = this.batch;
    const m = this.engine.senderMetrics;
    const channel = this.channel;
    let code = r.code;
    let assigned = false;
    try {
      if (b.code_campaign) {
        try {
          code = await this.engine.reserveCode(b, r.id);
        } catch (err) {
          throw codeReservationError(b.code_campaign, err); // 4xx permanent, 5xx/timeouts retried
        }
        try {
          await this.engine.assignCode(b, r.id, r.address);
          assigned = true;
        } catch (err) {
          throw codeAssignError(b.code_campaign, r.address, err); // past maxPerUser: permanent
        }
      }
      const unsubscribeUrl = this.engine.unsubscribeUrl(b.id, r.id);
      const view = { ...r.variables, address: r.address, email: r.address, code, unsubscribeUrl };
      let msg: OutMessage;
      try {
        msg = {
          idempotencyKey: `${b.id}:${r.id}`,
          batchId: b.id,
          recipientId: r.id,
          to: r.address,
          ...render(b.template, view),
          variables: r.variables ?? {},
          unsubscribeUrl,
        };
      } catch (err) {
        throw new SendError(`template: ${(err as Error).message}`, true);
      }
      const started = performance.now();
      try {
        await channel.send(msg);
      } finally {
        m.latency.observe({ channel: channel.name }, (performance.now() - started) / 1000);
      }
      outcomes.push({ id: r.id, state: 'sent', error: null, delay: null, code, assigned });
    } catch (err) {
      const permanent = err instanceof SendError ? err.permanent : false;
      const reason = (err as Error).message;
      if (permanent || r.attempts >= b.max_attempts) {
        const error = permanent ? reason : `gave up after ${r.attempts} attempts: ${reason}`;
        outcomes.push({ id: r.id, state: 'failed', error, delay: null, code, assigned });
      } else {
        outcomes.push({
          id: r.id,
          state: 'pending',
          error: reason,
          delay: backoffSeconds(r.attempts, this.engine.retryBaseMs),
          code,
        });
      }
    }
  }

  /**
   * Writes a sub-batch's outcomes and the batch counters in one statement. Only rows still as the
   * claim left them (`sending`, or `pending` for an idempotent channel) are written, and the
   * counters are counted from what was written, so a chunk taken back by the sweeper, or sent by a
   * worker that lost its lease, can never be counted twice.
   */
  private async record(
    db: Queryable,
    outcomes: Outcome[],
    attempts: Map<number, number>,
  ): Promise<Record<string, number>> {
    if (outcomes.length === 0) return {};
    const { rows } = await db.query<{ state: string; n: number }>(
      `WITH v AS (
         SELECT * FROM unnest($2::int[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::int[])
           AS v(id, state, error, delay, code, attempts)),
       u AS (
         UPDATE sender_recipients r SET error = v.error, code = coalesce(v.code, r.code),
           -- A bounce event that came in while the message was in flight (events.ts) set its bit only.
           state = CASE WHEN v.state = 'sent' AND r.event_kinds & 2 <> 0 THEN 'bounced' ELSE v.state END,
           attempts = v.attempts,
           next_attempt_at = CASE WHEN v.delay IS NULL THEN NULL ELSE now() + make_interval(secs => v.delay) END,
           sent_at = CASE WHEN v.state = 'sent' THEN now() ELSE r.sent_at END
         FROM v WHERE r.batch_id = $1 AND r.id BETWEEN $9 AND $10 AND r.id = v.id AND r.state = $8
         RETURNING v.state),
       counts AS (SELECT state, count(*)::int AS n FROM u GROUP BY state),
       b AS (
         UPDATE sender_batches SET
           sent = sent + coalesce((SELECT n FROM counts WHERE state = 'sent'), 0),
           failed = failed + coalesce((SELECT n FROM counts WHERE state = 'failed'), 0),
           suppressed = suppressed + coalesce((SELECT n FROM counts WHERE state = 'suppressed'), 0),
           updated_at = now()
         WHERE id = $1)
       SELECT state, n FROM counts`,
      [
        this.batchId,
        outcomes.map((o) => o.id),
        outcomes.map((o) => o.state),
        outcomes.map((o) => o.error),
        outcomes.map((o) => o.delay),
        outcomes.map((o) => o.code),
        outcomes.map((o) => attempts.get(o.id) ?? 1),
        this.channel.idempotent ? 'pending' : 'sending',
        // The chunk's range: the planner then reads these few rows by primary key instead of
        // choosing a scan of the whole batch when its statistics are stale.
        this.from,
        this.to,
      ],
    );
    return Object.fromEntries(rows.map((r) => [r.state, r.n]));
  }
}
