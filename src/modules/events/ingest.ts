// Ingestion with group commit: concurrent requests are coalesced into one multi-row INSERT (one
// round trip, one COMMIT, one WAL flush) and each caller is answered only after that COMMIT, so
// a 201 still means the event is durable. While MAX_IN_FLIGHT inserts run, new requests queue
// and go together in the next one: the busier the server, the bigger (and cheaper) each insert.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type { Pool, Queryable } from '../../kit/db.ts';
import type { Logger } from '../../kit/log.ts';
import type { EventsMetrics } from './metrics.ts';
import type { EventRow } from './validate.ts';

export const SOURCES = ['api', 'segment'] as const;
export type Source = (typeof SOURCES)[number];

export interface IngestResult {
  accepted: number;
  duplicates: number;
}

interface Pending {
  rows: EventRow[];
  source: Source;
  resolve(r: IngestResult): void;
  reject(err: unknown): void;
}

/**
 * Two, not four: each insert in flight is a commit and a WAL flush, and on two cores the extra ones
 * only made the groups smaller. Single events, 64 connections, ten 6 s slices each beside the bare
 * ceiling: 0.49 → 0.59 of it on average, PostgreSQL ~23 → ~19 µs an event; 100-event requests the
 * same within noise (211k and 202k events/s, means of four slices).
 */
const MAX_IN_FLIGHT = 2;
const MAX_ROWS_PER_INSERT = 10_000;
const COPY_FROM_ROWS = 200;
/** Events per events_raw_batches row (migration 007): an event's id is its batch's id × 1000 + position. */
export const MAX_EVENTS_PER_BATCH = 1000;

/**
 * JSON made by JSON.stringify as a COPY text field. Such JSON holds no raw tab, newline or carriage
 * return (it escapes them), so only its backslashes need doubling; copyText's regex scan of a whole
 * batch was 4% of the server's CPU at 200k events/s.
 */
function copyJson(json: string): string {
  return json.includes('\\') ? json.replaceAll('\\', '\\\\') : json;
}

/** One event as the JSON object a batch row holds (migration 007). */
function eventJson(row: EventRow, iso: string): string {
  let json = `{"userId":${JSON.stringify(row.userId)},"action":${JSON.stringify(row.action)},"timestamp":"${iso}"`;
  if (row.properties !== null) json += `,"properties":${row.properties}`;
  if (row.messageId !== null) json += `,"messageId":${JSON.stringify(row.messageId)}`;
  return `${json}}`;
}

/** The events as JSON objects, formatting each distinct timestamp once (a request's mostly share one). */
function eventsJson(rows: { row: EventRow }[]): string[] {
  let lastMs = Number.NaN;
  let lastIso = '';
  return rows.map(({ row }) => {
    if (row.ts.getTime() !== lastMs) {
      lastMs = row.ts.getTime();
      lastIso = row.ts.toISOString();
    }
    return eventJson(row, lastIso);
  });
}

/**
 * Records new messageIds (ON CONFLICT skips the ones seen before), then stores the events without a
 * messageId plus those whose messageId was new, as batches of at most 1,000 per source. unnest()
 * keeps it one parameter per column however many events there are.
 */
const INSERT_EVENTS = `
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(message_id, event, source, ord)
), fresh AS (
  INSERT INTO events_message_ids (message_id)
  SELECT message_id FROM input WHERE message_id IS NOT NULL
  ON CONFLICT DO NOTHING RETURNING message_id
), kept AS (
  SELECT * FROM input WHERE message_id IS NULL OR message_id IN (SELECT message_id FROM fresh)
), batches AS (
  INSERT INTO events_raw_batches (n, events, source)
  SELECT count(*), '[' || string_agg(event, ',' ORDER BY ord) || ']', source
  FROM kept GROUP BY source, (ord - 1) / ${MAX_EVENTS_PER_BATCH}
)
SELECT message_id FROM kept WHERE message_id IS NOT NULL`;

interface Batch {
  n: number;
  /** The events as a JSON array. */
  events: string;
  source: Source;
}

/** The events_raw_batches rows for `rows`: per source, in order, up to 1,000 events each. */
export function toBatches(rows: { row: EventRow; source: Source }[]): Batch[] {
  const json = eventsJson(rows);
  const out: Batch[] = [];
  for (const source of new Set(rows.map((r) => r.source))) {
    const mine = json.filter((_, i) => rows[i]!.source === source);
    for (let i = 0; i < mine.length; i += MAX_EVENTS_PER_BATCH) {
      const batch = mine.slice(i, i + MAX_EVENTS_PER_BATCH);
      out.push({ n: batch.length, events: `[${batch.join(',')}]`, source });
    }
  }
  return out;
}

/**
 * Events without a messageId need no dedupe. A large group goes through COPY, one
 * events_raw_batches row per batch of up to 1,000 events of one source; as one statement, it
 * commits on its own.
 */
export async function copyEvents(pool: Pool, rows: { row: EventRow; source: Source }[]): Promise<void> {
  let text = '';
  for (const b of toBatches(rows)) text += `${b.n}\t${copyJson(b.events)}\t${b.source}\n`;
  const client = await pool.connect();
  try {
    // pipeline() settles when PostgreSQL has acknowledged the COPY (committed), not when the
    // last byte was written: only then may a caller hear 201.
    await pipeline(
      Readable.from([text]),
      client.query(copyFrom('COPY events_raw_batches (n, events, source) FROM STDIN')),
    );
    client.release();
  } catch (err) {
    // A connection that failed mid-COPY is not handed to the next caller.
    client.release(err as Error);
    throw err;
  }
}

/**
 * A small group without messageIds: its batch (one per source, mostly one) as plain parameters of one
 * INSERT. COPY's extra protocol steps cost more than that for a few events, and the dedupe statement
 * below made pg escape every quote of the JSON into an array literal for PostgreSQL to parse back
 * (3.4% of the server's CPU on single events).
 */
export async function insertBatches(db: Queryable, rows: { row: EventRow; source: Source }[]): Promise<void> {
  const batches = toBatches(rows);
  const values = batches.flatMap((b) => [b.n, b.events, b.source]);
  const tuples = batches.map((_, i) => `($${3 * i + 1}::int, $${3 * i + 2}, $${3 * i + 3})`);
  await db.query({
    // Named per row count (1 nearly always): parsed once per connection.
    name: `events_insert_batches_${batches.length}`,
    text: `INSERT INTO events_raw_batches (n, events, source) VALUES ${tuples.join(', ')}`,
    values,
  });
}

/** Stores events (messageIds unique within `rows`); returns the messageIds that were new. */
export async function insertEvents(
  db: Queryable,
  rows: { row: EventRow; source: Source }[],
): Promise<Set<string>> {
  // Named, so each connection parses and plans it once: planning this CTE cost more than running
  // it for the dozen events a single-event group commit carries.
  const { rows: inserted } = await db.query<{ message_id: string }>({
    name: 'events_insert',
    text: INSERT_EVENTS,
    values: [rows.map((r) => r.row.messageId), eventsJson(rows), rows.map((r) => r.source)],
  });
  return new Set(inserted.map((r) => r.message_id));
}

export class Ingestor {
  private queue: Pending[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly metrics: EventsMetrics,
    /** Called after each committed insert: wakes the worker. */
    private readonly onCommitted: () => void,
  ) {}

  submit(rows: EventRow[], source: Source): Promise<IngestResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ rows, source, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= MAX_IN_FLIGHT || this.queue.length === 0) return;
    this.scheduled = true;
    // One macrotask turn lets requests parsed in the same I/O phase join this insert.
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
      this.schedule();
    });
  }

  private flush(): void {
    if (this.inFlight >= MAX_IN_FLIGHT || this.queue.length === 0) return;
    const group: Pending[] = [];
    let count = 0;
    while (
      this.queue.length > 0 &&
      (group.length === 0 || count + this.queue[0]!.rows.length <= MAX_ROWS_PER_INSERT)
    ) {
      const p = this.queue.shift()!;
      group.push(p);
      count += p.rows.length;
    }
    this.inFlight++;
    this.write(group)
      .catch((err) => {
        for (const p of group) p.reject(err);
      })
      .finally(() => {
        this.inFlight--;
        this.schedule();
      });
  }

  private async write(group: Pending[]): Promise<void> {
    // A messageId repeated inside the group (two concurrent resends) is sent once: the first wins,
    // and the repeats are duplicates whatever the database says about the first.
    const seen = new Set<string>();
    const rows: { row: EventRow; source: Source }[] = [];
    for (const p of group) {
      for (const row of p.rows) {
        if (row.messageId !== null) {
          if (seen.has(row.messageId)) continue;
          seen.add(row.messageId);
        }
        rows.push({ row, source: p.source });
      }
    }
    // A single statement (COPY, or the INSERT that also dedupes messageIds) commits on its own:
    // no BEGIN/COMMIT round trips.
    let fresh = new Set<string>();
    // Without messageIds no dedupe: COPY pays off for big groups, a plain INSERT for a few events.
    // With them, the statement that records messageIds stores the new ones.
    if (rows.every((r) => r.row.messageId === null)) {
      if (rows.length >= COPY_FROM_ROWS) await copyEvents(this.pool, rows);
      else await insertBatches(this.pool, rows);
    } else fresh = await insertEvents(this.pool, rows);
    const debug = this.log.isLevelEnabled('debug');
    const answered = new Set<string>();
    // One info line per source per committed insert, not per event (100k+ events/s would drown
    // the log); the per-event line stays at debug (DEBUG=tessera:events*).
    const inserted = new Map<Source, { count: number; duplicates: number; requests: number }>();
    for (const p of group) {
      let accepted = 0;
      for (const row of p.rows) {
        if (row.messageId === null) accepted++;
        else if (fresh.has(row.messageId) && !answered.has(row.messageId)) {
          answered.add(row.messageId);
          accepted++;
        }
        if (debug) this.log.debug({ userId: row.userId, action: row.action }, 'EVENT_INSERTED');
      }
      const duplicates = p.rows.length - accepted;
      this.metrics.ingested.inc({ source: p.source }, accepted);
      if (duplicates) this.metrics.duplicates.inc({ source: p.source }, duplicates);
      const sum = inserted.get(p.source) ?? { count: 0, duplicates: 0, requests: 0 };
      sum.count += accepted;
      sum.duplicates += duplicates;
      sum.requests++;
      inserted.set(p.source, sum);
      p.resolve({ accepted, duplicates });
    }
    for (const [source, sum] of inserted) this.log.info({ source, ...sum }, 'EVENT_INSERTED');
    this.onCommitted();
  }
}
