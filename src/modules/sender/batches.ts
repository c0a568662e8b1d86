// Batches: creation (inline recipients, Idempotency-Key), CSV upload, lifecycle moves and the
// progress view. Every state move is one conditional UPDATE, so two API processes racing on the same
// batch cannot both win; workers see the new state at their next sub-batch (well within 1 s).

import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parse } from 'csv-parse';
import { from as copyFrom } from 'pg-copy-streams';
import type { Pool, PoolClient, Queryable } from '../../kit/db.ts';
import { copyText, withTransaction } from '../../kit/db.ts';
import { badRequest, conflict, HttpError, notFound, unprocessable } from '../../kit/errors.ts';
import type { Jobs } from '../../kit/jobs.ts';
import type { Logger } from '../../kit/log.ts';
import { strictUtf8 } from '../../kit/strict-utf8.ts';
import { longerThan, UUID } from '../../kit/text.ts';
import type { ChannelName } from './channels.ts';
import { type CodesService, checkCodeCampaign } from './codes.ts';
import { ADDRESS_MAX, type BatchBody, type Recipient } from './schemas.ts';
import { getSendConfig } from './send-configs.ts';
import { render, validateTemplate } from './template.ts';
import { completeIfDone, enqueueChunks } from './worker.ts';

const INSERT_ROWS = 5000;
/** What an e-mail channel takes as an address (the same check for batches and a config's test). */
export const EMAIL = /^[^@\s<>]+@[^@\s<>]+$/;

const BATCH_COLUMNS = `id, name, state, channel, send_config_id AS "sendConfigId", template,
  rate_per_second AS "ratePerSecond", max_attempts AS "maxAttempts", code_campaign AS "codeCampaign",
  scheduled_at AS "scheduledAt", total, sent, failed, suppressed, cancelled, delivered, bounced,
  complained, opened, error, created_at AS "createdAt", started_at AS "startedAt",
  finished_at AS "finishedAt"`;

export interface BatchRow {
  id: string;
  name: string | null;
  state: string;
  channel: ChannelName;
  sendConfigId: string | null;
  template: unknown;
  ratePerSecond: number | null;
  maxAttempts: number;
  codeCampaign: string | null;
  scheduledAt: Date | null;
  total: number;
  sent: number;
  failed: number;
  suppressed: number;
  cancelled: number;
  delivered: number;
  bounced: number;
  complained: number;
  opened: number;
  error: string | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

/** A batch's created_at in full microseconds, UTC, as `position` below writes it (whatever DateStyle). */
const POSITION = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const encodeBatchCursor = (at: string, id: string) => Buffer.from(`${at}|${id}`).toString('base64url');

function decodeBatchCursor(cursor: string): { at: string; id: string } {
  const [at, id, extra] = Buffer.from(cursor, 'base64url').toString().split('|');
  if (!at || !id || extra !== undefined || !POSITION.test(at) || !UUID.test(id))
    throw badRequest(
      'cursor is not one GET /api/batches gave: pass its `next` as it was, or leave cursor out',
    );
  return { at, id };
}

/** What GET /api/batches/:id answers: the batch with progress counts and the send rate. */
export function batchView(b: BatchRow) {
  const { total, sent, failed, suppressed, cancelled, delivered, bounced, complained, opened } = b;
  const finished = sent + failed + suppressed + cancelled;
  const end = b.finishedAt ? b.finishedAt.getTime() : Date.now();
  const seconds = b.startedAt ? Math.max(0.001, (end - b.startedAt.getTime()) / 1000) : 0;
  return {
    id: b.id,
    name: b.name,
    state: b.state,
    channel: b.channel,
    sendConfigId: b.sendConfigId,
    template: b.template,
    ratePerSecond: b.ratePerSecond,
    maxAttempts: b.maxAttempts,
    codeCampaign: b.codeCampaign,
    scheduledAt: b.scheduledAt,
    error: b.error,
    createdAt: b.createdAt,
    startedAt: b.startedAt,
    finishedAt: b.finishedAt,
    progress: {
      total,
      pending: total - finished,
      sent,
      delivered,
      failed,
      bounced,
      suppressed,
      cancelled,
      complained,
      opened,
      percent: total ? Math.round((finished / total) * 1000) / 10 : 0,
      /** messages (sent + failed) per second since the batch started */
      rate: seconds ? Math.round(((sent + failed) / seconds) * 10) / 10 : 0,
    },
  };
}

export class Batches {
  constructor(
    private readonly pool: Pool,
    private readonly jobs: Jobs,
    private readonly codes: CodesService,
    private readonly log: Logger,
  ) {}

  async get(db: Queryable, accountId: string, id: string): Promise<BatchRow> {
    const { rows } = await db.query<BatchRow>(
      `SELECT ${BATCH_COLUMNS} FROM sender_batches WHERE id = $1 AND account_id = $2`,
      [id, accountId],
    );
    if (!rows[0]) throw notFound(`batch ${id} not found`);
    return rows[0];
  }

  /**
   * Newest first. `next` is an opaque cursor to the page after (null when this page is not full):
   * the last batch's created_at in full microseconds and its id, so batches made in the same
   * millisecond are neither skipped nor shown twice across a page boundary.
   */
  async list(accountId: string, q: { state?: string; limit: number; before?: string; cursor?: string }) {
    const from = q.cursor === undefined ? undefined : decodeBatchCursor(q.cursor);
    const { rows } = await this.pool.query<BatchRow & { position: string }>(
      `SELECT ${BATCH_COLUMNS}, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS position
       FROM sender_batches
       WHERE account_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::timestamptz IS NULL OR created_at < $3)
         AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
       ORDER BY created_at DESC, id DESC LIMIT $4`,
      [accountId, q.state ?? null, q.before ?? null, q.limit, from?.at ?? null, from?.id ?? null],
    );
    const last = rows.at(-1);
    return {
      batches: rows.map(batchView),
      next: rows.length === q.limit && last ? encodeBatchCursor(last.position, last.id) : null,
    };
  }

  async recipients(accountId: string, id: string, q: { state?: string; after: number; limit: number }) {
    await this.get(this.pool, accountId, id);
    const { rows } = await this.pool.query(
      `SELECT id, address, variables, state, attempts, error, code, sent_at AS "sentAt", event, event_at AS "eventAt"
       FROM sender_recipients WHERE batch_id = $1 AND id > $2 AND ($3::text IS NULL OR state = $3)
       ORDER BY id LIMIT $4`,
      [id, q.after, q.state ?? null, q.limit],
    );
    const last = rows.at(-1);
    return { recipients: rows, next: rows.length === q.limit && last ? last.id : null };
  }

  /**
   * Validates the body; a dry run renders and returns without storing anything. The batch belongs
   * to the account; `credentialId` (the API key or user) is kept for the per-key rate limit.
   */
  async create(
    owner: { accountId: string; credentialId: string },
    body: BatchBody,
    idempotencyKey: string | undefined,
  ) {
    const { accountId } = owner;
    validateTemplate(body.template);
    let channel: ChannelName;
    if (body.sendConfigId) {
      if (body.channel || body.mock)
        throw badRequest('give either sendConfigId or channel: "mock" with mock options, not both');
      channel = (await getSendConfig(this.pool, accountId, body.sendConfigId)).channel;
    } else if (body.channel === 'mock') {
      channel = 'mock';
    } else {
      throw badRequest(
        'sendConfigId is required (create one with POST /api/send-configs), or use channel: "mock"',
      );
    }
    const recipients = body.recipients ?? [];
    if (channel === 'email') {
      const bad = recipients.findIndex((r) => !EMAIL.test(r.address));
      if (bad >= 0)
        throw badRequest(`recipients[${bad}].address "${recipients[bad]!.address}" is not an e-mail address`);
    }
    if (body.scheduledAt && Number.isNaN(Date.parse(body.scheduledAt)))
      throw badRequest('scheduledAt must be an ISO 8601 date-time');
    if (body.codeCampaign) await checkCodeCampaign(this.codes, body.codeCampaign);
    if (body.dryRun) return { status: 200, body: this.dryRun(body, recipients) };
    if (!body.draft && recipients.length === 0)
      throw badRequest(
        'recipients: give at least one recipient, or create with draft: true and upload a CSV to /api/batches/:id/recipients',
      );
    if (idempotencyKey !== undefined && (idempotencyKey.length < 1 || idempotencyKey.length > 200))
      throw badRequest('Idempotency-Key must be 1 to 200 characters');

    const hash = createHash('sha256').update(JSON.stringify(body)).digest('base64url');
    return withTransaction(this.pool, async (client) => {
      const { rows } = await client.query<{ id: string }>(
        `INSERT INTO sender_batches (account_id, idempotency_key, request_hash, name, state, channel,
           send_config_id, channel_options, template, rate_per_second, max_attempts, code_campaign, scheduled_at,
           created_by)
         VALUES ($1, $2, $3, $4, 'draft', $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING id`,
        [
          accountId,
          idempotencyKey ?? null,
          hash,
          body.name ?? null,
          channel,
          body.sendConfigId ?? null,
          body.mock ?? {},
          body.template,
          body.ratePerSecond ?? null,
          body.maxAttempts ?? 5,
          body.codeCampaign ?? null,
          body.scheduledAt ?? null,
          owner.credentialId,
        ],
      );
      if (!rows[0]) {
        // A retried create: the same batch, as long as it is the same request.
        const { rows: prior } = await client.query<{ id: string; request_hash: string }>(
          'SELECT id, request_hash FROM sender_batches WHERE account_id = $1 AND idempotency_key = $2',
          [accountId, idempotencyKey],
        );
        if (prior[0]!.request_hash !== hash)
          throw unprocessable(
            `Idempotency-Key "${idempotencyKey}" was already used for a different batch request; use a new key`,
          );
        return { status: 200, body: batchView(await this.get(client, accountId, prior[0]!.id)) };
      }
      const id = rows[0].id;
      await this.insertRecipients(client, id, 0, recipients);
      if (!body.draft) await this.queue(client, id);
      return { status: 201, body: batchView(await this.get(client, accountId, id)) };
    });
  }

  private dryRun(body: BatchBody, recipients: Recipient[]) {
    const preview = [];
    const errors = [];
    for (const [i, r] of recipients.entries()) {
      try {
        const view = {
          ...r.variables,
          address: r.address,
          email: r.address,
          code: body.codeCampaign ? '(code)' : undefined,
          // The worker sets each recipient's own link over any variable of that name; a dry run has
          // no batch to link to yet, so it shows where the link goes.
          unsubscribeUrl: '(unsubscribe link)',
        };
        const out = render(body.template, view);
        if (preview.length < 20) preview.push({ address: r.address, ...out });
      } catch (err) {
        errors.push({ index: i, address: r.address, error: (err as Error).message });
      }
    }
    return {
      dryRun: true,
      total: recipients.length,
      rendered: recipients.length - errors.length,
      preview,
      errors,
    };
  }

  /** Inserts recipients with ids after `lastId`, 5,000 rows per statement; updates the total. */
  async insertRecipients(client: Queryable, batchId: string, lastId: number, rows: Recipient[]) {
    for (let i = 0; i < rows.length; i += INSERT_ROWS) {
      const part = rows.slice(i, i + INSERT_ROWS);
      await client.query(
        `INSERT INTO sender_recipients (batch_id, id, address, variables)
         SELECT $1, $2 + n, a, v FROM unnest($3::text[], $4::jsonb[]) WITH ORDINALITY AS t(a, v, n)`,
        [
          batchId,
          lastId + i,
          part.map((r) => r.address),
          part.map((r) => (r.variables ? JSON.stringify(r.variables) : null)),
        ],
      );
    }
    await client.query('UPDATE sender_batches SET total = total + $2, updated_at = now() WHERE id = $1', [
      batchId,
      rows.length,
    ]);
    return lastId + rows.length;
  }

  /**
   * Streams a CSV (header row; an `address` or `email` column, every other column a variable) into a
   * draft batch through COPY, in one transaction: a bad row rejects the whole upload. Parsing here
   * and inserting in PostgreSQL run side by side, so neither waits for the other.
   */
  async uploadCsv(accountId: string, id: string, stream: Readable) {
    return withTransaction(this.pool, async (client) => {
      const batch = await this.lockDraft(client, accountId, id);
      const email = batch.channel === 'email';
      let next = batch.total;
      let line = 1;
      let sawHeader = false;
      // Rows as arrays (not objects keyed by the header): csv-parse's `columns` costs more than the
      // rest of the row's work together.
      const utf8 = stream.pipe(strictUtf8('the CSV'));
      const parser = utf8.pipe(parse({ skip_empty_lines: true, trim: true, bom: true }));
      // pipe() does not pass an error on: the encoding check's 400 ends the parse with it.
      utf8.on('error', (err) => parser.destroy(err));
      const toCopyRows = async function* (records: AsyncIterable<string[]>) {
        let out = '';
        let header: string[] | undefined;
        let at = -1;
        for await (const rec of records) {
          if (!header) {
            header = rec;
            sawHeader = true;
            at = header.indexOf('address') >= 0 ? header.indexOf('address') : header.indexOf('email');
            if (at < 0) throw badRequest('the CSV needs a header row with an "address" (or "email") column');
            continue;
          }
          line++;
          // PostgreSQL cannot store a NUL in text or jsonb; its own error would not name the line.
          if (rec.some((field) => field.includes('\0')))
            throw badRequest(
              `CSV line ${line}: a field holds a NUL character, which cannot be stored; remove it`,
            );
          const address = rec[at] ?? '';
          // The JSON route's schema holds addresses to this; the CSV route must too.
          if (longerThan(address, ADDRESS_MAX))
            throw badRequest(`CSV line ${line}: the address is longer than ${ADDRESS_MAX} characters`);
          if (!address || (email && !EMAIL.test(address)))
            throw badRequest(`CSV line ${line}: "${address}" is not a valid address`);
          // No prototype: a column named __proto__ is then a key like any other (JSON bodies keep it).
          const variables: Record<string, string> = Object.create(null);
          for (let i = 0; i < header.length; i++) {
            const name = header[i]!;
            if (name !== 'address' && rec[i] !== undefined) variables[name] = rec[i]!;
          }
          next++;
          out += `${id}\t${next}\t${copyText(address)}\t${copyText(JSON.stringify(variables))}\n`;
          if (out.length >= 64 * 1024) {
            yield out;
            out = '';
          }
        }
        if (out) yield out;
      };
      const copy = client.query(
        copyFrom('COPY sender_recipients (batch_id, id, address, variables) FROM STDIN'),
      );
      try {
        await pipeline(parser, toCopyRows, copy);
      } catch (err) {
        stream.resume();
        if (err instanceof HttpError) throw err;
        // csv-parse names the line it failed on (its message says it too); other errors get ours.
        if ((err as { lines?: number }).lines)
          throw badRequest(`the CSV could not be read: ${(err as Error).message}`);
        throw badRequest(`the CSV could not be read near line ${line}: ${(err as Error).message}`);
      }
      // An empty upload (a wrong file, a script's empty variable) was a 201 adding nobody.
      if (!sawHeader)
        throw badRequest(
          'the CSV is empty: send a header row with an "address" (or "email") column, then one row per recipient',
        );
      const added = next - batch.total;
      await client.query('UPDATE sender_batches SET total = total + $2, updated_at = now() WHERE id = $1', [
        id,
        added,
      ]);
      return { added, total: next };
    });
  }

  async appendInline(accountId: string, id: string, recipients: Recipient[]) {
    return withTransaction(this.pool, async (client) => {
      const batch = await this.lockDraft(client, accountId, id);
      if (batch.channel === 'email') {
        const bad = recipients.findIndex((r) => !EMAIL.test(r.address));
        if (bad >= 0) throw badRequest(`recipients[${bad}].address is not an e-mail address`);
      }
      const last = await this.insertRecipients(client, id, batch.total, recipients);
      return { added: recipients.length, total: last };
    });
  }

  private async lockDraft(client: PoolClient, accountId: string, id: string) {
    const { rows } = await client.query<{ state: string; total: number; channel: string }>(
      'SELECT state, total, channel FROM sender_batches WHERE id = $1 AND account_id = $2 FOR UPDATE',
      [id, accountId],
    );
    if (!rows[0]) throw notFound(`batch ${id} not found`);
    if (rows[0].state !== 'draft')
      throw conflict(`batch ${id} is ${rows[0].state}; recipients can be added only to a draft batch`);
    return rows[0];
  }

  /** draft → queued; the start job runs at scheduledAt (or now). */
  private async queue(client: PoolClient, id: string) {
    const { rows } = await client.query<{ scheduled_at: Date | null }>(
      `UPDATE sender_batches SET state = 'queued', updated_at = now() WHERE id = $1 AND state = 'draft' RETURNING scheduled_at`,
      [id],
    );
    if (!rows[0]) return;
    await this.jobs.enqueue(
      client,
      'sender:start',
      { batchId: id },
      {
        runAt: rows[0].scheduled_at ?? undefined,
        jobKey: `sender:start:${id}`,
      },
    );
  }

  async send(accountId: string, id: string) {
    return withTransaction(this.pool, async (client) => {
      // Locked, so of two sends at once the second waits and then sees `queued`: one 200, one 409
      // (unlocked, both read `draft` and both answered 200, though only one queued the batch).
      await this.lockBatch(client, accountId, id);
      const b = await this.get(client, accountId, id);
      if (b.state !== 'draft') throw conflict(`batch ${id} is ${b.state}; only a draft batch can be sent`);
      if (b.total === 0) throw conflict(`batch ${id} has no recipients: upload some first`);
      await this.queue(client, id);
      return batchView(await this.get(client, accountId, id));
    });
  }

  private async lockBatch(client: PoolClient, accountId: string, id: string) {
    await client.query('SELECT 1 FROM sender_batches WHERE id = $1 AND account_id = $2 FOR UPDATE', [
      id,
      accountId,
    ]);
  }

  async pause(accountId: string, id: string) {
    return this.move(accountId, id, ['queued', 'sending'], 'paused');
  }

  async resume(accountId: string, id: string) {
    return withTransaction(this.pool, async (client) => {
      // Locked, so a cancel (or a second resume) at the same moment waits and then sees `sending`.
      await this.lockBatch(client, accountId, id);
      const b = await this.get(client, accountId, id);
      if (b.state !== 'paused')
        throw conflict(`batch ${id} is ${b.state}; only a paused batch can be resumed`);
      const { rows } = await client.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM sender_chunks WHERE batch_id = $1',
        [id],
      );
      if (rows[0]!.n === 0) {
        // Paused before it started: back to queued, and the start job runs again.
        await client.query(`UPDATE sender_batches SET state = 'draft' WHERE id = $1`, [id]);
        await this.queue(client, id);
      } else {
        await client.query(`UPDATE sender_batches SET state = 'sending', updated_at = now() WHERE id = $1`, [
          id,
        ]);
        await enqueueChunks(client, id);
        const done = await completeIfDone(client, id);
        if (done) this.log.info({ batchId: id, ...done }, 'BATCH_COMPLETED');
      }
      return batchView(await this.get(client, accountId, id));
    });
  }

  async cancel(accountId: string, id: string) {
    return withTransaction(this.pool, async (client) => {
      const { rows } = await client.query(
        `UPDATE sender_batches SET state = 'cancelled', finished_at = now(), updated_at = now()
         WHERE id = $1 AND account_id = $2 AND state IN ('draft', 'queued', 'sending', 'paused') RETURNING id`,
        [id, accountId],
      );
      if (!rows[0]) {
        const b = await this.get(client, accountId, id);
        throw conflict(`batch ${id} is already ${b.state}; it cannot be cancelled`);
      }
      await this.jobs.enqueue(client, 'sender:cancel', { batchId: id });
      return batchView(await this.get(client, accountId, id));
    });
  }

  private async move(accountId: string, id: string, from: string[], to: string) {
    const { rows } = await this.pool.query<BatchRow>(
      `UPDATE sender_batches SET state = $3, updated_at = now()
       WHERE id = $1 AND account_id = $2 AND state = ANY($4) RETURNING ${BATCH_COLUMNS}`,
      [id, accountId, to, from],
    );
    if (rows[0]) return batchView(rows[0]);
    const b = await this.get(this.pool, accountId, id);
    throw conflict(
      `batch ${id} is ${b.state}; it can be ${to === 'paused' ? 'paused' : 'moved'} only when ${from.join(' or ')}`,
    );
  }
}
