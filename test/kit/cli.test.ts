// The `tessera` command as users run it: real processes, exit codes and output, and what the
// command changed as the server then shows it. Also: CLI commands beside a running `npm start` in
// the embedded default share its PostgreSQL instead of stopping it.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { VERSION } from '../../src/kit/kit.ts';
import { withDatabase } from '../db-urls.ts';
import {
  freshDatabase,
  runTessera,
  spawnTessera,
  startPlatform,
  type TesseraProcess,
  testPool,
} from '../helpers.ts';

/** An empty database (not from the migrated template), dropped when the suite ends. */
async function emptyDatabase(): Promise<string> {
  const admin = process.env.TESSERA_TEST_ADMIN_URL!;
  const name = `tessera_t_empty_${process.pid}_${Date.now()}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  after(async () => {
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.end();
  });
  return withDatabase(admin, name);
}

function dataDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-cli-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const postmasterPid = (dir: string) =>
  Number.parseInt(readFileSync(path.join(dir, 'postgres', 'postmaster.pid'), 'utf8'), 10);
const ownerRecord = (dir: string) =>
  JSON.parse(readFileSync(path.join(dir, 'embedded-postgres.json'), 'utf8')) as {
    ownerPid: number;
    port: number;
  };
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

async function embeddedServer(dir: string): Promise<TesseraProcess> {
  // No DATABASE_URL: the embedded default, in a DATA_DIR of its own.
  const t = await spawnTessera('all', { DATABASE_URL: '', DATA_DIR: dir });
  await t.waitHealthy(60000);
  return t;
}

describe('tessera CLI', () => {
  it('when `tessera version` runs, then it prints the package version and exits 0', async () => {
    const r = await runTessera(['version']);
    assert.equal(r.code, 0, r.out);
    assert.equal(r.stdout, `${VERSION}\n`);
  });

  it('when `tessera migrate` runs on an empty database, then it applies everything, exits 0, and a second run changes nothing', async () => {
    const db = await emptyDatabase();
    const first = await runTessera(['migrate'], { DATABASE_URL: db });
    assert.equal(first.code, 0, first.out);
    assert.equal(first.stdout, 'migrations applied\n');
    const pool = testPool(db);
    after(() => pool.end());
    const count = async () =>
      (await pool.query('SELECT count(*)::int AS n FROM tessera_migrations')).rows[0].n as number;
    const applied = await count();
    assert.ok(applied > 0, 'migrations recorded');
    const { rows } = await pool.query(`SELECT to_regclass('graphile_worker.jobs') AS jobs`);
    assert.ok(rows[0].jobs, 'the job queue schema exists');
    const again = await runTessera(['migrate'], { DATABASE_URL: db });
    assert.equal(again.code, 0, again.out);
    assert.equal(await count(), applied);
  });

  it('when `tessera keys create` runs, then it prints a key once that works with exactly its scopes; bad input exits 1 saying why', async () => {
    const db = await freshDatabase();
    const r = await runTessera(['keys', 'create', '--name', 'ci', '--scopes', 'events,codes'], {
      DATABASE_URL: db,
    });
    assert.equal(r.code, 0, r.out);
    const key = r.stdout.trim();
    assert.match(key, /^\S{20,}$/, 'stdout is the key alone, for scripts');
    assert.equal(r.stderr, 'key "ci" (events,codes, account default) created; it will not be shown again\n');

    const p = await startPlatform({ databaseUrl: db });
    const headers = { authorization: `Bearer ${key}` };
    assert.equal((await p.app.inject({ url: '/api/analytics', headers })).statusCode, 200);
    assert.equal((await p.app.inject({ url: '/api/admin/jobs', headers })).statusCode, 403);
    const { rows } = await p.kit.pool.query('SELECT key_hash FROM api_keys WHERE name = $1', ['ci']);
    assert.notEqual(rows[0].key_hash, key, 'stored hashed');

    const noName = await runTessera(['keys', 'create'], { DATABASE_URL: db });
    assert.equal(noName.code, 1);
    assert.match(noName.stderr, /required option '--name <name>' not specified/);
    const badScope = await runTessera(['keys', 'create', '--name', 'x', '--scopes', 'everything'], {
      DATABASE_URL: db,
    });
    assert.equal(badScope.code, 1);
    assert.match(badScope.stderr, /^tessera: .*everything/m);
    await p.stop(); // before the database is dropped under its workers
  });

  it('when `tessera keys list` and `keys revoke` run, then keys show without their secret and a revoked key stops working', async () => {
    const db = await freshDatabase();
    const key = (
      await runTessera(['keys', 'create', '--name', 'leaked', '--scopes', 'events'], { DATABASE_URL: db })
    ).stdout.trim();
    const list = await runTessera(['keys', 'list'], { DATABASE_URL: db });
    assert.equal(list.code, 0, list.out);
    const [header, ...lines] = list.stdout.trim().split('\n');
    assert.match(header!, /^id\tname\tprefix\tscopes/);
    const leaked = lines.map((l) => l.split('\t')).find((f) => f[1] === 'leaked')!;
    assert.deepEqual([leaked[3], leaked[4], leaked[7]], ['events', 'default', 'active']);
    assert.ok(!list.stdout.includes(key), 'the key itself is never printed');

    const p = await startPlatform({ databaseUrl: db });
    const headers = { authorization: `Bearer ${key}` };
    assert.equal((await p.app.inject({ url: '/api/analytics', headers })).statusCode, 200);
    const revoke = await runTessera(['keys', 'revoke', leaked[0]!], { DATABASE_URL: db });
    assert.equal(revoke.code, 0, revoke.out);
    assert.match(
      (await runTessera(['keys', 'list'], { DATABASE_URL: db })).stdout,
      /\tleaked\t.*\trevoked \d{4}-/,
    );
    // A fresh process has no cached verdict for it.
    const q = await startPlatform({ databaseUrl: db });
    assert.equal((await q.app.inject({ url: '/api/analytics', headers })).statusCode, 401);

    const again = await runTessera(['keys', 'revoke', leaked[0]!], { DATABASE_URL: db });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^tessera: no active key has id/m);
    const notId = await runTessera(['keys', 'revoke', 'leaked'], { DATABASE_URL: db });
    assert.equal(notId.code, 1);
    assert.match(notId.stderr, /^tessera: "leaked" is not a key id/m);
    await p.stop();
    await q.stop();
  });

  it('when `tessera start` cannot reach PostgreSQL or NATS, then it exits 1 naming the server and the setting to check, without the password', async () => {
    const noPg = await runTessera(['start', '--role', 'api'], {
      DATABASE_URL: 'postgres://tessera:s3cret@127.0.0.1:1/tessera',
    });
    assert.equal(noPg.code, 1, noPg.out);
    assert.match(
      noPg.stderr,
      /^tessera: cannot connect to PostgreSQL at 127\.0\.0\.1:1\/tessera: connect ECONNREFUSED .*is DATABASE_URL right\?$/m,
    );
    assert.doesNotMatch(noPg.out, /s3cret/);
    const noDb = await runTessera(['migrate'], {
      DATABASE_URL: withDatabase(process.env.TESSERA_TEST_ADMIN_URL!, 'tessera_no_such_database'),
    });
    assert.equal(noDb.code, 1, noDb.out);
    assert.match(
      noDb.stderr,
      /tessera_no_such_database" does not exist; is it running, and is DATABASE_URL right\?/,
    );
    const noNats = await runTessera(['start', '--role', 'api'], {
      DATABASE_URL: await freshDatabase(),
      NATS_URL: 'nats://user:s3cret@127.0.0.1:1',
    });
    assert.equal(noNats.code, 1, noNats.out);
    assert.match(
      noNats.stderr,
      /^tessera: cannot connect to NATS at nats:\/\/127\.0\.0\.1:1 \(NATS_URL\): .*unset NATS_URL/m,
    );
    assert.doesNotMatch(noNats.out, /s3cret/);
  });

  it('when `tessera users create` runs, then the user can sign in; the same e-mail again exits 1 saying so; `users unlock` lifts a sign-in refusal', async () => {
    const db = await freshDatabase();
    const args = ['users', 'create', '--email', 'Ops@Example.com', '--password', 'secret1'];
    const r = await runTessera(args, { DATABASE_URL: db });
    assert.equal(r.code, 0, r.out);
    assert.equal(r.stdout, 'user ops@example.com (user, account default) created\n');

    const p = await startPlatform({ databaseUrl: db });
    const login = await p.app.inject({
      method: 'POST',
      url: '/api/auth/login',
      payload: { email: 'ops@example.com', password: 'secret1' },
    });
    assert.equal(login.statusCode, 200, login.body);
    assert.match(String(login.headers['set-cookie']), /tessera_session=/);

    const again = await runTessera(args, { DATABASE_URL: db });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /a user with e-mail Ops@Example.com already exists/);
    const short = await runTessera(['users', 'create', '--email', 'a@b.c', '--password', '123'], {
      DATABASE_URL: db,
    });
    assert.equal(short.code, 1);
    assert.match(short.stderr, /password must be at least 6 characters/);

    // Too many wrong passwords: refused with the right one too, until `users unlock`.
    const signIn = (password: string) =>
      p.app.inject({
        method: 'POST',
        url: '/api/auth/login',
        payload: { email: 'ops@example.com', password },
      });
    for (let i = 0; i < 10; i++) assert.equal((await signIn('wrong')).statusCode, 401);
    assert.equal((await signIn('secret1')).statusCode, 429);
    const unlock = await runTessera(['users', 'unlock', '--email', 'OPS@example.com'], { DATABASE_URL: db });
    assert.equal(unlock.code, 0, unlock.out);
    assert.equal(unlock.stdout, 'ops@example.com may sign in again\n');
    assert.equal((await signIn('secret1')).statusCode, 200);
    const none = await runTessera(['users', 'unlock', '--email', 'ops@example.com'], { DATABASE_URL: db });
    assert.equal(none.stdout, 'ops@example.com had no failed sign-ins to forget\n');
    await p.stop();
  });

  it('when `tessera keys create` runs beside a server in embedded mode, then it uses that PostgreSQL and the server keeps serving with the new key', async () => {
    const dir = dataDir();
    const server = await embeddedServer(dir);
    const postmaster = postmasterPid(dir);
    assert.equal(ownerRecord(dir).ownerPid, server.proc.pid, 'the server owns its PostgreSQL');

    const r = await runTessera(['keys', 'create', '--name', 'beside', '--scopes', 'admin'], {
      DATABASE_URL: '',
      DATA_DIR: dir,
    });
    assert.equal(r.code, 0, r.out);
    const key = r.stdout.trim();

    assert.ok(alive(postmaster), 'the PostgreSQL the server started still runs');
    assert.equal(postmasterPid(dir), postmaster, 'and it is the same one');
    assert.equal(ownerRecord(dir).ownerPid, server.proc.pid, 'the server still owns it');
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
    const jobs = await fetch(`${server.url}/api/admin/jobs`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(jobs.status, 200, 'the new key works on an authenticated route');
    assert.doesNotMatch(server.output(), /left running by an earlier process/);

    assert.equal(await server.stop('SIGTERM'), 0);
    assert.ok(!alive(postmaster), 'the owner stops its PostgreSQL on exit');
    assert.ok(!existsSync(path.join(dir, 'embedded-postgres.json')), 'and clears the record');
  });

  it('when the process that started the embedded PostgreSQL stops while another Tessera uses it, then it hands the server over instead of stopping it', async () => {
    const dir = dataDir();
    const first = await embeddedServer(dir);
    const postmaster = postmasterPid(dir);
    const second = await embeddedServer(dir);
    assert.match(second.output(), /EMBEDDED_POSTGRES_SHARED/);

    assert.equal(await first.stop('SIGTERM'), 0);
    assert.match(first.output(), /EMBEDDED_POSTGRES_HANDED_OVER/);
    assert.ok(alive(postmaster), 'still running for the second process');
    assert.equal(ownerRecord(dir).ownerPid, second.proc.pid);
    assert.equal((await fetch(`${second.url}/health`)).status, 200);

    assert.equal(await second.stop('SIGTERM'), 0);
    assert.ok(!alive(postmaster), 'the last user stops it');
  });
});
