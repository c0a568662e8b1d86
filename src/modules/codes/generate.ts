// Generation: a counter range claimed in one short UPDATE (with the density limit in its WHERE), the
// range run through the campaign's permutation, and the codes written. Small counts are one INSERT;
// large ones are sorted by code in runs of up to ten million (80 MB of 8-byte keys) and streamed
// through COPY in 16k-code chunks by two connections at once, each writing one slice of the sorted
// run in its own transaction. Sorted input makes the primary key grow in order instead of at random
// leaves: 10M codes went from 105 to 58 s of PostgreSQL CPU (see generateLarge). The codes are
// written as unused (state 3), which keeps them out of the codes_available index: one index entry
// per code instead of two, 51 → 34 s of PostgreSQL CPU for 10M codes (migration 007).
// Generated codes never collide with each other; they can collide only with imported codes, so a
// campaign that has imports goes through a staging table and ON CONFLICT, and tops up the shortfall.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type { Pool, Queryable } from '../../kit/db.ts';
import { retryOnDeadlock, withTransaction } from '../../kit/db.ts';
import { HttpError, unprocessable } from '../../kit/errors.ts';
import type { Campaign } from './campaigns.ts';
import { capacityOf, densityLimit, MAX_DENSITY } from './format.ts';
import type { CodesMetrics } from './metrics.ts';
import { byteOrder, MergedKeys, sortedKeySlices } from './sorted-keys.ts';

/** Counts up to this are generated in the request; larger ones run as a tracked job. */
export const SYNC_MAX = 10_000;
export const GENERATE_MAX = 50_000_000;
const CHUNK = 16_384;
/** Codes sorted together in one run: 8 bytes each, so 80 MB of keys at most. */
const RUN_MAX = 10_000_000;
/** Each run is written by this many connections at once, one slice of the sorted codes each. */
const PARTS = 2;
const LOWER_SHARE = 0.38;
/**
 * Small generations take their counter ranges from a block of this many indices claimed ahead, so
 * most calls skip the claim (an UPDATE and a commit of its own, a third of the signed webhook's
 * commits). Only in campaigns whose density limit is at least BLOCK_MIN_LIMIT: the indices a
 * process has not used when it stops are never generated, and there they cost at most 0.1% of the
 * limit per restart; a smaller campaign claims exactly what it generates.
 */
const BLOCK = 1_000;
const BLOCK_MIN_LIMIT = 1_000_000n;

export const STATE_ASSIGNED = 2;
/**
 * Generated and never handed out: found through the primary key in code order (migration 007),
 * so a generation writes one index entry per code instead of two. Reported as available, as are
 * codes in state 0 (imported, or back from a released or expired reservation: the codes_available
 * index holds those, by seq).
 */
export const STATE_UNUSED = 3;

/** A buffer of COPY rows, how many rows it holds and the smallest code among them. */
interface CopyChunk {
  buf: Buffer;
  rows: number;
  min: string;
}

interface Range {
  startIndex: number;
  startSeq: number;
}

/**
 * Counters a generation of `count` may lose to imported codes, generously: each counter lands on one
 * of them with probability imported / capacity, so the expected loss plus five standard deviations.
 */
function collisionAllowance(campaign: Campaign, count: number, imported: number): number {
  if (imported === 0) return 0;
  const expected = (count * imported) / Number(capacityOf(campaign.format));
  return Math.ceil(expected + 5 * Math.sqrt(expected) + 1);
}

/** The 422 for a generation past the 1% density limit; `fits` says how many more codes would fit. */
function densityRefusal(campaign: Campaign, count: number, fits: string): HttpError {
  return unprocessable(
    `generating ${count} more code(s) would put campaign ${campaign.id} past ${MAX_DENSITY * 100}% of its ` +
      `${capacityOf(campaign.format)} possible codes, which makes codes guessable: ${fits}; ` +
      "a campaign's format cannot change, so for more codes create a campaign with a longer code or a larger alphabet",
  );
}

/**
 * The density refusal when imported codes took part of the room: the limit counts counters, and
 * some land on imported codes, so fewer codes fit than the room in counters says. `made`: what this
 * request could make before it ran out, about what fits.
 */
function roomTakenByImports(campaign: Campaign, count: number, made: number): HttpError {
  return densityRefusal(
    campaign,
    count,
    `codes imported earlier take part of that room, and about ${made} more fit`,
  );
}

const isDensityRefusal = (err: unknown) => err instanceof HttpError && err.statusCode === 422;

/** Counters left under the density limit when `held` are spent or imported. */
const roomLeft = (limit: bigint, held: number) => Math.max(0, Number(limit) - held);

/**
 * What a density refusal says fits. Imports are not held to the limit, so a campaign can be past it
 * already: "at most 0 more fit" then read as if this request alone were too big.
 */
function whatFits(limit: bigint, held: number): string {
  const room = roomLeft(limit, held);
  if (room > 0) return `at most ${room} more fit`;
  return `it already holds ${held} generated or imported codes, at or past that limit of ${limit} (an import may pass the limit; a generation may not), so no more can be generated`;
}

/** `codes` less those the campaign already holds: a plain read, which waits for no lock. */
async function withoutHeld(db: Queryable, campaign: Campaign, codes: string[]): Promise<string[]> {
  const { rows } = await db.query<{ code: string }>(
    'SELECT code FROM codes WHERE campaign_no = $1 AND code = ANY($2::text[])',
    [campaign.no, codes],
  );
  if (rows.length === 0) return codes;
  const held = new Set(rows.map((r) => r.code));
  return codes.filter((c) => !held.has(c));
}

export class Generator {
  /** Per campaign: the unused rest of the last block claimed ahead (next index and seq, and end). */
  private readonly blocks = new Map<number, { index: number; seq: number; end: number }>();

  constructor(
    private readonly pool: Pool,
    private readonly metrics: CodesMetrics,
  ) {}

  /** Claims `count` permutation indices (and seqs); 422 when the campaign would pass 1% density. */
  async claim(db: Queryable, campaign: Campaign, count: number): Promise<Range> {
    const limit = densityLimit(campaign.format);
    const { rows } = await db.query<{ start_index: number; start_seq: number }>({
      name: 'codes_claim',
      text: `UPDATE codes_campaigns SET next_index = next_index + $2, next_seq = next_seq + $2
       WHERE no = $1 AND next_index + imported + $2 <= $3::bigint
       RETURNING next_index - $2 AS start_index, next_seq - $2 AS start_seq`,
      values: [campaign.no, count, limit.toString()],
    });
    const r = rows[0];
    if (!r) {
      const { rows: held } = await db.query<{ n: number }>(
        'SELECT next_index + imported AS n FROM codes_campaigns WHERE no = $1',
        [campaign.no],
      );
      throw densityRefusal(campaign, count, whatFits(limit, held[0]?.n ?? 0));
    }
    return { startIndex: r.start_index, startSeq: r.start_seq };
  }

  /** A range of `count` for a small generation: from the campaign's block when it has room. */
  private async claimSmall(campaign: Campaign, count: number): Promise<Range> {
    const block = this.blocks.get(campaign.no);
    if (!block || block.end - block.index < count) {
      if (count >= BLOCK || densityLimit(campaign.format) < BLOCK_MIN_LIMIT)
        return this.claim(this.pool, campaign, count);
      let r: Range;
      try {
        r = await this.claim(this.pool, campaign, BLOCK);
      } catch (err) {
        // Near the density limit a block no longer fits: claim exactly what is asked.
        if (isDensityRefusal(err)) return this.claim(this.pool, campaign, count);
        throw err;
      }
      // Concurrent calls may each have claimed a block: keep the one with more left.
      const mine = { index: r.startIndex + count, seq: r.startSeq + count, end: r.startIndex + BLOCK };
      const current = this.blocks.get(campaign.no);
      if (!current || current.end - current.index < mine.end - mine.index) this.blocks.set(campaign.no, mine);
      return r;
    }
    const range = { startIndex: block.index, startSeq: block.seq };
    block.index += count;
    block.seq += count;
    return range;
  }

  /** The density check alone, so a large request is refused with 422 before a job is queued. */
  async checkRoom(campaign: Campaign, count: number): Promise<void> {
    const limit = densityLimit(campaign.format);
    const { rows } = await this.pool.query<{ n: number; imported: number }>(
      'SELECT next_index + imported AS n, imported FROM codes_campaigns WHERE no = $1',
      [campaign.no],
    );
    const room = roomLeft(limit, rows[0]?.n ?? 0);
    if (count > room) throw densityRefusal(campaign, count, whatFits(limit, rows[0]?.n ?? 0));
    // Counters that land on imported codes make no code, and the top-up that replaces them needs
    // room too: a job refused only at its end has written most of its codes by then.
    const needed = count + collisionAllowance(campaign, count, rows[0]?.imported ?? 0);
    if (needed > room) throw roomTakenByImports(campaign, count, Math.max(0, count - (needed - room)));
  }

  private withPrefix(campaign: Campaign, codes: string[]): string[] {
    const p = campaign.format.prefix;
    return p ? codes.map((c) => p + c) : codes;
  }

  /**
   * Generates `count` codes and returns them. `state` 2 hands them out at once (the POST /api/generate
   * webhook), so they can never also be reserved. `atomic`: all of them or none, in one transaction
   * (POST …/codes answers with the codes, so a 422 must mean none were made); without it each
   * round commits on its own and small counts take their counters from a block claimed ahead.
   */
  async generateSmall(
    campaign: Campaign,
    count: number,
    state = STATE_UNUSED,
    opts: { atomic?: boolean } = {},
  ): Promise<string[]> {
    const out = opts.atomic
      ? await this.writeAtomically(campaign, count, state)
      : await this.writeSmall(this.pool, campaign, count, state, (n) => this.claimSmall(campaign, n));
    this.metrics.generated.inc({ campaign: campaign.id }, count);
    return out;
  }

  /**
   * writeSmall in one transaction, which holds the campaign row from its claim on (so a 422 writes
   * nothing). An INSERT that met an imported code a reserve, assign or release was changing waited
   * for that transaction, which waits for the campaign row (it takes it last): a deadlock, and
   * PostgreSQL failed whichever had waited first, often the reserve, a 500 for its whole batch. So
   * codes already held are left out before the INSERT, by a read that waits for no one. An import
   * inserting the same code at that moment can still deadlock with it: whichever waited first is
   * failed and runs again (this transaction wrote nothing; the import's batch statement is atomic).
   */
  private writeAtomically(campaign: Campaign, count: number, state: number): Promise<string[]> {
    return retryOnDeadlock(() =>
      withTransaction(this.pool, (client) =>
        this.writeSmall(client, campaign, count, state, (n) => this.claim(client, campaign, n), true),
      ),
    );
  }

  /** Claims counters and writes their codes until `count` are new (imported codes take some). */
  private async writeSmall(
    db: Queryable,
    campaign: Campaign,
    count: number,
    state: number,
    claim: (n: number) => Promise<Range>,
    /** Leave out codes already held before inserting (see writeAtomically). */
    skipHeld = false,
  ): Promise<string[]> {
    const out: string[] = [];
    let missing = count;
    while (missing > 0) {
      const range = await claim(missing).catch((err) => {
        throw out.length > 0 && isDensityRefusal(err) ? roomTakenByImports(campaign, count, out.length) : err;
      });
      let codes = this.withPrefix(campaign, campaign.permutation.codes(range.startIndex, missing));
      if (skipHeld) codes = await withoutHeld(db, campaign, codes);
      // One statement (atomic without BEGIN/COMMIT round trips): the rows and the counters.
      const { rows } = await db.query<{ code: string }>({
        // Named: parsed and planned once per connection (the signed webhook runs it per request batch).
        name: 'codes_generate_small',
        text: `WITH ins AS (
           INSERT INTO codes (campaign_no, code, seq, state, assigned_at)
           SELECT $1, x.code, $3 + x.ord - 1, $4::smallint, CASE WHEN $4::smallint = 2 THEN now() END
           FROM unnest($2::text[]) WITH ORDINALITY AS x(code, ord)
           ON CONFLICT (campaign_no, code) DO NOTHING RETURNING code
         ), counters AS (
           UPDATE codes_campaigns
           SET available = available + CASE WHEN $4::smallint = ${STATE_UNUSED} THEN (SELECT count(*) FROM ins) ELSE 0 END,
               assigned = assigned + CASE WHEN $4::smallint = ${STATE_ASSIGNED} THEN (SELECT count(*) FROM ins) ELSE 0 END,
               unused_from = CASE WHEN $4::smallint = ${STATE_UNUSED} THEN LEAST(unused_from, $5::text COLLATE "C") ELSE unused_from END,
               unused_epoch = unused_epoch + CASE WHEN $4::smallint = ${STATE_UNUSED} THEN 1 ELSE 0 END
           WHERE no = $1
         )
         SELECT code FROM ins`,
        values: [campaign.no, codes, range.startSeq, state, smallest(codes)],
      });
      const inserted = rows.map((r) => r.code);
      if (inserted.length === codes.length) out.push(...codes);
      else {
        const ok = new Set(inserted);
        out.push(...codes.filter((c) => ok.has(c)));
      }
      missing = count - out.length;
    }
    return out;
  }

  /** COPY rows `campaign_no \t code \t seq \t 3 \n` for codes #start … #start+n-1. */
  private copyChunk(campaign: Campaign, start: number, seqStart: number, n: number): CopyChunk {
    const { alphabet, prefix, length } = campaign.format;
    const head = Buffer.from(`${campaign.no}\t${prefix}`);
    const letters = Buffer.from(alphabet, 'latin1');
    const digits = campaign.permutation.digits(start, n);
    const buf = Buffer.allocUnsafe(n * (head.length + length + 4 + 20));
    let o = 0;
    for (let k = 0; k < n; k++) {
      head.copy(buf, o);
      o += head.length;
      const base = k * length;
      for (let j = 0; j < length; j++) buf[o++] = letters[digits[base + j]!]!;
      o = writeRowTail(buf, o, seqStart + k);
    }
    const m = smallestRow(digits, n, length, letters);
    const min =
      prefix + Array.from(digits.subarray(m * length, (m + 1) * length), (d) => alphabet[d]).join('');
    return { buf: buf.subarray(0, o), rows: n, min };
  }

  /**
   * The job behind a large POST /api/campaigns/:id/codes. The counter range is claimed once and
   * recorded under `<runId>:plan`; the range is cut into runs of at most RUN_MAX codes, each run is
   * sorted by code and written as PARTS halves on parallel connections, and each half commits with
   * its `<runId>:<run>.<half>` row. A retried job therefore rewrites only unfinished parts, into
   * the same range: it never generates twice and never leaves a gap.
   */
  async generateLarge(
    campaign: Campaign,
    count: number,
    runId: string,
    progress: (done: number) => Promise<void>,
    /** Aborted when the process shuts down: the part being written rolls back, and a retry redoes it. */
    signal?: AbortSignal,
  ): Promise<{ generated: number; alreadyDone?: boolean }> {
    const done = await this.pool.query('SELECT 1 FROM codes_generations WHERE id = $1', [runId]);
    if (done.rows[0]) return { generated: count, alreadyDone: true };
    const plan = await this.plan(campaign, count, runId);
    const runs = Math.ceil(count / RUN_MAX);
    const runSize = Math.ceil(count / runs);
    const partIds: string[] = [];
    for (let r = 0; r < runs; r++) for (let h = 0; h < PARTS; h++) partIds.push(`${runId}:${r}.${h}`);
    const finished = await this.pool.query<{ id: string; count: number }>(
      'SELECT id, count FROM codes_generations WHERE id = ANY($1::text[])',
      [partIds],
    );
    const partsDone = new Map(finished.rows.map((r) => [r.id, r.count]));
    const perPart: number[] = [];
    let lastReport = 0;
    // Reports run one after another, so a late one never overwrites a newer figure.
    let reporting = Promise.resolve();
    const report = () => {
      if (Date.now() - lastReport < 500) return;
      lastReport = Date.now();
      const done = perPart.reduce((a, n) => a + n, 0);
      reporting = reporting.then(() => progress(done)).catch(() => undefined);
    };
    let inserted = 0;
    for (let r = 0; r < runs; r++) {
      signal?.throwIfAborted();
      const off = r * runSize;
      const n = Math.min(runSize, count - off);
      const todo: number[] = [];
      for (let h = 0; h < PARTS; h++) {
        const id = `${runId}:${r}.${h}`;
        const [a, b] = half(n, h);
        if (partsDone.has(id)) {
          perPart[r * PARTS + h] = b - a;
          inserted += partsDone.get(id)!;
        } else todo.push(h);
      }
      if (!todo.length) continue;
      const rows = await this.runRows(campaign, plan.startIndex + off, plan.startSeq + off, n);
      // Settled, not all: on a cancel the runner returns, and the job's result counts the committed
      // parts, only once no half is still committing.
      const written = await settledAll(
        todo.map((h) => {
          const [a, b] = half(n, h);
          return this.writePart(
            campaign,
            `${runId}:${r}.${h}`,
            rows(a, b),
            (d) => {
              perPart[r * PARTS + h] = d;
              report();
            },
            signal,
          );
        }),
      );
      inserted += written.reduce((x, y) => x + y, 0);
    }
    await reporting;
    // Collisions with imported codes: top up so the caller gets exactly `count` new codes. checkRoom
    // left room for them, so a refusal here is rare; it then says how many codes were written.
    if (inserted < count)
      await this.generateSmall(campaign, count - inserted, STATE_UNUSED, { atomic: true }).catch((err) => {
        if (!(err instanceof HttpError)) throw err;
        throw new HttpError(err.statusCode, `${inserted} of the ${count} codes were written: ${err.message}`);
      });
    await progress(count);
    await this.pool.query(
      'INSERT INTO codes_generations (id, campaign_no, count) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING',
      [runId, campaign.no, count],
    );
    return { generated: count };
  }

  /**
   * The codes a generation job committed: each part records its count under `<runId>:<run>.<half>`
   * as it commits, beside its `<runId>:plan` row. Read there rather than from the campaign's
   * total, which an import running meanwhile would move too.
   */
  async committedBy(runId: string): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>(
      `SELECT coalesce(sum(count), 0)::int AS n FROM codes_generations
       WHERE left(id, length($1) + 1) = $1 || ':' AND id <> $1 || ':plan'`,
      [runId],
    );
    return rows[0]?.n ?? 0;
  }

  /** The counter range of a run: claimed and recorded together, or read back on a retry. */
  private plan(
    campaign: Campaign,
    count: number,
    runId: string,
  ): Promise<{ startIndex: number; startSeq: number }> {
    return withTransaction(this.pool, async (client) => {
      const id = `${runId}:plan`;
      const fresh = await client.query(
        `INSERT INTO codes_generations (id, campaign_no, count) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING RETURNING id`,
        [id, campaign.no, count],
      );
      if (fresh.rows[0]) {
        const range = await this.claim(client, campaign, count);
        await client.query('UPDATE codes_generations SET start_index = $2, start_seq = $3 WHERE id = $1', [
          id,
          range.startIndex,
          range.startSeq,
        ]);
        return range;
      }
      const { rows } = await client.query<{ start_index: number; start_seq: number }>(
        'SELECT start_index, start_seq FROM codes_generations WHERE id = $1',
        [id],
      );
      return { startIndex: rows[0]!.start_index, startSeq: rows[0]!.start_seq };
    });
  }

  /**
   * The COPY rows of codes #start … #start+n-1, as a function of a slice [a, b) of them. When the
   * code space fits a double exactly (8 alphanumeric characters does, up to 10), the run is sorted
   * by code and seq numbers follow that order: the primary key then grows in order instead of at
   * random places, which is what makes a ten-million-code load fast. Reservations hand unused codes
   * out in code order; the codes themselves stay unpredictable without the key.
   */
  private async runRows(
    campaign: Campaign,
    start: number,
    seqStart: number,
    n: number,
  ): Promise<(a: number, b: number) => AsyncIterable<CopyChunk>> {
    const { alphabet, length } = campaign.format;
    const radix = alphabet.length;
    if (radix ** length > 2 ** 53) {
      const self = this;
      return async function* (a, b) {
        for (let off = a; off < b; off += CHUNK) {
          const m = Math.min(CHUNK, b - off);
          yield self.copyChunk(campaign, start + off, seqStart + off, m);
          await new Promise<void>((r) => setImmediate(r));
        }
      };
    }
    const slices = await sortedKeySlices({ key: campaign.key, alphabet, length }, start, n);
    const letters = Buffer.from(byteOrder(alphabet).join(''), 'latin1');
    const head = Buffer.from(`${campaign.no}\t${campaign.format.prefix}`);
    return async function* (a, b) {
      const merged = new MergedKeys(slices, a);
      const keys = new Float64Array(CHUNK);
      for (let off = a; off < b; off += CHUNK) {
        const m = Math.min(CHUNK, b - off);
        merged.take(keys, m);
        yield sortedChunk(keys, m, seqStart + off, head, letters, length);
        await new Promise<void>((r) => setImmediate(r));
      }
    };
  }

  /**
   * One part in one transaction: COPY, the part's row, the available count and the campaign's
   * unused_from; returns codes inserted.
   */
  private async writePart(
    campaign: Campaign,
    partId: string,
    rows: AsyncIterable<CopyChunk>,
    progress: (done: number) => void,
    signal?: AbortSignal,
  ): Promise<number> {
    return withTransaction(this.pool, async (client) => {
      // Generated codes can only collide with imported ones: without imports, straight into codes.
      const { rows: c } = await client.query<{ imported: number }>(
        'SELECT imported FROM codes_campaigns WHERE no = $1',
        [campaign.no],
      );
      const direct = (c[0]?.imported ?? 0) === 0;
      const table = direct ? 'codes' : 'codes_staging';
      if (!direct)
        await client.query(
          'CREATE TEMP TABLE codes_staging (campaign_no int, code text, seq bigint, state smallint) ON COMMIT DROP',
        );
      let done = 0;
      let min: string | undefined;
      async function* counted() {
        for await (const chunk of rows) {
          yield chunk.buf;
          done += chunk.rows;
          if (min === undefined || chunk.min < min) min = chunk.min;
          progress(done);
        }
      }
      await pipeline(
        Readable.from(counted(), { objectMode: false, highWaterMark: 4 }),
        client.query(copyFrom(`COPY ${table} (campaign_no, code, seq, state) FROM STDIN`)),
        signal ? { signal } : {},
      );
      let inserted = done;
      if (!direct) {
        const r = await client.query(
          `INSERT INTO codes (campaign_no, code, seq, state) SELECT campaign_no, code, seq, state FROM codes_staging
           ON CONFLICT (campaign_no, code) DO NOTHING`,
        );
        inserted = r.rowCount ?? 0;
      }
      await client.query('INSERT INTO codes_generations (id, campaign_no, count) VALUES ($1, $2, $3)', [
        partId,
        campaign.no,
        inserted,
      ]);
      // Last, so the campaign row is locked only for the commit (the other half commits too). The
      // part's codes are unused: unused_from goes down to the smallest (see migration 007).
      await client.query(
        `UPDATE codes_campaigns SET available = available + $2,
           unused_from = LEAST(unused_from, $3::text COLLATE "C"), unused_epoch = unused_epoch + 1
         WHERE no = $1`,
        [campaign.no, inserted, min ?? null],
      );
      this.metrics.generated.inc({ campaign: campaign.id }, inserted);
      return inserted;
    });
  }
}

const digitScratch = new Uint8Array(20);

/** Writes `\t<seq>\t3\n` of a COPY row at `o` (digits by hand: String() per row costs at 10M rows). */
function writeRowTail(buf: Buffer, o: number, seq: number): number {
  buf[o++] = 9; // \t
  let s = seq;
  let t = 0;
  do {
    const q = Math.floor(s / 10);
    digitScratch[t++] = 48 + (s - q * 10);
    s = q;
  } while (s > 0);
  while (t > 0) buf[o++] = digitScratch[--t]!;
  buf[o++] = 9; // \t
  buf[o++] = 48 + STATE_UNUSED;
  buf[o++] = 10; // \n
  return o;
}

/** The row (0 … n-1) whose code sorts first in byte order, from the rows' digits. */
function smallestRow(digits: Uint8Array, n: number, length: number, letters: Buffer): number {
  let best = 0;
  for (let k = 1; k < n; k++) {
    for (let j = 0; j < length; j++) {
      const a = letters[digits[k * length + j]!]!;
      const b = letters[digits[best * length + j]!]!;
      if (a !== b) {
        if (a < b) best = k;
        break;
      }
    }
  }
  return best;
}

/**
 * Slice h of [0, n). The lower slice goes inside the primary key (a full btree descent per row)
 * while the upper one appends at its right edge (PostgreSQL's rightmost-leaf fast path), so the
 * lower one gets the smaller share: with 0.38 both writers of 10M codes finish within a second of
 * each other (0.45 left the upper one done ~4 s before the lower, and no sooner overall).
 */
function half(n: number, h: number): [number, number] {
  const cut = Math.floor(n * LOWER_SHARE);
  return h === 0 ? [0, cut] : [cut, n];
}

/** COPY rows `campaign_no \t prefix+code \t seq \t 3 \n` of the sorted keys[0 … m-1]. */
function sortedChunk(
  keys: Float64Array,
  m: number,
  seqStart: number,
  head: Buffer,
  letters: Buffer,
  length: number,
): CopyChunk {
  const radix = letters.length;
  const buf = Buffer.allocUnsafe(m * (head.length + length + 4 + 20));
  let o = 0;
  for (let k = 0; k < m; k++) {
    head.copy(buf, o);
    o += head.length;
    let x = keys[k]!;
    for (let j = length - 1; j >= 0; j--) {
      let q = Math.floor(x / radix);
      let d = x - q * radix;
      // x / radix is rounded; the correction keeps the digit exact near 2^53.
      if (d < 0) {
        q--;
        d += radix;
      } else if (d >= radix) {
        q++;
        d -= radix;
      }
      buf[o + j] = letters[d]!;
      x = q;
    }
    o += length;
    o = writeRowTail(buf, o, seqStart + k);
  }
  // Sorted: the first row holds the smallest code (`<no>\t<prefix+code>\t…`).
  const codeStart = buf.indexOf(9) + 1;
  const min = buf.toString('utf8', codeStart, buf.indexOf(9, codeStart));
  return { buf: buf.subarray(0, o), rows: m, min };
}

/** Promise.all that rejects only once every promise has settled (with the first rejection). */
async function settledAll<T>(promises: Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** The smallest of `codes` in byte order (codes are ASCII, so JavaScript's order is byte order). */
function smallest(codes: string[]): string | null {
  let min: string | null = null;
  for (const c of codes) if (min === null || c < min) min = c;
  return min;
}
