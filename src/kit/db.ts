// PostgreSQL access for every module: one pg Pool per process, transactions, and the mapping of
// "the database is not there" errors to a clean 503 instead of a hang or a 500.
import pg from 'pg';
import type { Logger } from './log.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
/** Anything that can run a query: the pool, or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'>;

// BIGINT/INT8 counts come back as strings by default; our counts fit in a JS number.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number.parseInt(v, 10));

export function createPool(connectionString: string, max: number, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    // A stopped or hung server must fail fast so requests answer 503 at once, never hang.
    connectionTimeoutMillis: 2000,
    idleTimeoutMillis: 30000,
    keepAlive: true,
  });
  // Without this listener an idle client losing its server would crash the process.
  pool.on('error', (err) => log.warn({ err }, 'DB_CONNECTION_FAILED'));
  // A checked-out client can also lose its server; its query rejects, but the emitter must not throw.
  pool.on('connect', (client) => client.on('error', (err) => log.debug({ err }, 'DB_CLIENT_ERROR')));
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

/** True when the error means PostgreSQL is unreachable (as opposed to a bad query). */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code;
  if (code && CONNECTION_ERROR_CODES.has(code)) return true;
  return /Connection terminated|timeout exceeded when trying to connect|connect ECONNREFUSED|Client has encountered a connection error/i.test(
    err.message,
  );
}
