// The one place that reads process.env. Every setting is declared once below with its doc line,
// default and parser; `loadConfig` validates all of them together and the README's table is
// generated from the same list (`tessera config --markdown`).
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import proxyaddr from '@fastify/proxy-addr';

export const ROLES = ['all', 'api', 'worker', 'scheduler'] as const;
export type Role = (typeof ROLES)[number];
export const LOG_FORMATS = ['json', 'logstash', 'pretty'] as const;
export const API_FAILURE_MODES = ['none', 'db', 'random_500'] as const;
export const WORKER_FAILURE_MODES = ['none', 'crash', 'slow', 'bad_schema'] as const;
export const CRON_FAILURE_MODES = ['none', 'timeout', 'db_fail'] as const;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

type Parser<T> = (raw: string) => T;

interface Setting<T> {
  env: string;
  doc: string;
  default: T | undefined;
  parse: Parser<T>;
  /** Shown instead of the default in docs, e.g. for generated secrets. */
  defaultDoc?: string;
}

function setting<T>(env: string, doc: string, def: T | undefined, parse: Parser<T>, defaultDoc?: string) {
  return { env, doc, default: def, parse, defaultDoc } satisfies Setting<T>;
}

const text: Parser<string> = (raw) => raw;

function oneOf<const T extends readonly string[]>(allowed: T): Parser<T[number]> {
  return (raw) => {
    if (!(allowed as readonly string[]).includes(raw))
      throw new Error(`must be one of ${allowed.join(' | ')}`);
    return raw as T[number];
  };
}

function integer(min: number, max: number): Parser<number> {
  return (raw) => {
    const n = Number(raw);
    if (!/^-?\d+$/.test(raw.trim()) || n < min || n > max) {
      throw new Error(`must be an integer from ${min} to ${max}`);
    }
    return n;
  };
}

const url: Parser<string> = (raw) => {
  try {
    new URL(raw);
  } catch {
    throw new Error('must be a URL, e.g. postgres://user@host:5432/db');
  }
  return raw;
};

/**
 * Whom to believe about the client's address (`X-Forwarded-For`) and host (`X-Forwarded-Host`):
 * `true` (anyone: a client that reaches the server directly could write its own address), `false`
 * (no one), or addresses / CIDRs / proxy-addr's names `loopback`, `linklocal`,
 * `uniquelocal`. The default trusts private networks (an Ingress controller, a compose network) and
 * so reads the address they append, not one a public client wrote.
 */
export type TrustProxy = boolean | string[];
export const TRUST_PROXY_DEFAULT = ['loopback', 'linklocal', 'uniquelocal'];

const trustProxy: Parser<TrustProxy> = (raw) => {
  const value = raw.trim();
  if (value === 'true' || value === 'false') return value === 'true';
  // proxy-addr would read "2" as the address 0.0.0.2, and Fastify trusts no one for a hop count.
  if (/^\d+$/.test(value))
    throw new Error("a hop count is not supported: list the proxies' addresses or CIDRs, e.g. 10.0.0.0/8");
  const list = value.split(',').map((entry) => entry.trim());
  try {
    proxyaddr.compile(list);
  } catch (err) {
    throw new Error(
      `${(err as Error).message}: must be true, false or comma-separated addresses / CIDRs / loopback, linklocal, uniquelocal`,
    );
  }
  return list;
};

/** Also what a job's view judges a worker pool by when its row predates recorded timeouts (jobs.ts). */
export const WORKER_HEARTBEAT_TIMEOUT_DEFAULT_MS = 60_000;

const settings = {
  nodeEnv: setting(
    'NODE_ENV',
    'development | production | test. production: requires DATABASE_URL, JWT_SECRET, WEBHOOK_SECRET and a public SENDER_PUBLIC_URL, never creates dev credentials, marks cookies Secure; test: as development (the test suites set it)',
    'development',
    oneOf(['development', 'production', 'test'] as const),
  ),
  host: setting(
    'HOST',
    'address the HTTP server binds to; 0.0.0.0 so containers are reachable',
    '0.0.0.0',
    text,
  ),
  port: setting('PORT', 'HTTP port', 3000, integer(0, 65535)),
  trustProxy: setting(
    'TRUST_PROXY',
    'whose `X-Forwarded-For` / `X-Forwarded-Host` to believe for the client address (sign-in limits, logs) and host (the cookie origin check): true | false | comma-separated addresses, CIDRs or loopback, linklocal, uniquelocal',
    TRUST_PROXY_DEFAULT as TrustProxy,
    trustProxy,
  ),
  role: setting('TESSERA_ROLE', 'default role when `--role` is not given', 'all' as Role, oneOf(ROLES)),
  databaseUrl: setting(
    'DATABASE_URL',
    'PostgreSQL URL; unset = start embedded PostgreSQL in DATA_DIR',
    undefined as string | undefined,
    url,
  ),
  dataDir: setting('DATA_DIR', 'where embedded PostgreSQL and generated dev secrets live', './data', text),
  dbPoolMax: setting('DB_POOL_MAX', 'PostgreSQL connections per process', 20, integer(2, 500)),
  natsUrl: setting(
    'NATS_URL',
    'NATS server; set = RPC between roles goes over NATS, unset = in-process',
    undefined as string | undefined,
    text,
  ),
  natsSubjectPrefix: setting(
    'NATS_SUBJECT_PREFIX',
    'first token of RPC subjects (`<prefix>.rpc.<service>.<method>`) and queue groups: deployments (or test runs) sharing one NATS with different prefixes never answer each other',
    'tessera',
    (raw) => {
      if (!/^[A-Za-z0-9_-]+$/.test(raw)) throw new Error('must be letters, digits, _ or - (one NATS token)');
      return raw;
    },
  ),
  rpcTimeoutMs: setting(
    'RPC_TIMEOUT_MS',
    'how long an RPC call over NATS waits before answering 503 (calls inside one process do not time out)',
    5000,
    integer(50, 120000),
  ),
  logLevel: setting(
    'LOG_LEVEL',
    'fatal | error | warn | info | debug | trace | silent',
    'info',
    oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
  ),
  logFormat: setting(
    'LOG_FORMAT',
    'json (pino), logstash (@timestamp, @version, message), pretty (one plain line)',
    'json',
    oneOf(LOG_FORMATS),
  ),
  debug: setting('DEBUG', 'namespaces raised to debug, e.g. `tessera:codes*` or `tessera*`', '', text),
  workerConcurrency: setting('WORKER_CONCURRENCY', 'jobs run at once per worker process', 8, integer(1, 256)),
  workerHeartbeatTimeoutMs: setting(
    'WORKER_HEARTBEAT_TIMEOUT_MS',
    'a worker that has not heartbeaten for this long is presumed dead and its locked jobs go back to the queue (graphile-worker alone waits 4 h); it beats 3 times per timeout',
    WORKER_HEARTBEAT_TIMEOUT_DEFAULT_MS,
    integer(1000, 3_600_000),
  ),
  shutdownTimeoutMs: setting(
    'SHUTDOWN_TIMEOUT_MS',
    'longest graceful drain on SIGTERM before exiting anyway',
    9000,
    integer(100, 120000),
  ),
  webhookSecret: setting(
    'WEBHOOK_SECRET',
    'Standard Webhooks secret (`whsec_…` base64): verifies `POST /api/generate` and `POST /webhooks/:provider`, and signs unsubscribe links (rotating it breaks the links already sent; docs/api/sender.md)',
    undefined as string | undefined,
    text,
    'generated in DATA_DIR (dev); required in production',
  ),
  jwtSecret: setting(
    'JWT_SECRET',
    'secret for dashboard session cookies (≥ 32 chars)',
    undefined as string | undefined,
    text,
    'generated in DATA_DIR (dev); required in production',
  ),
  sessionTtlHours: setting('SESSION_TTL_HOURS', 'dashboard session lifetime', 12, integer(1, 24 * 30)),
  apiFailureMode: setting(
    'API_FAILURE_MODE',
    'failure injection on module routes: none | db (503) | random_500 (30%)',
    'none',
    oneOf(API_FAILURE_MODES),
  ),
  workerFailureMode: setting(
    'WORKER_FAILURE_MODE',
    'failure injection in jobs: none | crash | slow (5 s) | bad_schema (50%)',
    'none',
    oneOf(WORKER_FAILURE_MODES),
  ),
  cronFailureMode: setting(
    'CRON_FAILURE_MODE',
    'failure injection in cron: none | timeout (30 s) | db_fail',
    'none',
    oneOf(CRON_FAILURE_MODES),
  ),
  sentryDsn: setting(
    'SENTRY_DSN',
    'Sentry error reporting; off when unset',
    undefined as string | undefined,
    text,
  ),
  otelEndpoint: setting(
    'OTEL_EXPORTER_OTLP_ENDPOINT',
    'OpenTelemetry OTLP/HTTP traces; off when unset',
    undefined as string | undefined,
    url,
  ),
  eventsRetentionHours: setting(
    'EVENTS_RETENTION_HOURS',
    'processed events older than this are deleted by cron',
    24 * 7,
    integer(1, 24 * 3650),
  ),
  senderPublicUrl: setting(
    'SENDER_PUBLIC_URL',
    'public base URL of unsubscribe links in sent messages (what recipients can reach); production refuses localhost; in development set it too when PORT is not 3000',
    'http://localhost:3000',
    url,
  ),
  senderApiKeyRate: setting(
    'SENDER_API_KEY_RATE',
    'messages/s per API key across all its batches and workers; 0 = no limit',
    0,
    integer(0, 10_000_000),
  ),
  senderRetryBaseMs: setting(
    'SENDER_RETRY_BASE_MS',
    'first retry delay of a transient send failure; doubles per attempt (with jitter), at most 60 s',
    500,
    integer(1, 60_000),
  ),
  eventsBatchSize: setting(
    'EVENTS_BATCH_SIZE',
    'raw events the events worker aggregates per transaction (whole stored batches of up to 1,000)',
    5000,
    integer(1, 100000),
  ),
} as const;

type Settings = typeof settings;
export type Config = {
  [K in keyof Settings]: Settings[K] extends Setting<infer T> ? T : never;
} & {
  configFile?: string;
  /** Names (e.g. API_FAILURE_MODE) of the settings whose value came from configFile, not the environment. */
  fromFile?: string[];
};

/** Reads `tessera.config.json` (or TESSERA_CONFIG); keys are the env names, as in seed 003's config.json. */
function readConfigFile(env: NodeJS.ProcessEnv): { values: Record<string, unknown>; file?: string } {
  // Empty is unset, as for every setting (it resolved to the working directory, read as a file).
  const named = env.TESSERA_CONFIG?.trim() || undefined;
  if (named === 'none') return { values: {} };
  const file = path.resolve(named ?? 'tessera.config.json');
  if (!existsSync(file)) {
    if (named) throw new ConfigError([`TESSERA_CONFIG: file ${file} does not exist`]);
    return { values: {} };
  }
  if (statSync(file).isDirectory())
    throw new ConfigError([
      `${named ? 'TESSERA_CONFIG' : 'tessera.config.json'}: ${file} is a directory: name a JSON file of SETTING: value, or set TESSERA_CONFIG=none`,
    ]);
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new Error('not an object');
    return { values: parsed as Record<string, unknown>, file };
  } catch (err) {
    throw new ConfigError([`${file}: must be a JSON object of SETTING: value (${(err as Error).message})`]);
  }
}

/** Validates every setting at once so one start reports every mistake. Environment beats the file. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const { values: fileValues, file } = readConfigFile(env);
  const problems: string[] = [];
  const known = new Set(Object.values(settings).map((s) => s.env));
  for (const key of Object.keys(fileValues)) {
    if (!known.has(key)) problems.push(`${file}: unknown setting ${key}`);
  }
  const fromFileNames: string[] = [];
  const out: Record<string, unknown> = { configFile: file, fromFile: fromFileNames };
  for (const [key, s] of Object.entries(settings) as [string, Setting<unknown>][]) {
    const fromEnv = env[s.env];
    const fromFile = fileValues[s.env];
    const inEnv = fromEnv !== undefined && fromEnv !== '';
    const raw = inEnv ? fromEnv : fromFile !== undefined ? String(fromFile) : undefined;
    if (raw === undefined) {
      out[key] = s.default;
      continue;
    }
    if (!inEnv) fromFileNames.push(s.env);
    try {
      out[key] = s.parse(raw);
    } catch (err) {
      // Named where it came from: a value in the file, quoted as the environment's, sent people
      // looking for a variable that was never set.
      const where = inEnv ? '' : `${file}: `;
      problems.push(`${where}${s.env}=${JSON.stringify(inEnv ? raw : fromFile)}: ${(err as Error).message}`);
    }
  }
  const config = out as Config;
  if (problems.length === 0 && config.nodeEnv === 'production') {
    if (!config.databaseUrl)
      problems.push(
        'DATABASE_URL: required when NODE_ENV=production (embedded PostgreSQL is for development)',
      );
    if (!config.jwtSecret || config.jwtSecret.length < 32)
      problems.push('JWT_SECRET: required in production, at least 32 characters');
    if (!config.webhookSecret)
      problems.push('WEBHOOK_SECRET: required in production (whsec_ followed by base64)');
    if (isLoopbackUrl(config.senderPublicUrl))
      problems.push(
        `SENDER_PUBLIC_URL=${JSON.stringify(config.senderPublicUrl)}: production needs the public base URL recipients can reach (e.g. https://tessera.example.com); a loopback host makes every unsubscribe link dead`,
      );
  }
  // Checked here, not by the setting's parser, so the refusal never prints the secret itself; after
  // the production checks, so a placeholder Secret hears about every value to replace at once.
  if (config.webhookSecret !== undefined && !isWebhookSecret(config.webhookSecret))
    problems.push(
      'WEBHOOK_SECRET: must be whsec_ followed by base64 (Standard Webhooks), e.g. whsec_$(openssl rand -base64 32)',
    );
  if (problems.length) throw new ConfigError(problems);
  return config;
}

/**
 * The form the standardwebhooks package decodes (it throws "Base64Coder: incorrect characters" at
 * start otherwise): optional `whsec_`, then padded base64 of at least one byte.
 */
export function isWebhookSecret(secret: string): boolean {
  const b64 = secret.startsWith('whsec_') ? secret.slice(6) : secret;
  return b64.length > 0 && b64.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(b64);
}

/** localhost, *.localhost, 127.0.0.0/8, ::1 and 0.0.0.0: hosts only this machine can reach. */
export function isLoopbackUrl(raw: string): boolean {
  const host = new URL(raw).hostname.toLowerCase().replace(/^\[|\]$/g, '');
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    /^127(\.\d{1,3}){3}$/.test(host) ||
    host === '::1' ||
    host === '0.0.0.0'
  );
}
/**
 * Read before the others (it says where they come from), so it is not a Config field; declared here
 * so the table lists it.
 */
const configFileSetting: Setting<string> = setting(
  'TESSERA_CONFIG',
  'path of an optional JSON file whose keys are these variable names (the environment wins over it); `none` reads no file; a path that does not exist stops the start',
  'tessera.config.json',
  text,
  '`tessera.config.json` (read when present)',
);

/** The README's configuration table, generated so it can never drift from the code. */
export function configMarkdownTable(): string {
  const all: Setting<unknown>[] = [configFileSetting, ...Object.values(settings)];
  const rows = all.map((s: Setting<unknown>) => {
    const def =
      s.defaultDoc ?? (s.default === undefined ? '(unset)' : `\`${String(s.default) || '(empty)'}\``);
    return `| \`${s.env}\` | ${def} | ${s.doc.replace(/\|/g, '\\|')} |`;
  });
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}
