// `npm test`: one embedded PostgreSQL for the whole run (plus DATABASE_URL's server when set), a
// template database with every migration, then node's test runner over all suites. Each suite
// clones the template (CREATE DATABASE … TEMPLATE), so suites are isolated and start in ms.
//
// DATABASE_URL's server is shared (other runs, other people): every database this run makes there
// carries the run's own prefix, and only those are dropped at the end. The embedded cluster is this
// run's alone, so leftovers of an interrupted run are simply dropped there.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runMigrations as graphileMigrations } from 'graphile-worker';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/kit/embedded-postgres.ts';
import { createRootLogger } from '../src/kit/log.ts';
import { migrate } from '../src/kit/migrate.ts';
import { allModules } from '../src/modules/index.ts';
import { migrationSources } from '../src/platform.ts';
import { externalRunPrefix, TEMPLATE_DB, withDatabase } from './db-urls.ts';

const log = createRootLogger({ level: 'warn', format: 'json', debug: '', role: 'test' });

/** Drops the databases whose names start with `prefix` (this run's, or any test run's on the embedded cluster). */
async function dropDatabases(adminUrl: string, like: string, also: string[] = []): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const stale = await admin.query(
      `SELECT datname FROM pg_database WHERE datname LIKE $1 OR datname = ANY($2::text[])`,
      [like, also],
    );
    for (const row of stale.rows) {
      await admin.query(`DROP DATABASE IF EXISTS "${row.datname}" WITH (FORCE)`);
    }
  } finally {
    await admin.end();
  }
}

async function buildTemplate(adminUrl: string, template: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${template}`);
  await admin.end();
  const pool = new pg.Pool({ connectionString: withDatabase(adminUrl, template), max: 2 });
  pool.on('error', () => undefined);
  await migrate(pool, migrationSources(allModules()), log);
  await graphileMigrations({ pgPool: pool });
  await pool.end();
}

/** Node 20's test runner takes files, not globs: every *.test.ts under src/ and test/. */
function testFiles(): string[] {
  return ['src', 'test']
    .flatMap((dir) => readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => path.join(dir, f)))
    .filter((f) => f.endsWith('.test.ts'))
    .sort();
}

// A cluster of its own per run: concurrent runs (several engineers, or CI beside a dev) never share
// or stop each other's server. initdb costs about a second.
const clusterDir = mkdtempSync(path.join(tmpdir(), 'tessera-test-pg-'));
const embedded = await startEmbeddedPostgres(clusterDir, log);
const external = process.env.DATABASE_URL || undefined;
const prefix = externalRunPrefix(process.pid);
let exitCode = 1;
try {
  await dropDatabases(embedded.url, 'tessera_t_%', [TEMPLATE_DB]);
  await buildTemplate(embedded.url, TEMPLATE_DB);
  if (external) await buildTemplate(external, `${prefix}template`);
  else
    process.stdout.write(
      '# DATABASE_URL is not set: the multi-process suites run on the embedded PostgreSQL and the external-server suite skips\n',
    );
  const files = process.argv.slice(2);
  const args = [
    '--import',
    'tsx',
    '--test',
    `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`,
    '--test-timeout=300000',
    ...(files.length ? files : testFiles()),
  ];
  const child = spawn(process.execPath, args, {
    stdio: 'inherit',
    env: {
      ...process.env,
      TESSERA_TEST_ADMIN_URL: embedded.url,
      TESSERA_TEST_EXTERNAL_URL: external ?? '',
      TESSERA_TEST_EXTERNAL_PREFIX: prefix,
      DATABASE_URL: '',
    },
  });
  exitCode = await new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
} finally {
  if (external) await dropDatabases(external, `${prefix}%`).catch(() => undefined);
  await embedded.stop();
  rmSync(clusterDir, { recursive: true, force: true });
}
process.exit(exitCode);
