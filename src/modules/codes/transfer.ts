// Import of existing codes and the CSV export, both streamed: an import reads the upload row by
// row and writes batches of 5,000 (each batch its own transaction, counters included), an export
// is a COPY … TO STDOUT piped to the response. Memory stays flat for any file size.
import type { Readable } from 'node:stream';
import { finished } from 'node:stream';
import { CsvError, type Options, Parser } from 'csv-parse';
import { to as copyTo } from 'pg-copy-streams';
import { type Pool, retryOnDeadlock } from '../../kit/db.ts';
import { badRequest, HttpError } from '../../kit/errors.ts';
import { parseJsonBody } from '../../kit/json-body.ts';
import { type Campaign, refuseBatchCampaign } from './campaigns.ts';
import { normalizeCode } from './format.ts';
import type { CodesMetrics } from './metrics.ts';

const BATCH = 5_000;

/**
 * The longest CSV row read, in characters. A code is at most 64 (32 and a prefix of up to 32), so
 * this leaves room for other columns (an export's row is about 200), while a file with no line
 * breaks is refused after 8 KB instead of being buffered whole: a line of hundreds of MB once grew
 * the server's memory with it and then killed it (ERR_STRING_TOO_LONG inside csv-parse).
 */
export const MAX_ROW = 8_192;

/** The largest JSON import, in bytes: JSON is parsed whole, while a CSV streams at any size. */
export const JSON_IMPORT_LIMIT = 64 * 1024 * 1024;

const CSV_OPTIONS: Options = {
  relax_column_count: true,
  skip_empty_lines: true,
  trim: true,
  bom: true,
  relax_quotes: true,
  max_record_size: MAX_ROW,
};

/**
 * csv-parse keeping the first field of each record in `fields` instead of pushing it into the
 * stream. A parse error destroys a stream, and a destroyed stream drops the records it still
 * buffers: whether the lines before an error were imported depended on where the upload's chunks
 * happened to break (7,000 good lines then a bad quote in one chunk: none). Taken from here, every
 * record read before the error is imported, whatever the chunking.
 */
class FirstColumns extends Parser {
  fields: string[] = [];
  /**
   * info.lines and info.empty_lines when the last row was read. csv-parse names the line where it
   * stopped, which for an unclosed quote is the end of the file (12,004 for a quote opened on line
   * 12,001); these two numbers say where the row it was reading began.
   */
  private lastRowLine = 0;
  private emptyLinesThen = 0;

  override push(record: unknown, encoding?: BufferEncoding): boolean {
    if (record === null) return super.push(null, encoding);
    this.fields.push(String((record as string[])[0] ?? ''));
    this.lastRowLine = this.info.lines;
    this.emptyLinesThen = this.info.empty_lines;
    return true;
  }

  /** The line the row being read starts on: after the last row read and the empty lines since. */
  rowStartLine(): number {
    return this.lastRowLine + (this.info.empty_lines - this.emptyLinesThen) + 1;
  }

  /** The fields read so far, emptied. */
  takeFields(): string[] {
    const fields = this.fields;
    this.fields = [];
    return fields;
  }
}

/** Writes a chunk into the parser (or ends it, without one); resolves with the parse error, if any. */
function feed(parser: Parser, chunk?: Buffer | string): Promise<Error | undefined> {
  return new Promise((resolve) => {
    if (chunk !== undefined) {
      parser.write(chunk, (err) => resolve(err ?? undefined));
    } else {
      finished(parser, { readable: false }, (err) => resolve(err ?? undefined));
      parser.end();
    }
  });
}

/**
 * The items of `source` until `stop` aborts, even while the next is awaited: an upload that is
 * slow, or stalled, ends the import as soon as its server is told to stop.
 */
async function* untilAborted<T>(source: AsyncIterable<T>, stop?: AbortSignal): AsyncGenerator<T> {
  if (!stop) {
    yield* source;
    return;
  }
  const it = source[Symbol.asyncIterator]();
  let onAbort = () => {};
  const aborted = new Promise<'stopped'>((resolve) => {
    onAbort = () => resolve('stopped');
    if (stop.aborted) onAbort();
    else stop.addEventListener('abort', onAbort, { once: true });
  });
  try {
    for (;;) {
      const next = await Promise.race([it.next(), aborted]);
      if (next === 'stopped' || next.done) return;
      yield next.value;
    }
  } finally {
    // The signal lives as long as the process: a listener left per import was a leak (and Node's
    // "possible EventTarget memory leak" warning after the eleventh).
    stop.removeEventListener('abort', onAbort);
  }
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const JSON_SPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);

/**
 * How an import's first bytes open JSON: after an optional UTF-8 BOM and whitespace, `[` or `{`
 * (neither starts a code, nor a CSV of codes); false when they open anything else; undefined while
 * `head` holds nothing else yet. The CLI reads such a file as JSON; the HTTP CSV route refuses it.
 */
export function jsonOpener(head: Buffer): '[' | '{' | false | undefined {
  if (head.length < BOM.length && BOM.subarray(0, head.length).equals(head)) return undefined;
  let i = head.subarray(0, BOM.length).equals(BOM) ? BOM.length : 0;
  while (i < head.length && JSON_SPACE.has(head[i]!)) i++;
  if (i === head.length) return undefined;
  return head[i] === 0x5b ? '[' : head[i] === 0x7b ? '{' : false;
}

/**
 * A CSV import that opens as JSON is JSON sent as text: read as CSV it was a quoting error or one
 * invalid line. Returns `head` while it cannot tell yet, undefined once it is CSV.
 */
function refuseJson(head: Buffer): Buffer | undefined {
  const opener = jsonOpener(head);
  if (opener)
    throw badRequest(
      `the body starts with ${opener}, so it looks like JSON: send a JSON import with Content-Type: application/json (a CSV holds one code per line, in its first column)`,
    );
  return opener === undefined ? head : undefined;
}

/** Whether a chunk ends with a line break (its last byte; no decoding of the whole chunk). */
function endsLine(chunk: Buffer | string): boolean {
  const last = typeof chunk === 'string' ? chunk.charCodeAt(chunk.length - 1) : chunk[chunk.length - 1];
  return last === 0x0a || last === 0x0d;
}

export interface ImportResult {
  inserted: number;
  duplicate: number;
  invalid: number;
  /** Up to 10 rejected lines, to show what was wrong. */
  invalidSamples: string[];
}

/** A CsvError is the file's fault: a 400 saying what is wrong. Anything else is ours. */
function csvError(err: Error, parser: FirstColumns): Error {
  if (!(err instanceof CsvError)) return err;
  const line = parser.rowStartLine();
  const max = MAX_ROW.toLocaleString('en-US');
  if (err.code === 'CSV_QUOTE_NOT_CLOSED')
    return badRequest(
      `the CSV could not be read: the row starting on line ${line} opens a quote that is never closed: close the quote or remove it`,
    );
  // Only an open quote carries a row past a line break.
  if (err.code === 'CSV_MAX_RECORD_SIZE' && parser.info.lines > line)
    return badRequest(
      `the CSV could not be read: the row starting on line ${line} opens a quote that is not closed within ${max} characters (it is still open on line ${parser.info.lines}): close the quote or remove it`,
    );
  if (err.code === 'CSV_MAX_RECORD_SIZE')
    return badRequest(
      `the CSV could not be read: line ${line} is longer than ${max} characters: the file must hold one code per line (the first column; a row may have other columns after it, up to that length)`,
    );
  // csv-parse's own words ("found non trimable byte after quote") said what it met, not what to fix.
  if (err.code === 'CSV_NON_TRIMABLE_CHAR_AFTER_CLOSING_QUOTE')
    return badRequest(
      `the CSV could not be read: fix line ${parser.info.lines}: a quoted field goes on after its closing quote ("AB"C): quote the whole field and write each quote in it twice ("AB""C"), or remove the quotes`,
    );
  // No other parse error is known with these options; should one come, the line leads all the same.
  return badRequest(`the CSV could not be read: fix line ${parser.info.lines}: ${err.message}`);
}

/**
 * How a rejected item shows in invalidSamples: a string as sent, except a blank one, quoted so it
 * can be seen (an empty sample read as nothing rejected); anything else as JSON. A number too big
 * for a double was parsed as Infinity, which JSON writes as "null": say what it was instead.
 */
function sampleOf(raw: unknown): string {
  if (typeof raw === 'string') return (raw.trim() === '' ? JSON.stringify(raw) : raw).slice(0, 100);
  if (typeof raw === 'number' && !Number.isFinite(raw)) return 'a number out of range (not a string)';
  try {
    return JSON.stringify(raw).slice(0, 100);
  } catch {
    // Nested thousands deep, JSON.stringify overflows the stack: that became the whole import's
    // 400 "nested too deeply" after thousands of codes before the item had been committed.
    return `${Array.isArray(raw) ? 'an array' : 'an object'} nested too deeply to show (not a string)`;
  }
}

/** SQL for a timestamptz column as `2026-12-03T13:25:00.702Z` whatever the session's time zone (MS truncates, as utcIso does). */
const iso = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/**
 * SQL for a value an API caller chose (userId, reserveId) that a spreadsheet will not run: one
 * starting with = + - @, a tab or a carriage return gets a leading ' (OWASP's advice on CSV
 * injection). Operators open exports in spreadsheets, which ran a userId of =HYPERLINK(…) as a
 * formula. chr(), not '\t' or a regex, so no session setting (standard_conforming_strings) can
 * change what is matched.
 */
const inert = (value: string) =>
  `CASE WHEN left(${value}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || ${value} ELSE ${value} END`;

/**
 * An import cut short because its process is stopping: a 503 that says what was imported (all of
 * it committed) and that sending the whole file again is safe.
 */
export class ImportStopped extends HttpError {
  constructor(readonly result: ImportResult) {
    super(
      503,
      `the server is shutting down, so the import stopped after ${result.inserted} inserted, ${result.duplicate} duplicate and ${result.invalid} invalid (all committed): send the whole file again, to this server once it is back or to another; codes already held count as duplicates`,
    );
  }
}

export class Transfer {
  constructor(
    private readonly pool: Pool,
    private readonly metrics: CodesMetrics,
  ) {}

  /**
   * One batch of imported codes. The seqs are claimed first, in a statement of their own, so the
   * campaign row is not held while the INSERT runs: ON CONFLICT waits for a code row that a
   * reserve, assign or release is changing, and that transaction takes the campaign row last. Held
   * here, the two deadlocked (a re-sent file while codes were reserved: 500s). Two imports no
   * longer queue on that row either, so each inserts in code order: two files holding the same
   * codes in other orders would otherwise wait on each other's rows. The seqs keep the file's
   * order (the pool hands codes out by seq); those of duplicates stay unused.
   *
   * A small generation holds the campaign row from its claim to its commit, and its INSERT waits
   * on a code this statement has just inserted, while this statement waits for that row: a
   * deadlock whose victim is this statement (it waited first), a 500 for the import. The statement
   * is atomic on its own, so it is run again; by then the generation has committed, and its codes
   * count here as duplicates.
   */
  private async insertBatch(campaign: Campaign, codes: string[]): Promise<number> {
    const { rows } = await this.pool.query<{ start: number }>(
      'UPDATE codes_campaigns SET next_seq = next_seq + $2 WHERE no = $1 RETURNING next_seq - $2 AS start',
      [campaign.no, codes.length],
    );
    return retryOnDeadlock(() => this.insertRows(campaign, codes, rows[0]!.start));
  }

  private async insertRows(campaign: Campaign, codes: string[], start: number): Promise<number> {
    // One statement: the counters are updated after every row is in (the CTE reads them all).
    const r = await this.pool.query<{ n: number }>(
      `WITH ins AS (
         INSERT INTO codes (campaign_no, code, seq)
         SELECT $1, x.code, $3 + x.ord - 1 FROM unnest($2::text[]) WITH ORDINALITY AS x(code, ord)
         ORDER BY x.code COLLATE "C"
         ON CONFLICT (campaign_no, code) DO NOTHING RETURNING 1
       ), n AS (SELECT count(*)::int AS n FROM ins), counters AS (
         UPDATE codes_campaigns SET available = available + n.n, imported = imported + n.n
         FROM n WHERE no = $1
       )
       SELECT n FROM n`,
      [campaign.no, codes, start],
    );
    return r.rows[0]!.n;
  }

  /**
   * Codes from any source; duplicates (in the file or already held) are counted, not errors, and so
   * is anything that is not a code: a JSON null or number (though NULL could be a code), a blank
   * item, a string holding a NUL. CSV rows with a blank first column never get here (no code).
   */
  async importCodes(
    campaign: Campaign,
    source: AsyncIterable<unknown>,
    stop?: AbortSignal,
  ): Promise<ImportResult> {
    refuseBatchCampaign(campaign, 'import codes');
    const result: ImportResult = { inserted: 0, duplicate: 0, invalid: 0, invalidSamples: [] };
    let batch: string[] = [];
    const flush = async () => {
      if (!batch.length) return;
      const n = await this.insertBatch(campaign, batch);
      result.inserted += n;
      result.duplicate += batch.length - n;
      batch = [];
    };
    try {
      for await (const raw of source) {
        const code = typeof raw === 'string' ? normalizeCode(campaign.format, raw) : null;
        if (code) batch.push(code);
        else {
          result.invalid++;
          if (result.invalidSamples.length < 10) result.invalidSamples.push(sampleOf(raw));
        }
        if (batch.length >= BATCH) await flush();
        if (stop?.aborted) break;
      }
      await flush();
      // Told to stop (checked at each row, and while the next is awaited): what was read is
      // committed above, and the 503 says so.
      if (stop?.aborted) throw new ImportStopped(result);
    } catch (err) {
      // An upload that stops making sense part-way (malformed CSV): every row read before the error
      // is committed (csvFirstColumn yields them all before it throws), so the outcome does not
      // depend on how the upload was chunked, and the 400 says what they held. Sending the fixed
      // file again is safe: the codes already held count as duplicates.
      if (err instanceof ImportStopped || !(err instanceof HttpError && err.statusCode === 400)) throw err;
      // Refused before any row (JSON sent as CSV, a first line that cannot be read): nothing to count.
      if (result.invalid === 0 && batch.length === 0 && result.inserted + result.duplicate === 0) throw err;
      await flush();
      throw badRequest(
        `${err.message}. Imported before the error (every row above it): ${result.inserted} inserted, ${result.duplicate} duplicate, ${result.invalid} invalid. Fix the file and send it again: codes already held count as duplicates`,
      );
    } finally {
      if (result.inserted) this.metrics.generated.inc({ campaign: campaign.id }, result.inserted);
    }
    return result;
  }

  /**
   * The first column of each CSV row. A first row whose first field is `code` is the header (an
   * export's): skipped even where CODE would be a valid code, or every re-import would add it. Rows
   * whose first field is blank hold no code and are skipped. A parse error is thrown after every
   * row read before it has been yielded.
   */
  static async *csvFirstColumn(body: Readable, stop?: AbortSignal): AsyncIterable<string> {
    const parser = new FirstColumns(CSV_OPTIONS);
    // Errors are taken from feed(); this listener only keeps the 'error' event from being uncaught.
    parser.on('error', () => {});
    let first = true;
    const rows = function* (fields: string[]) {
      for (const field of fields) {
        const header = first && field.toLowerCase() === 'code';
        first = false;
        if (!header && field !== '') yield field;
      }
    };
    try {
      // Not destroyed on an early return: destroying an HTTP request before its end destroys its
      // socket too, and the 400 saying what was wrong would never reach the client.
      // The body's first bytes, kept while they are only a BOM and blanks: is it JSON sent as text?
      let head: Buffer | undefined = Buffer.alloc(0);
      let atLineEnd = true;
      for await (const chunk of untilAborted(body.iterator({ destroyOnReturn: false }), stop)) {
        if (head) head = refuseJson(Buffer.concat([head, Buffer.from(chunk)]));
        atLineEnd = endsLine(chunk);
        const err = await feed(parser, chunk);
        yield* rows(parser.takeFields());
        if (err) throw csvError(err, parser);
      }
      if (stop?.aborted) {
        // Stopped mid-upload. csv-parse holds the last whole row until it sees what follows, so
        // it is ended when the upload stopped at a line break; the part of a row after the last
        // one is not a code, and is dropped, as is any error the early end raises.
        if (atLineEnd) {
          await feed(parser);
          yield* rows(parser.takeFields());
        }
        return;
      }
      const err = await feed(parser);
      yield* rows(parser.takeFields());
      if (err) throw csvError(err, parser);
    } finally {
      // Nor left paused: unread, the socket never saw the client close it, so a server stopping
      // after an import it cut short waited on that connection until SHUTDOWN_TIMEOUT_MS. The rest
      // of the body is read and dropped, as Node does with a body no handler read.
      if (!body.readableEnded) body.resume();
    }
  }

  static async *list(items: unknown[]): AsyncIterable<unknown> {
    yield* items;
  }

  /**
   * The codes of a parsed JSON import: a list, or `{"codes": [...]}`. Anything else, no body
   * included, is a 400 naming the forms an import takes. The HTTP route and the CLI both read JSON
   * through here, so they take the same shapes and say the same.
   */
  static jsonCodes(body: unknown, name?: string): AsyncIterable<unknown> {
    if (Array.isArray(body)) return Transfer.list(body);
    if (body && typeof body === 'object' && Array.isArray((body as { codes?: unknown }).codes))
      return Transfer.list((body as { codes: unknown[] }).codes);
    if (name)
      throw badRequest(
        `${name} is not a list of codes: write ["CODE1","CODE2"] or {"codes": ["CODE1","CODE2"]}, or give a CSV file (one code per line)`,
      );
    throw badRequest(
      'send the codes as text/csv (first column), or as JSON: a list such as ["CODE1","CODE2"] or {"codes": ["CODE1","CODE2"]}',
    );
  }

  /**
   * The codes of a JSON import's text, read as the HTTP route reads an application/json body: the
   * platform's parser (its 400s for text that is not JSON or holds a lone surrogate), no text as no
   * body, then jsonCodes.
   */
  static jsonText(text: string, name?: string): AsyncIterable<unknown> {
    return Transfer.jsonCodes(text === '' ? undefined : parseJsonBody(text, name), name);
  }

  /**
   * A readable CSV of the campaign's codes; the pool client is released when the stream ends. Dates
   * are ISO 8601 UTC with milliseconds, as GET of a code shows them (utcIso also cuts microseconds
   * off): COPY would write PostgreSQL's text form in the session's time zone. userId and reserveId
   * are written inert (see inert); codes are not: their characters (A-Z a-z 0-9 - _ . ~) cannot
   * call anything, and the export must re-import as it is.
   */
  async exportCsv(campaign: Campaign): Promise<Readable> {
    const client = await this.pool.connect();
    // campaign.no is our own integer, so it can sit in the COPY text (COPY takes no parameters).
    const stream = client.query(
      copyTo(`COPY (
        SELECT code,
          CASE WHEN state IN (0, 3) OR (state = 1 AND expires_at <= now()) THEN 'available'
               WHEN state = 1 THEN 'reserved' ELSE 'assigned' END AS state,
          CASE WHEN state = 1 AND expires_at <= now() THEN NULL ELSE ${inert('reserve_id')} END AS "reserveId",
          ${inert('user_id')} AS "userId", ${iso('created_at')} AS "createdAt",
          CASE WHEN state = 1 AND expires_at <= now() THEN NULL ELSE ${iso('reserved_at')} END AS "reservedAt",
          CASE WHEN state = 1 AND expires_at <= now() THEN NULL ELSE ${iso('expires_at')} END AS "expiresAt",
          ${iso('assigned_at')} AS "assignedAt"
        FROM codes WHERE campaign_no = ${Number(campaign.no)} ORDER BY code
      ) TO STDOUT WITH (FORMAT csv, HEADER)`),
    );
    let released = false;
    const release = (err?: Error) => {
      if (released) return;
      released = true;
      client.release(err);
    };
    let ended = false;
    stream.on('end', () => {
      ended = true;
      release();
    });
    stream.on('error', (err) => release(err));
    // A client that hangs up mid-export leaves the connection inside COPY: discard it, never reuse.
    stream.on('close', () => release(ended ? undefined : new Error('export aborted')));
    return stream;
  }
}
