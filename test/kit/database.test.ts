// Health against a PostgreSQL we can stop, freeze and restart mid-test, with no Tessera restart.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { ApiKeyVerifier } from '../../src/kit/auth.ts';
import { DatabaseDownError, DatabaseStatus } from '../../src/kit/db.ts';
import { CHECK_DEADLINE_MS } from '../../src/kit/health.ts';
import { createRootLogger } from '../../src/kit/log.ts';
import { migrate } from '../../src/kit/migrate.ts';
import { allModules } from '../../src/modules/index.ts';
import { migrationSources } from '../../src/platform.ts';
import { privatePostgres, startPlatform, testPool, waitFor } from '../helpers.ts';

const quiet = createRootLogger({ level: 'silent', format: 'json', debug: '', role: 'test' });

describe('database', () => {
  it('when migrations run on an empty database and again, then the second run applies nothing', async () => {
    const server = await privatePostgres('tessera-mig-');
    after(server.remove);
    const pool = testPool(server.url, 3);
    after(() => pool.end());
    const sources = migrationSources(allModules());
    // Two processes starting together: the advisory lock serialises them, nothing applies twice.
    const [first, concurrent] = await Promise.all([
      migrate(pool, sources, quiet),
      migrate(pool, sources, quiet),
    ]);
    assert.ok(first.length + concurrent.length > 0);
    assert.equal(new Set([...first, ...concurrent]).size, first.length + concurrent.length);
    assert.deepEqual(await migrate(pool, sources, quiet), []);
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM tessera_migrations');
    assert.equal(rows[0].n, first.length + concurrent.length);

    // Two files with one number: refused before anything runs, naming both.
    const twins = mkdtempSync(path.join(tmpdir(), 'tessera-mig-twins-'));
    after(() => rmSync(twins, { recursive: true, force: true }));
    writeFileSync(path.join(twins, '001_a.sql'), 'SELECT 1');
    writeFileSync(path.join(twins, '001_b.sql'), 'SELECT 1');
    await assert.rejects(
      migrate(pool, [{ module: 'twins', dir: twins }], quiet),
      /twins\/001_a\.sql and twins\/001_b\.sql share the number 1/,
    );
  });

  it('when PostgreSQL stops, hangs and returns, then /health says 503 naming it, answers within 2 s, and recovers', async () => {
    const server = await privatePostgres('tessera-health-');
    const admin = testPool(server.url);
    await migrate(admin, migrationSources([]), quiet);
    await admin.end();
    const p = await startPlatform({ modules: [], databaseUrl: server.url });
    after(server.remove);
    assert.equal((await p.app.inject('/health')).statusCode, 200);

    // Frozen server: connections hang. The answer must still come within 2 s.
    // Freeze the postmaster and every backend it forked, as a hung host would.
    const pid = Number.parseInt(
      readFileSync(path.join(server.dir, 'postgres', 'postmaster.pid'), 'utf8'),
      10,
    );
    const pids = [
      pid,
      ...execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
        .split('\n')
        .filter(Boolean)
        .map(Number),
    ];
    for (const frozen of pids) process.kill(frozen, 'SIGSTOP');
    try {
      const started = Date.now();
      const hung = await p.app.inject('/health');
      // The check's own deadline, not a hang; the margin is for a loaded machine's timers.
      assert.ok(Date.now() - started < CHECK_DEADLINE_MS + 3000, `answered in ${Date.now() - started} ms`);
      assert.equal(hung.statusCode, 503);
      assert.equal(hung.json().checks.database.status, 'error');
    } finally {
      for (const frozen of pids) process.kill(frozen, 'SIGCONT');
    }

    await server.stop();
    const down = await p.app.inject('/health');
    assert.equal(down.statusCode, 503);
    assert.equal(down.json().status, 'unhealthy');
    assert.equal(down.json().database, 'disconnected');
    assert.deepEqual(down.json().failing, ['database']);

    await server.start();
    await waitFor(async () => (await p.app.inject('/health')).statusCode === 200, {
      timeoutMs: 10000,
      what: 'health to recover',
    });
  });
  it('when PostgreSQL is known down and its host does not answer, then an API key not yet cached is refused at once as down', async () => {
    // A host that takes connections and never answers (a dropped route, a frozen VM): no refusal
    // comes back, so each lookup used to wait for the pool's connect timeout (5 s in Tessera).
    const sockets = new Set<Socket>();
    const hole = createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
    const url = `postgres://x@127.0.0.1:${(hole.address() as { port: number }).port}/x`;
    const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 600_000 });
    const status = new DatabaseStatus(url, quiet);
    after(async () => {
      status.close();
      for (const s of sockets) s.destroy();
      hole.close();
      await pool.end();
    });
    status.reportFailure(new Error('timeout exceeded when trying to connect'));
    const keys = new ApiKeyVerifier(pool, status);
    const verified = keys.verify('tsk_not_cached');
    // Checked before waiting: before, a connection attempt had started here and never ended.
    assert.equal(pool.totalCount, 0, 'no connection is attempted');
    await assert.rejects(verified, DatabaseDownError);
  });
});
