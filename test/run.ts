// `npm test`: one embedded PostgreSQL for the whole run (plus DATABASE_URL's server when set), a
// template database with every migration, then node's test runner over all suites. Each suite
// clones the template (CREATE DATABASE … TEMPLATE), so suites are isolated and start in ms.
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
import { TEMPLATE_DB, withDatabase } from './db-urls.ts';

const log = createRootLogger({ level: 'warn', format: 'json', debug: '', role: 'test' });

async function buildTemplate(adminUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  // Leftovers from an interrupted run hold the name; the template is rebuilt every run.
  const stale = await admin.query(
    `SELECT datname FROM pg_database WHERE datname LIKE 'tessera_t_%' OR datname = $1`,
    [TEMPLATE_DB],
  );
  for (const row of stale.rows) {
    await admin.query(`UPDATE pg_database SET datistemplate = false WHERE datname = $1`, [row.datname]);
    await admin.query(`DROP DATABASE IF EXISTS "${row.datname}" WITH (FORCE)`);
  }
  await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
  await admin.end();
  const pool = new pg.Pool({ connectionString: withDatabase(adminUrl, TEMPLATE_DB), max: 2 });
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
let exitCode = 1;
try {
  await buildTemplate(embedded.url);
  const external = process.env.DATABASE_URL;
  if (external) await buildTemplate(external);
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
      DATABASE_URL: '',
    },
  });
  exitCode = await new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
} finally {
  await embedded.stop();
  rmSync(clusterDir, { recursive: true, force: true });
}
process.exit(exitCode);
