// The composition root: builds every shared piece once, with explicit parameters, no container.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/transport-node';
import { ApiKeyVerifier, Sessions, WebhookVerifier } from './auth.ts';
import { Chaos } from './chaos.ts';
import type { Config, Role } from './config.ts';
import { assertReachable, createPool, DatabaseStatus, type Pool, tesseraApplicationName } from './db.ts';
import { devSecrets } from './dev-secrets.ts';
import { type EmbeddedDatabase, startEmbeddedPostgres } from './embedded-postgres.ts';
import { Jobs } from './jobs.ts';
import { createRootLogger, type Logger, moduleLogger } from './log.ts';
import { createMetrics, type KitMetrics } from './metrics.ts';
import { Rpc } from './rpc.ts';
import { startTelemetry, type Telemetry } from './telemetry.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
export const VERSION = pkg.version;
export const KIT_MIGRATIONS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations');

export interface Kit {
  config: Config;
  role: Role;
  version: string;
  startedAt: number;
  log: Logger;
  pool: Pool;
  /** Known-down mark for PostgreSQL: set by a request's connection error, cleared by a probe. */
  dbStatus: DatabaseStatus;
  /** Set in embedded mode: the server this process started, or (`owned: false`) another Tessera's. */
  embedded?: EmbeddedDatabase;
  metrics: KitMetrics;
  chaos: Chaos;
  jobs: Jobs;
  rpc: Rpc;
  nats?: NatsConnection;
  apiKeys: ApiKeyVerifier;
  sessions: Sessions;
  webhooks: WebhookVerifier;
  /** The Standard Webhooks secret in use (printed at a dev first start so users can sign). */
  webhookSecret: string;
  captureException?: (err: unknown) => void;
  /**
   * Aborted when the platform begins its graceful stop, before it waits for in-flight requests: a
   * request that could run for minutes (a streamed import) ends at its next safe point and says so,
   * instead of holding the drain until SHUTDOWN_TIMEOUT_MS cuts its connection with no answer.
   */
  stopping: AbortSignal;
  /** Aborts `stopping`; the platform's stop() calls it first. */
  beginStop(): void;
  /** Sentry and OpenTelemetry when configured; shut down last. */
  telemetry: Telemetry;
}

export interface KitOptions {
  config: Config;
  role: Role;
  logDestination?: NodeJS.WritableStream;
}

export async function createKit({ config, role, logDestination }: KitOptions): Promise<Kit> {
  const log = createRootLogger({
    level: config.logLevel,
    format: config.logFormat,
    debug: config.debug,
    role,
    destination: logDestination,
  });
  const kitLog = moduleLogger(log, 'kit');
  const telemetry = await startTelemetry(config, role, VERSION, kitLog);
  let embedded: EmbeddedDatabase | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    // A CLI command beside a running `npm start` connects to that server instead of taking it over.
    embedded = await startEmbeddedPostgres(config.dataDir, kitLog, { share: true });
    databaseUrl = embedded.url;
    if (embedded.owned) {
      kitLog.info(
        { port: embedded.port, dataDir: path.resolve(config.dataDir, 'postgres') },
        'EMBEDDED_POSTGRES_STARTED',
      );
    }
  }
  const metrics = createMetrics({ role });
  const pool = createPool(databaseUrl, config.dbPoolMax, kitLog, tesseraApplicationName(role), {
    observe: (seconds, outcome) => metrics.dbQueryDuration.observe({ outcome }, seconds),
    slow: (seconds, sql) => {
      metrics.dbSlowQueries.inc();
      kitLog.warn(
        { ms: Math.round(seconds * 1000), sql: sql.replace(/\s+/g, ' ').slice(0, 200) },
        'DB_SLOW_QUERY',
      );
    },
  });
  await assertReachable(
    pool,
    databaseUrl,
    embedded
      ? `the embedded PostgreSQL in ${config.dataDir} did not answer`
      : 'is it running, and is DATABASE_URL right?',
  ).catch(async (err) => {
    await pool.end();
    throw err;
  });
  const chaos = new Chaos(config, log, metrics);
  const jobs = new Jobs(pool, log, metrics, chaos, telemetry.tracer);
  // A scheduler's cron jobs call module services in-process and serve nothing on NATS: it stays
  // up (expiry, cleanup, heartbeat) through a NATS outage instead of failing to start.
  const nats =
    config.natsUrl && role !== 'scheduler'
      ? await Rpc.connectNats(config.natsUrl, `tessera-${role}-${process.pid}`).catch(async (err) => {
          await pool.end();
          throw new Error(
            `cannot connect to NATS at ${config.natsUrl.replace(/\/\/[^@/]*@/g, '//')} (NATS_URL): ${(err as Error).message}; start NATS, or unset NATS_URL to run every role in this one process`,
          );
        })
      : undefined;
  const rpc = new Rpc(
    log,
    metrics,
    config.rpcTimeoutMs,
    nats,
    role === 'api' && nats ? 'nats' : 'local',
    config.natsSubjectPrefix,
  );
  const secrets = config.jwtSecret && config.webhookSecret ? undefined : await devSecrets(config.dataDir);
  const webhookSecret = config.webhookSecret ?? secrets!.webhookSecret;
  const dbStatus = new DatabaseStatus(databaseUrl, kitLog);
  const stop = new AbortController();
  return {
    stopping: stop.signal,
    beginStop: () => stop.abort(),
    config,
    role,
    version: VERSION,
    startedAt: Date.now(),
    log,
    pool,
    dbStatus,
    embedded,
    metrics,
    chaos,
    jobs,
    rpc,
    nats,
    apiKeys: new ApiKeyVerifier(pool, dbStatus),
    sessions: new Sessions(config.jwtSecret ?? secrets!.jwtSecret, config.sessionTtlHours),
    webhooks: new WebhookVerifier(webhookSecret, pool, metrics),
    webhookSecret,
    telemetry,
    captureException: telemetry.captureException,
  };
}
