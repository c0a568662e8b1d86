// The dead-letter table's API: list, retry, delete. A retry sends a dead letter's event through the
// worker again, as a new stored batch, in the transaction that deletes the dead letter: so it is
// counted once, even when two operators retry the same one at once (the second finds it gone).
// What made an event a dead letter is often gone by then (WORKER_FAILURE_MODE=bad_schema rejects
// valid events; a client fixed its schema and the stored event is valid after all), and what is
// still invalid stays, with the reason.
import { Type } from '@sinclair/typebox';
import { type Queryable, withTransaction } from '../../kit/db.ts';
import { badRequest, notFound, unprocessable } from '../../kit/errors.ts';
import type { App } from '../../kit/http.ts';
import type { ModuleContext } from '../../kit/module.ts';
import { type Source, toBatches } from './ingest.ts';
import { type EventRow, EventValidationError, validateEvent } from './validate.ts';
import { isIsoTime } from './worker.ts';

const MAX_RETRY = 10_000;
const INVALID_SHOWN = 10;

interface DeadLetter {
  id: number;
  /** As stored: an object unless written around the worker (an older release, by hand). */
  payload: unknown;
}

type Checked = { id: number; row: EventRow; source: Source } | { id: number; reason: string };

/** The start of a JSON value, for a message: a dead letter's payload can be up to a whole batch. */
const preview = (v: unknown) => {
  const json = JSON.stringify(v) ?? String(v);
  return json.length > 60 ? `${json.slice(0, 60)}…` : json;
};

const notAnEvent = (held: unknown) =>
  `it holds ${Array.isArray(held) ? 'an array ' : ''}${preview(held)}, not an event object {userId, action, timestamp?, properties?, messageId?}`;

/** The event a dead letter holds, validated as POST /api/events would, or why it cannot be retried. */
function check({ id, payload }: DeadLetter, now: number): Checked {
  // An array (or any non-object) payload spread into an object made its indexes the fields, and
  // the retry said "0 is not a known field".
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload))
    return { id, reason: notAnEvent(payload) };
  const { source, ...event } = payload as Record<string, unknown>;
  if ('batch' in event)
    return {
      id,
      reason:
        'it holds a whole stored batch PostgreSQL could not parse, not one event: re-send its valid events as the runbook (EventsDeadLettered) says',
    };
  if ('event' in event && !('userId' in event)) return { id, reason: notAnEvent(event.event) };
  try {
    return { id, row: validateEvent(event, null, now), source: source === 'segment' ? 'segment' : 'api' };
  } catch (err) {
    if (err instanceof EventValidationError) return { id, reason: err.message };
    throw err;
  }
}

interface RetryResult {
  retried: number;
  invalid: { id: number; reason: string }[];
}

/** Stores the valid events of `letters` as new batches and deletes their dead letters; the rest stay. */
async function requeue(db: Queryable, letters: DeadLetter[]): Promise<RetryResult> {
  const now = Date.now();
  const checked = letters.map((l) => check(l, now));
  const good = checked.filter((c) => 'row' in c);
  for (const b of toBatches(good))
    await db.query('INSERT INTO events_raw_batches (n, events, source) VALUES ($1, $2, $3)', [
      b.n,
      b.events,
      b.source,
    ]);
  if (good.length)
    await db.query('DELETE FROM events_dead_letter WHERE id = ANY($1::bigint[])', [good.map((g) => g.id)]);
  const invalid = checked.filter((c) => 'reason' in c);
  return { retried: good.length, invalid };
}

/** A page cursor: the last dead letter's failed_at (to the microsecond) and id, as `next` gave it. */
function parseCursor(cursor: string): { at: string; id: number } {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)_(\d{1,16})$/.exec(cursor);
  // A real instant, as the worker judges stored timestamps: no 02-30, 24:00 or year 0000.
  if (!m || !isIsoTime(m[1]!))
    throw badRequest(
      `before must be the \`next\` of the previous page, such as 2026-12-03T09:00:00.000000Z_12001`,
    );
  return { at: m[1]!, id: Number(m[2]) };
}

export function registerDeadLetterRoutes(app: App, ctx: ModuleContext, wakeWorker: () => void): void {
  const tags = ['events'];
  const IdParams = Type.Object({ id: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }) });
  const missing = (id: number) =>
    notFound(`dead letter ${id} not found: list them with GET /api/events/dead-letters`);

  app.get(
    '/api/events/dead-letters',
    {
      schema: {
        tags,
        summary: 'Events the worker could not parse, newest first, a page at a time',
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          before: Type.Optional(
            Type.String({ maxLength: 100, description: 'the `next` of the previous page' }),
          ),
        }),
      },
    },
    async (req) => {
      const { limit, before } = req.query;
      const after = before === undefined ? null : parseCursor(before);
      const { rows } = await ctx.pool.query(
        `SELECT id, message_id AS "messageId", payload, error, received_at AS "receivedAt", failed_at AS "failedAt",
           to_char(failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cursor_at
         FROM events_dead_letter
         WHERE $2::timestamptz IS NULL OR (failed_at, id) < ($2::timestamptz, $3::bigint)
         ORDER BY failed_at DESC, id DESC LIMIT $1 + 1`,
        [limit, after?.at ?? null, after?.id ?? null],
      );
      // One row past the page says whether another page exists, so the last full page has next: null.
      const more = rows.length > limit;
      if (more) rows.pop();
      const { rows: count } = await ctx.pool.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM events_dead_letter',
      );
      const last = more ? rows.at(-1) : undefined;
      return {
        total: count[0]!.n,
        deadLetters: rows.map(({ cursor_at: _, ...r }) => r),
        next: last ? `${last.cursor_at}_${last.id}` : null,
      };
    },
  );

  app.post(
    '/api/events/dead-letters/:id/retry',
    { schema: { tags, summary: 'Send one dead letter through the worker again', params: IdParams } },
    async (req) => {
      const { id } = req.params;
      const result = await withTransaction(ctx.pool, async (client) => {
        const { rows } = await client.query<DeadLetter>(
          'SELECT id, payload FROM events_dead_letter WHERE id = $1 FOR UPDATE',
          [id],
        );
        if (!rows[0]) throw missing(id);
        return requeue(client, rows);
      });
      const bad = result.invalid[0];
      if (bad)
        throw unprocessable(
          `dead letter ${id} cannot be retried: ${bad.reason}. Delete it, or send a corrected event to POST /api/events`,
        );
      ctx.log.info({ ids: [id] }, 'EVENTS_DEAD_LETTERS_RETRIED');
      wakeWorker();
      return { retried: 1 };
    },
  );

  app.post(
    '/api/events/dead-letters/retry',
    {
      schema: {
        tags,
        summary:
          'Send up to `limit` dead letters (oldest first, from after `after`) through the worker again',
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: MAX_RETRY, default: 1000 }),
          after: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0 }),
        }),
      },
    },
    async (req) => {
      const { limit, after } = req.query;
      const { result, last } = await withTransaction(ctx.pool, async (client) => {
        // SKIP LOCKED: a dead letter another call is retrying right now is left to that call.
        const { rows } = await client.query<DeadLetter>(
          `SELECT id, payload FROM events_dead_letter WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [after, limit],
        );
        const last = rows.length === limit ? rows.at(-1)!.id : null;
        // Rows past this page, read without locking them: null then says there is nothing left.
        const more =
          last !== null &&
          (await client.query('SELECT 1 FROM events_dead_letter WHERE id > $1 LIMIT 1', [last])).rowCount! >
            0;
        return { result: await requeue(client, rows), last: more ? last : null };
      });
      if (result.retried) {
        ctx.log.info(
          { retried: result.retried, invalid: result.invalid.length },
          'EVENTS_DEAD_LETTERS_RETRIED',
        );
        wakeWorker();
      }
      return {
        retried: result.retried,
        invalid: result.invalid.length,
        invalidSamples: result.invalid.slice(0, INVALID_SHOWN),
        // The invalid ones stay; `next` steps past them so the following call does not read them again.
        next: last,
      };
    },
  );

  app.delete(
    '/api/events/dead-letters/:id',
    { schema: { tags, summary: 'Delete one dead letter', params: IdParams } },
    async (req) => {
      const { rowCount } = await ctx.pool.query('DELETE FROM events_dead_letter WHERE id = $1', [
        req.params.id,
      ]);
      if (!rowCount) throw missing(req.params.id);
      return { deleted: 1 };
    },
  );
}
