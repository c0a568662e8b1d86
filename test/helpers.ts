// Shared test helpers: a fresh database per suite (cloned from the migrated template), a platform
// built in-process for app.inject, log capture, API keys, and spawned Tessera processes for the
// multi-process suites. Everything registers its own cleanup.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after } from 'node:test';
import pg from 'pg';
import { createApiKey } from '../src/kit/auth.ts';
import { type Config, loadConfig, type Role } from '../src/kit/config.ts';
import { type EmbeddedDatabase, freePort, startEmbeddedPostgres } from '../src/kit/embedded-postgres.ts';
import { createRootLogger } from '../src/kit/log.ts';
import type { TesseraModule } from '../src/kit/module.ts';
import { allModules } from '../src/modules/index.ts';
import { createPlatform, type Platform } from '../src/platform.ts';
import { TEMPLATE_DB, withDatabase } from './db-urls.ts';

export const ROOT = path.resolve(import.meta.dirname, '..');
export const NATS_URL = process.env.NATS_URL || undefined;
export const EXTERNAL_DB = process.env.TESSERA_TEST_EXTERNAL_URL || undefined;
/** This run's database names on the external server (test/run.ts; see externalRunPrefix). */
const EXTERNAL_PREFIX = process.env.TESSERA_TEST_EXTERNAL_PREFIX ?? 'tessera_x_';
export const needsNats = NATS_URL
  ? false
  : 'NATS_URL is not set: this suite runs api and worker processes over real NATS';
export const needsExternalDb = EXTERNAL_DB
  ? false
  : 'DATABASE_URL is not set: this suite runs against an external PostgreSQL';

function adminUrl(external: boolean): string {
  const url = external ? EXTERNAL_DB : process.env.TESSERA_TEST_ADMIN_URL;
  if (!url)
    throw new Error('run tests through `npm test` (test/run.ts starts PostgreSQL and builds the template)');
  return url;
}

async function createDatabase(
  external: boolean,
  opts: { empty?: boolean } = {},
): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = adminUrl(external);
  const id = randomBytes(6).toString('hex');
  const name = external ? `${EXTERNAL_PREFIX}${id}` : `tessera_t_${id}`;
  const template = external ? `${EXTERNAL_PREFIX}template` : TEMPLATE_DB;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  await client.query(opts.empty ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${template}`);
  await client.end();
  const drop = async () => {
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    await c.end();
  };
  return { url: withDatabase(admin, name), drop };
}

/**
 * A new database cloned from the migrated template (or, with `empty`, with nothing in it), on the
 * embedded PostgreSQL or (`external`) on DATABASE_URL's server; dropped when the suite ends.
 */
export async function freshDatabase(opts: { external?: boolean; empty?: boolean } = {}): Promise<string> {
  const db = await createDatabase(opts.external ?? false, opts);
  after(db.drop);
  return db.url;
}

/**
 * A pool for a test's own queries. pg-pool's end() resolves before its sockets have closed, so a
 * suite's cleanup (DROP DATABASE … WITH (FORCE)), or a test stopping its private server, can still
 * terminate a connection that is closing. Its 'error' is expected then; without this listener it
 * was an uncaught exception failing whichever test ran at that moment (CI, 2026-12-03).
 */
export function testPool(connectionString: string, max = 1): pg.Pool {
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => undefined);
  return pool;
}

/** How many rows `table` holds in `p`'s database. */
export async function countRows(p: { kit: { pool: pg.Pool } }, table: string): Promise<number> {
  return (await p.kit.pool.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n;
}

/** An admin API key in `db`, for suites that drive Tessera processes over HTTP. */
export async function adminKey(db: string, name = 'test'): Promise<string> {
  const pool = testPool(db);
  try {
    return (await createApiKey(pool, name, ['admin'])).key;
  } finally {
    await pool.end();
  }
}

/**
 * The database for suites that run Tessera as separate processes (api, worker, scheduler): on the
 * external PostgreSQL when `npm test` was given DATABASE_URL, as those roles are deployed, else on
 * the embedded one (test/run.ts prints which).
 */
export function processDatabase(): Promise<string> {
  return freshDatabase({ external: Boolean(EXTERNAL_DB) });
}

export function testConfig(env: Record<string, string | undefined> = {}): Config {
  return loadConfig({
    TESSERA_CONFIG: 'none',
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: testDataDir(),
    ...env,
  });
}

/** A DATA_DIR (dev secrets) for one platform, removed when its suite ends. */
function testDataDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Collects log lines as parsed objects so tests can assert on named events. */
export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    for (const line of chunk.toString().split('\n')) if (line) this.lines.push(JSON.parse(line));
    done();
  }
  events(msg: string) {
    return this.lines.filter((l) => l.msg === msg);
  }
}

export interface TestPlatform extends Platform {
  logs: LogCapture;
  key: string;
  databaseUrl: string;
  auth: { authorization: string };
}

/** A platform on a fresh database, started (background work on), with an admin key. */
export async function startPlatform(
  opts: {
    modules?: TesseraModule[];
    role?: Role;
    env?: Record<string, string | undefined>;
    listen?: boolean;
    databaseUrl?: string;
  } = {},
): Promise<TestPlatform> {
  // Created here rather than with freshDatabase so one hook can stop the platform before the drop.
  const own = opts.databaseUrl ? undefined : await createDatabase(false);
  const databaseUrl = opts.databaseUrl ?? own!.url;
  const logs = new LogCapture();
  const config = testConfig({ DATABASE_URL: databaseUrl, ...opts.env });
  const platform = await createPlatform({
    config,
    role: opts.role ?? 'all',
    modules: opts.modules ?? allModules(),
    logDestination: logs,
  });
  await platform.start(opts.listen ? { host: '127.0.0.1', port: 0 } : undefined);
  const { key } = await createApiKey(platform.kit.pool, 'test', ['admin']);
  after(async () => {
    await platform.stop();
    await own?.drop();
  });
  return Object.assign(platform, { logs, key, databaseUrl, auth: { authorization: `Bearer ${key}` } });
}

/** Calls `p`'s API with its admin key through app.inject; answers the JSON body, and fails the test unless 2xx. */
export function apiOk(p: TestPlatform) {
  return async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object) => {
    const res = await p.app.inject({ method, url, headers: p.auth, ...(payload ? { payload } : {}) });
    assert.ok(res.statusCode < 300, res.body);
    return res.json();
  };
}

export async function waitFor<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10000);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
  throw new Error(
    `timed out waiting for ${opts.what ?? 'condition'}${last ? `: ${(last as Error).message}` : ''}`,
  );
}

/** Waits until a statement containing `sql` waits on a row or table lock (in any session). */
export function waitForLockWait(pool: pg.Pool, sql: string, what: string): Promise<unknown> {
  return waitFor(
    async () =>
      (
        await pool.query(
          `SELECT 1 FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND strpos(query, $1) > 0`,
          [sql],
        )
      ).rowCount,
    { what },
  );
}

export interface TesseraProcess {
  proc: ChildProcess;
  port: number;
  url: string;
  output: () => string;
  logLines: () => Record<string, unknown>[];
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `tessera start --role <role>` as a real child process. */
export async function spawnTessera(
  role: Role,
  env: Record<string, string | undefined>,
  opts: { fixture?: boolean } = {},
): Promise<TesseraProcess> {
  const port = await freePort();
  let out = '';
  // The fixture entry runs the same launcher with the fixture module instead of allModules().
  const args = opts.fixture
    ? ['--import', 'tsx', path.join(ROOT, 'test/fixtures/serve.ts'), role]
    : [path.join(ROOT, 'bin/tessera.js'), 'start', '--role', role];
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      TESSERA_CONFIG: 'none',
      NODE_ENV: 'test',
      // One RPC namespace per test file: suites (and other test runs) sharing NATS_URL never answer
      // each other's calls from a queue group of the same name.
      NATS_SUBJECT_PREFIX: `t${process.pid}`,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => {
    out += d;
  });
  proc.stderr!.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const handle: TesseraProcess = {
    proc,
    port,
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    logLines: () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    async waitHealthy(timeoutMs = 20000) {
      await waitFor(
        async () => {
          if (proc.exitCode !== null) throw new Error(`exited ${proc.exitCode}: ${out.slice(-2000)}`);
          return (await fetch(`${handle.url}/health`)).ok;
        },
        { timeoutMs, intervalMs: 100, what: `${role} on ${port} to be healthy` },
      );
    },
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      return exited;
    },
  };
  after(() => handle.stop('SIGKILL'));
  return handle;
}

/** fetch's json() is typed unknown; tests read fields freely. */
export async function json(res: Response): Promise<any> {
  return res.json();
}

const NATS_SERVER = ['/usr/sbin/nats-server', '/usr/local/bin/nats-server', '/usr/bin/nats-server'].find(
  existsSync,
);
export const needsNatsServer = NATS_SERVER
  ? false
  : 'no nats-server binary (apt-get install nats-server): this suite stops and starts a NATS server of its own';

export interface PrivateNats {
  url: string;
  /** Kills the server (SIGKILL: clients see the connection drop, as in a crash). */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
}

/**
 * A nats-server of this suite's own on a free port: the suite can stop it, and no other suite (or
 * another test run on the machine's NATS) can answer its RPC calls from the same queue group.
 */
export async function privateNats(): Promise<PrivateNats> {
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const handle: PrivateNats = {
    url: `nats://127.0.0.1:${port}`,
    async start() {
      const p = spawn(NATS_SERVER!, ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
      proc = p;
      await waitFor(
        () =>
          new Promise<boolean>((resolve) => {
            if (p.exitCode !== null) return resolve(false);
            const s = net.connect(port, '127.0.0.1', () => {
              s.end();
              resolve(true);
            });
            s.on('error', () => resolve(false));
          }),
        { what: `nats-server on ${port}` },
      );
    },
    async kill() {
      const p = proc;
      proc = undefined;
      if (!p || p.exitCode !== null) return;
      const exited = new Promise((r) => p.on('exit', r));
      p.kill('SIGKILL');
      await exited;
    },
  };
  await handle.start();
  after(() => handle.kill());
  return handle;
}

export interface PrivatePostgres {
  /** The cluster's directory (its data in `postgres/`). */
  dir: string;
  url: string;
  port: number;
  /** Stops the server (clients see the connections end). */
  stop(): Promise<void>;
  /** Starts it again on the same data and port. */
  start(): Promise<void>;
  /** Stops it and deletes its ~40 MB cluster. */
  remove(): Promise<void>;
}

/**
 * An embedded PostgreSQL of this test's own, which it can stop, freeze and restart without
 * touching the suites' shared server. The caller registers `after(server.remove)`: after the
 * platform that uses it when the platform should stop first, as hooks run in the order registered.
 */
export async function privatePostgres(prefix = 'tessera-pg-'): Promise<PrivatePostgres> {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  const quiet = createRootLogger({ level: 'silent', format: 'json', debug: '', role: 'test' });
  let server: EmbeddedDatabase | undefined = await startEmbeddedPostgres(dir, quiet);
  const { url, port } = server;
  const handle: PrivatePostgres = {
    dir,
    url,
    port,
    async stop() {
      const s = server;
      server = undefined;
      await s?.stop();
    },
    async start() {
      server = await startEmbeddedPostgres(dir, quiet, { port });
    },
    async remove() {
      await handle.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return handle;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr as they interleaved. */
  out: string;
}

/** `tessera <args>` as a real child process (bin/tessera.js), with no config file unless env names one. */
export function runTessera(
  args: string[],
  env: Record<string, string | undefined> = {},
  /** Written to the command's standard input, which then closes. */
  input?: string,
  /** Given the process once spawned (to signal it). */
  spawned?: (proc: ChildProcess) => void,
): Promise<CliResult> {
  const proc = spawn(process.execPath, [path.join(ROOT, 'bin/tessera.js'), ...args], {
    cwd: ROOT,
    env: { ...process.env, TESSERA_CONFIG: 'none', ...env },
  });
  spawned?.(proc);
  if (input !== undefined) proc.stdin.end(input);
  const r: CliResult = { code: null, stdout: '', stderr: '', out: '' };
  proc.stdout.on('data', (d) => {
    r.stdout += d;
    r.out += d;
  });
  proc.stderr.on('data', (d) => {
    r.stderr += d;
    r.out += d;
  });
  return new Promise((resolve) =>
    proc.on('close', (code) => {
      r.code = code;
      resolve(r);
    }),
  );
}
