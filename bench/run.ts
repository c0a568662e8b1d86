// `npm run bench [-- name…]`: runs the named benchmarks (all when none), each against a fresh
// database (DATABASE_URL's server, or an embedded PostgreSQL started here).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/kit/embedded-postgres.ts';
import { createRootLogger } from '../src/kit/log.ts';
import { benchBooks } from './books.ts';
import { benchCodes } from './codes.ts';
import { benchEvents } from './events.ts';
import { benchKit } from './kit.ts';
import { benchSender } from './sender.ts';

type Bench = (databaseUrl: string) => Promise<void>;
export const BENCHES: Record<string, Bench> = {
  kit: benchKit,
  codes: benchCodes,
  books: benchBooks,
  events: benchEvents,
  sender: benchSender,
};

const log = createRootLogger({ level: 'warn', format: 'json', debug: '', role: 'bench' });

async function freshDatabase(serverUrl: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

const names = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = names.filter((n) => !BENCHES[n]);
if (unknown.length) {
  process.stderr.write(
    `unknown benchmark ${unknown.join(', ')}; choose from ${Object.keys(BENCHES).join(', ')}\n`,
  );
  process.exit(2);
}
// A cluster of its own per run, so two benches (or a bench beside npm test) never stop each other's.
const clusterDir = mkdtempSync(path.join(tmpdir(), 'tessera-bench-pg-'));
const embedded = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres(clusterDir, log);
const serverUrl = process.env.DATABASE_URL ?? embedded!.url;
try {
  process.stdout.write(
    `# Tessera benchmarks (${embedded ? 'embedded PostgreSQL' : 'DATABASE_URL'}), ${new Date().toISOString()}\n`,
  );
  for (const name of names.length ? names : Object.keys(BENCHES)) {
    await BENCHES[name]!(await freshDatabase(serverUrl, `tessera_bench_${name}`));
  }
} finally {
  await embedded?.stop();
  rmSync(clusterDir, { recursive: true, force: true });
}
