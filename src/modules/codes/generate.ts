// Generation: a counter range claimed in one short UPDATE (with the density limit in its WHERE), the
// range run through the campaign's permutation, and the codes written. Small counts are one INSERT;
// large ones stream through COPY in chunks, so memory stays flat whatever the count: ten million
// codes are a few hundred 16k-code buffers produced while PostgreSQL ingests the previous ones.
// Generated codes never collide with each other; they can collide only with imported codes, so a
// campaign that has imports goes through a staging table and ON CONFLICT, and tops up the shortfall.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type { Pool, PoolClient, Queryable } from '../../kit/db.ts';
import { withTransaction } from '../../kit/db.ts';
import { unprocessable } from '../../kit/errors.ts';
import type { Campaign } from './campaigns.ts';
import { capacityOf, densityLimit, MAX_DENSITY } from './format.ts';
import type { CodesMetrics } from './metrics.ts';

/** Counts up to this are generated in the request; larger ones run as a tracked job. */
export const SYNC_MAX = 10_000;
export const GENERATE_MAX = 50_000_000;
const CHUNK = 16_384;

export const STATE_AVAILABLE = 0;
export const STATE_ASSIGNED = 2;

interface Range {
  startIndex: number;
  startSeq: number;
  imported: number;
}

export class Generator {
  constructor(
    private readonly pool: Pool,
    private readonly metrics: CodesMetrics,
  ) {}

  /** Claims `count` permutation indices (and seqs); 422 when the campaign would pass 1% density. */
  async claim(db: Queryable, campaign: Campaign, count: number): Promise<Range> {
    const limit = densityLimit(campaign.format);
    const { rows } = await db.query<{ start_index: number; start_seq: number; imported: number }>(
      `UPDATE codes_campaigns SET next_index = next_index + $2, next_seq = next_seq + $2
       WHERE no = $1 AND next_index + imported + $2 <= $3::bigint
       RETURNING next_index - $2 AS start_index, next_seq - $2 AS start_seq, imported`,
      [campaign.no, count, limit.toString()],
    );
    const r = rows[0];
    if (!r) {
      const { rows: held } = await db.query<{ n: number }>(
        'SELECT next_index + imported AS n FROM codes_campaigns WHERE no = $1',
        [campaign.no],
      );
      const n = held[0]?.n ?? 0;
      const room = Math.max(0, Number(limit) - n);
      throw unprocessable(
        `generating ${count} more codes would put campaign ${campaign.id} past ${MAX_DENSITY * 100}% of its ` +
          `${capacityOf(campaign.format)} possible codes, which makes codes guessable: at most ${room} more fit; ` +
          'use a longer code or a larger alphabet for more',
      );
    }
    return { startIndex: r.start_index, startSeq: r.start_seq, imported: r.imported };
  }

  /** The density check alone, so a large request is refused with 422 before a job is queued. */
  async checkRoom(campaign: Campaign, count: number): Promise<void> {
    const limit = densityLimit(campaign.format);
    const { rows } = await this.pool.query<{ n: number }>(
      'SELECT next_index + imported AS n FROM codes_campaigns WHERE no = $1',
      [campaign.no],
    );
    if (BigInt(rows[0]?.n ?? 0) + BigInt(count) > limit) await this.claim(this.pool, campaign, count);
  }

  private withPrefix(campaign: Campaign, codes: string[]): string[] {
    const p = campaign.format.prefix;
    return p ? codes.map((c) => p + c) : codes;
  }

  /**
   * Generates `count` codes in one transaction and returns them. `state` 2 hands them out at once
   * (the POST /api/generate webhook), so they can never also be reserved.
   */
  async generateSmall(campaign: Campaign, count: number, state = STATE_AVAILABLE): Promise<string[]> {
    const out: string[] = [];
    let missing = count;
    while (missing > 0) {
      const range = await this.claim(this.pool, campaign, missing);
      const codes = this.withPrefix(campaign, campaign.permutation.codes(range.startIndex, missing));
      const inserted = await withTransaction(this.pool, async (client) => {
        const { rows } = await client.query<{ code: string }>(
          `INSERT INTO codes (campaign_no, code, seq, state, assigned_at)
           SELECT $1, x.code, $3 + x.ord - 1, $4::smallint, CASE WHEN $4::smallint = 2 THEN now() END
           FROM unnest($2::text[]) WITH ORDINALITY AS x(code, ord)
           ON CONFLICT (campaign_no, code) DO NOTHING RETURNING code`,
          [campaign.no, codes, range.startSeq, state],
        );
        const n = rows.length;
        await client.query(
          `UPDATE codes_campaigns SET available = available + $2, assigned = assigned + $3 WHERE no = $1`,
          [campaign.no, state === STATE_AVAILABLE ? n : 0, state === STATE_ASSIGNED ? n : 0],
        );
        return rows.map((r) => r.code);
      });
      if (inserted.length === codes.length) out.push(...codes);
      else {
        const ok = new Set(inserted);
        out.push(...codes.filter((c) => ok.has(c)));
      }
      missing = count - out.length;
    }
    this.metrics.generated.inc({ campaign: campaign.id }, count);
    return out;
  }

  /** COPY rows `campaign_no \t code \t seq \n` for codes #start … #start+n-1, as one buffer. */
  private copyChunk(campaign: Campaign, start: number, seqStart: number, n: number): Buffer {
    const { alphabet, prefix, length } = campaign.format;
    const head = Buffer.from(`${campaign.no}\t${prefix}`);
    const letters = Buffer.from(alphabet, 'latin1');
    const digits = campaign.permutation.digits(start, n);
    const buf = Buffer.allocUnsafe(n * (head.length + length + 2 + 20));
    let o = 0;
    const tmp = new Uint8Array(20);
    for (let k = 0; k < n; k++) {
      head.copy(buf, o);
      o += head.length;
      const base = k * length;
      for (let j = 0; j < length; j++) buf[o++] = letters[digits[base + j]!]!;
      buf[o++] = 9; // \t
      let s = seqStart + k;
      let t = 0;
      do {
        const q = Math.floor(s / 10);
        tmp[t++] = 48 + (s - q * 10);
        s = q;
      } while (s > 0);
      while (t > 0) buf[o++] = tmp[--t]!;
      buf[o++] = 10; // \n
    }
    return buf.subarray(0, o);
  }

  /**
   * The job behind a large POST /api/campaigns/:id/codes. `runId` (the tracked job id) is recorded
   * in the same transaction as the codes, so a retried job never generates twice.
   */
  async generateLarge(
    campaign: Campaign,
    count: number,
    runId: string,
    progress: (done: number) => Promise<void>,
  ): Promise<{ generated: number; alreadyDone?: boolean }> {
    const done = await this.pool.query('SELECT 1 FROM codes_generations WHERE id = $1', [runId]);
    if (done.rows[0]) return { generated: count, alreadyDone: true };
    const range = await this.claim(this.pool, campaign, count);
    const client = await this.pool.connect();
    let inserted = 0;
    try {
      await client.query('BEGIN');
      const direct = range.imported === 0;
      if (!direct)
        await client.query(
          'CREATE TEMP TABLE codes_staging (campaign_no int, code text, seq bigint) ON COMMIT DROP',
        );
      await this.copy(client, campaign, range, count, direct ? 'codes' : 'codes_staging', progress);
      if (direct) inserted = count;
      else {
        const r = await client.query(
          `INSERT INTO codes (campaign_no, code, seq) SELECT campaign_no, code, seq FROM codes_staging
           ON CONFLICT (campaign_no, code) DO NOTHING`,
        );
        inserted = r.rowCount ?? 0;
      }
      await client.query('INSERT INTO codes_generations (id, campaign_no, count) VALUES ($1, $2, $3)', [
        runId,
        campaign.no,
        count,
      ]);
      await client.query('UPDATE codes_campaigns SET available = available + $2 WHERE no = $1', [
        campaign.no,
        inserted,
      ]);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
    this.metrics.generated.inc({ campaign: campaign.id }, inserted);
    // Collisions with imported codes: top up so the caller gets exactly `count` new codes.
    if (inserted < count) await this.generateSmall(campaign, count - inserted);
    return { generated: count };
  }

  private async copy(
    client: PoolClient,
    campaign: Campaign,
    range: Range,
    count: number,
    table: string,
    progress: (done: number) => Promise<void>,
  ): Promise<void> {
    const self = this;
    let lastReport = Date.now();
    async function* rows() {
      for (let off = 0; off < count; off += CHUNK) {
        const n = Math.min(CHUNK, count - off);
        yield self.copyChunk(campaign, range.startIndex + off, range.startSeq + off, n);
        if (Date.now() - lastReport > 500) {
          lastReport = Date.now();
          await progress(off + n);
        }
      }
    }
    await pipeline(
      Readable.from(rows(), { objectMode: false, highWaterMark: 4 }),
      client.query(copyFrom(`COPY ${table} (campaign_no, code, seq) FROM STDIN`)),
    );
  }
}
