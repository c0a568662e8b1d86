// The CSV export's bounds. An export is a COPY streamed to the response: it holds a connection of
// the pool every module shares (DB_POOL_MAX, 20 by default) for as long as its client takes to
// read it. Twenty downloads that stopped reading held the whole pool: every other route answered
// 503 "database unavailable" and /health said the database was disconnected, until the clients
// went away. So a process streams at most a few exports at once (more are a 429 to retry), and
// cuts one whose client has stopped reading.
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { badRequest, HttpError, unavailable } from '../../kit/errors.ts';
import type { Logger } from '../../kit/log.ts';
import type { Campaign } from './campaigns.ts';
import type { Transfer } from './transfer.ts';

/**
 * Exports streamed at once by one process, and so the most pool connections exports can hold: 4
 * leaves 16 of the default 20 to every other request, however many downloads are asked for. An
 * export reads PostgreSQL as fast as its client takes the file, so a few at once already share
 * the disk and the network; a fifth waits its turn (429, Retry-After).
 */
export const MAX_EXPORTS = 4;

/**
 * How long an export waits for its client to take more (its socket to drain) before it cuts the
 * download: a client that stops reading would otherwise hold its connection and its slot for ever.
 * The socket drains each time the client has read what Node holds for it (tens of KB), so a client
 * reading slowly but steadily (a few KB/s) is never cut, whatever the file's size.
 */
export const EXPORT_STALL_MS = 30_000;

/** The 429's Retry-After, in seconds: long enough for a running export to make way. */
export const EXPORT_RETRY_AFTER_S = 10;

export interface ExportLimits {
  /** Exports streamed at once (MAX_EXPORTS). */
  maxConcurrent?: number;
  /** How long a response may wait for its socket to drain before the export is cut (EXPORT_STALL_MS). */
  stallMs?: number;
}

/** Every export slot is taken: a 429 whose message says why and when to come back. */
export class ExportsBusy extends HttpError {
  readonly retryAfterSeconds = EXPORT_RETRY_AFTER_S;
  constructor(max: number) {
    super(
      429,
      `exports are limited to ${max} at once on this server and ${max} are running: retry in ${EXPORT_RETRY_AFTER_S} s (Retry-After)`,
    );
  }
}

interface Running {
  /** Ends the export: destroys its response (and so its socket) and its COPY, which frees the connection. */
  cut(why: 'stalled' | 'stopping'): void;
}

export class Exports {
  readonly maxConcurrent: number;
  readonly stallMs: number;
  /** Exports holding a slot: from before their connection is taken until it is released. */
  private readonly slots = new Set<Running>();

  constructor(
    private readonly transfer: Transfer,
    private readonly log: Logger,
    /** Aborted when the process begins to stop: every export still sending is cut then. */
    private readonly stopping: AbortSignal,
    limits: ExportLimits = {},
  ) {
    this.maxConcurrent = limits.maxConcurrent ?? MAX_EXPORTS;
    this.stallMs = limits.stallMs ?? EXPORT_STALL_MS;
  }

  /**
   * The campaign's CSV, to be sent as `res`'s body. It holds a slot until its connection is
   * released, whichever way it ends: its last row read, the client hanging up, an error, a client
   * that stops reading for stallMs (cut), the process stopping (cut). ExportsBusy when every slot is
   * taken.
   */
  async start(campaign: Campaign, res: ServerResponse, reqId: string): Promise<Readable> {
    if (this.slots.size >= this.maxConcurrent) throw new ExportsBusy(this.maxConcurrent);
    let stream: Readable | undefined;
    let watch: NodeJS.Timeout | undefined;
    const entry: Running = {
      cut: (why) => {
        if (why === 'stalled')
          this.log.warn(
            { campaign: campaign.id, reqId, stallMs: this.stallMs, bytes: res.socket?.bytesWritten },
            'CODES_EXPORT_STALLED',
          );
        else this.log.warn({ campaign: campaign.id, reqId }, 'CODES_EXPORT_STOPPED');
        res.destroy();
        stream?.destroy();
      },
    };
    // Taken before the first await, so concurrent requests cannot all pass the check above.
    this.slots.add(entry);
    try {
      stream = await this.transfer.exportCsv(campaign);
    } catch (err) {
      this.slots.delete(entry);
      throw err;
    }
    // exportCsv releases the connection on the stream's end, error or destruction; 'close' follows each.
    stream.once('close', () => this.slots.delete(entry));
    if (this.stopping.aborted || res.destroyed) {
      // Stopped, or hung up, while the connection was being taken: nothing will read the stream.
      stream.destroy();
      throw this.stopping.aborted
        ? unavailable(
            'the server is shutting down: export again, from this server once it is back or from another',
          )
        : badRequest('the connection closed before the export began');
    }
    // A stopping process cuts its downloads, as it cuts an import: the drain would otherwise wait
    // for the slowest client, past SHUTDOWN_TIMEOUT_MS for one that stopped reading.
    const onStop = () => entry.cut('stopping');
    this.stopping.addEventListener('abort', onStop, { once: true });
    // A client gone before the last row: whatever sends the stream, its COPY ends here.
    res.once('close', () => {
      clearInterval(watch);
      this.stopping.removeEventListener('abort', onStop);
      stream.destroy();
    });
    // The stall watch: a response waits for 'drain' once its socket holds more than it takes, and a
    // client that reads drains it again. Checked a tenth of the limit at a time: cut between
    // stallMs and 1.1 × stallMs after the client last read.
    let waitingSince: number | undefined;
    res.on('drain', () => {
      waitingSince = undefined;
    });
    watch = setInterval(
      () => {
        if (!res.writableNeedDrain) {
          waitingSince = undefined;
          return;
        }
        const now = performance.now();
        waitingSince ??= now;
        if (now - waitingSince >= this.stallMs) entry.cut('stalled');
      },
      Math.max(10, Math.round(this.stallMs / 10)),
    );
    watch.unref();
    return stream;
  }
}
