// PostgreSQL access for every module: one pg Pool per process, transactions, and the mapping of
// "the database is not there" errors to a clean 503 instead of a hang or a 500.
import pg from 'pg';
import { badRequest, HttpError } from './errors.ts';
import type { Logger } from './log.ts';
import type { KitMetrics } from './metrics.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
/** Anything that can run a query: the pool, or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'>;

/**
 * The largest value of a PostgreSQL integer column: the bound of every integer input that reaches
 * one, so a larger number is a 400 from the schema rather than a 500 from the database.
 */
export const PG_INT_MAX = 2_147_483_647;

// BIGINT/INT8 counts come back as strings by default; our counts fit in a JS number.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number.parseInt(v, 10));

/**
 * Query option for hot reads whose timestamps go straight into JSON: a column selected as
 * `ts AT TIME ZONE 'UTC'` (a timestamp without time zone) arrives as its text, and `utcIso`
 * rewrites that text as `Date#toISOString` would. On GET of one code, building the record
 * (parsing each value into a Date, formatting it back) took ~8% of the server's CPU; with the text,
 * ~3% (CPU profiles of the bench's load, 2026-12-02).
 */
export const UTC_TEXT_TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.TIMESTAMP
      ? (v: string) => v
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

const parseTimestamptz = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ, 'text');

/**
 * A UTC timestamp's text (`YYYY-MM-DD HH:MM:SS[.ffffff]`, DateStyle ISO, which pg's own date
 * parsing also needs) in ISO 8601 with milliseconds, truncated as `Date#toISOString` truncates.
 * Other forms (years past 9999, BC) go through pg's own parser, as UTC.
 */
export function utcIso(text: string): string;
export function utcIso(text: string | null): string | null;
export function utcIso(text: string | null): string | null {
  if (text === null) return null;
  const plain =
    text.length >= 19 &&
    text.length <= 26 &&
    text.charCodeAt(4) === 45 && // '-' after a 4-digit year
    text.charCodeAt(10) === 32 && // ' ' between date and time
    text.charCodeAt(text.length - 1) <= 57; // ends in a digit, not ' BC'
  if (!plain) return (parseTimestamptz(text.replace(/( BC)?$/, '+00$1')) as Date).toISOString();
  const ms = text.length > 20 ? text.slice(20, 23).padEnd(3, '0') : '000';
  return `${text.slice(0, 10)}T${text.slice(11, 19)}.${ms}Z`;
}

/** Seed 004's alert threshold: queries slower than this are counted and logged. */
export const SLOW_QUERY_MS = 1000;

export interface QueryObserver {
  observe(seconds: number, outcome: 'ok' | 'error'): void;
  slow(seconds: number, sql: string): void;
}

/**
 * Times every query of a client, promise or callback style (pool.query runs through the callback
 * form). Streams such as COPY (objects with submit()) pass through untimed.
 */
function timeQueries(client: pg.PoolClient, observer: QueryObserver): void {
  const original = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const first = args[0] as { submit?: unknown; text?: string } | string;
    if (typeof first === 'object' && typeof first?.submit === 'function') return original(...args);
    const started = process.hrtime.bigint();
    const done = (outcome: 'ok' | 'error') => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      observer.observe(seconds, outcome);
      if (seconds * 1000 > SLOW_QUERY_MS)
        observer.slow(seconds, typeof first === 'string' ? first : (first?.text ?? ''));
    };
    const callback = args.at(-1);
    if (typeof callback === 'function') {
      args[args.length - 1] = (err: unknown, res: unknown) => {
        done(err ? 'error' : 'ok');
        callback(err, res);
      };
      return original(...args);
    }
    const result = original(...args) as Promise<unknown>;
    result.then(
      () => done('ok'),
      () => done('error'),
    );
    return result;
  };
}

/** Every Tessera pool's application_name, so pg_stat_activity says which process holds a connection. */
export function tesseraApplicationName(role: string): string {
  return `tessera:${role}:${process.pid}`;
}

export function pidOfApplicationName(name: string): number | undefined {
  const pid = /^tessera:[a-z]+:(\d+)$/.exec(name)?.[1];
  return pid ? Number(pid) : undefined;
}

/**
 * One query before anything else uses the pool, so a process that cannot reach its database says
 * which one and what to check, instead of a bare `connect ECONNREFUSED` from the first
 * migration. The URL is shown without its password.
 */
export async function assertReachable(pool: pg.Pool, url: string, hint: string): Promise<void> {
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    const u = new URL(url);
    const where = `${u.hostname}:${u.port || 5432}${u.pathname}`;
    throw new Error(`cannot connect to PostgreSQL at ${where}: ${(err as Error).message}; ${hint}`);
  }
}

export function createPool(
  connectionString: string,
  max: number,
  log: Logger,
  /** Shown in pg_stat_activity (`tessera:<role>:<pid>`): who holds a connection, at a glance. */
  applicationName: string,
  observer?: QueryObserver,
): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    application_name: applicationName,
    // Bounded so a hung server never hangs a request (a stopped one refuses at once anyway, and
    // /health has its own 1.5 s deadline); 2 s gave false timeouts on a saturated 2-core machine.
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30000,
    keepAlive: true,
  });
  // Without this listener an idle client losing its server would crash the process.
  pool.on('error', (err) => log.warn({ err }, 'DB_CONNECTION_FAILED'));
  // A checked-out client can also lose its server; its query rejects, but the emitter must not throw.
  pool.on('connect', (client) => {
    client.on('error', (err) => log.debug({ err }, 'DB_CLIENT_ERROR'));
    if (observer) timeQueries(client, observer);
  });
  return pool;
}

export async function withTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

const DEADLOCK_DETECTED = '40P01';
const DEADLOCK_ATTEMPTS = 3;

/**
 * Runs `fn` again when PostgreSQL broke a deadlock by failing it, up to 3 times in all. Only for
 * work that is atomic (one statement, or one transaction) and so wrote nothing when it failed.
 */
export async function retryOnDeadlock<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if ((err as { code?: string }).code !== DEADLOCK_DETECTED || attempt >= DEADLOCK_ATTEMPTS) throw err;
    }
  }
}

const CONNECTION_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EPIPE',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '08000',
  '08003',
  '08006',
]);

/** Thrown by DatabaseStatus.check() while PostgreSQL is known to be unreachable. */
export class DatabaseDownError extends Error {
  constructor(since: number) {
    super(
      `PostgreSQL is known to be unreachable (since ${new Date(since).toISOString()}); a probe retries every ${DatabaseStatus.PROBE_MS} ms`,
    );
  }
}

/**
 * Whether PostgreSQL is known to be down, so request paths that opt in (events ingestion) answer
 * 503 at once instead of each waiting for a connect: a stopped server refuses in a millisecond, but
 * an unreachable or frozen one makes every request wait the pool's 5 s connect timeout while the
 * pool's queue grows. A request that fails with a connection error marks it down (the HTTP error
 * handler reports it); a probe on its own short-timeout client then tries every PROBE_MS and clears
 * the mark when PostgreSQL answers, so recovery needs no restart and no request. A false mark (a
 * pool wait timing out under overload reads the same as a connect timeout) lasts one probe: the
 * first probe runs at once.
 */
export class DatabaseStatus {
  static readonly PROBE_MS = 500;
  private downSince: number | null = null;
  private timer?: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly connectionString: string,
    private readonly log: Logger,
  ) {}

  get down(): boolean {
    return this.downSince !== null;
  }

  /** Throws DatabaseDownError (a connection error: 503 and DB_CONNECTION_FAILED) while down. */
  check(): void {
    if (this.downSince !== null) throw new DatabaseDownError(this.downSince);
  }

  reportFailure(err: unknown): void {
    if (this.closed || this.downSince !== null || err instanceof DatabaseDownError) return;
    this.downSince = Date.now();
    this.log.warn({ err: { message: (err as Error).message } }, 'DB_MARKED_DOWN');
    this.probeIn(0);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private probeIn(ms: number): void {
    this.timer = setTimeout(() => void this.probe(), ms);
    this.timer.unref();
  }

  private async probe(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.connectionString,
      connectionTimeoutMillis: 2000,
      query_timeout: 2000,
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      if (this.closed || this.downSince === null) return;
      this.log.info({ downMs: Date.now() - this.downSince }, 'DB_CONNECTION_RESTORED');
      this.downSince = null;
    } catch {
      if (!this.closed) this.probeIn(DatabaseStatus.PROBE_MS);
    } finally {
      client.end().catch(() => undefined);
    }
  }
}
/** What a caller is told when PostgreSQL is unreachable, over HTTP or RPC: a 503 to retry. */
export const DB_UNAVAILABLE_MESSAGE = 'database unavailable; retry shortly';

/**
 * A request that met an unreachable PostgreSQL, counted and logged alike over HTTP and RPC (seed
 * 004's DB_CONNECTION_FAILED): the error's message and code only, with the caller's fields.
 */
export function recordConnectionFailure(
  log: Logger,
  metrics: Pick<KitMetrics, 'dbErrors'>,
  err: Error & { code?: string },
  fields: Record<string, unknown>,
): void {
  metrics.dbErrors.inc({ kind: 'connection' });
  log.error({ ...fields, err: { message: err.message, code: err.code } }, 'DB_CONNECTION_FAILED');
}

/**
 * SQLSTATEs for request values PostgreSQL cannot store, each with what the caller should fix. They
 * only ever come from a request: 22021 is a NUL character (\u0000) in a text value and 22P05 one in
 * JSON; 22008 a date-time out of PostgreSQL's range or not on the calendar (year 0000 passes the
 * date-time schema format, and was a 500 on `GET /api/batches?before=`), 22007 one it cannot read.
 */
export const NUL_IN_TEXT =
  'the request holds a NUL character (\\u0000), which PostgreSQL cannot store in text: remove it';
const UNSTORABLE_INPUT: Record<string, string> = {
  '22021': NUL_IN_TEXT,
  '22P05': NUL_IN_TEXT,
  '22008':
    'a date-time in the request is not one PostgreSQL can store (a real calendar date from year 1 to 294276): fix it',
  '22007': 'a date-time in the request could not be read: send ISO 8601, such as 2026-12-03T09:00:00Z',
};

/**
 * The caller's 400 when a query failed on a value from the request that PostgreSQL cannot store,
 * else undefined. One answer for the HTTP error handler and the RPC worker side alike.
 */
export function unstorableInputError(err: unknown): HttpError | undefined {
  const message = err instanceof Error ? UNSTORABLE_INPUT[(err as { code?: string }).code ?? ''] : undefined;
  return message === undefined ? undefined : badRequest(message);
}

/** The answer the caller gets for `err`: itself when an HttpError, the 400 above, or undefined (ours). */
export function callerError(err: unknown): HttpError | undefined {
  return err instanceof HttpError ? err : unstorableInputError(err);
}

/** True when the error means PostgreSQL is unreachable (as opposed to a bad query). */
export function isConnectionError(err: unknown): boolean {
  if (err instanceof DatabaseDownError) return true;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code;
  if (code && CONNECTION_ERROR_CODES.has(code)) return true;
  return /Connection terminated|timeout exceeded when trying to connect|connect ECONNREFUSED|Client has encountered a connection error/i.test(
    err.message,
  );
}

const COPY_SPECIAL = /[\\\t\n\r]/;

/** A value in COPY's text format: backslash, tab, newline and carriage return escaped. */
export function copyText(v: string): string {
  // Most values hold none of the four: a test allocates nothing, a replace always copies.
  if (!COPY_SPECIAL.test(v)) return v;
  return v.replace(/[\\\t\n\r]/g, (c) =>
    c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r',
  );
}
